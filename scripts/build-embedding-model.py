"""Builds lyss's local embedding model from all-MiniLM-L6-v2's published weights.

    python build-embedding-model.py MODEL.SAFETENSORS OUT.onnx

Run by scripts/fetch-models.sh (in a throwaway venv with pinned onnx, numpy and onnxruntime
from PyPI); the result is checked there by sha256.

Why build rather than download an ONNX export: the exports on PyPI are torch graphs of ~270
small operators whose int8 weights ONNX Runtime widens back to float at load, so every run
streams ~42 MB of float weights — on a two-core server a short question took ~7 ms to embed,
most of a recalled request's time. This graph is BERT written with ONNX Runtime's fused operators
(EmbedLayerNormalization, Attention, SkipLayerNormalization, BiasGelu), then dynamically
quantized per channel: int8 weights stay int8 and the matrix products run as integer kernels
(QAttention, MatMulInteger). Measured with one thread: a 16-token text 5.2 → 1.7 ms, a
53-token one 13.9 → 5.3 ms, vectors at cosine ≥ 0.99 of the float model's for ordinary
sentences (docs/benchmarks.md, "the embedding model").
"""

import json
import logging
import struct
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

HEADS = 12
LAYERS = 6
EPS = 1e-12


def load_safetensors(path):
    """The float32 tensors of a safetensors file, by name (without a `bert.` prefix)."""
    with open(path, "rb") as f:
        header_len = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(header_len))
        data = f.read()
    tensors = {}
    for name, meta in header.items():
        if name == "__metadata__" or meta["dtype"] != "F32":
            continue
        start, end = meta["data_offsets"]
        array = np.frombuffer(data[start:end], dtype=np.float32).reshape(meta["shape"])
        tensors[name.removeprefix("bert.")] = array
    return tensors


def build(weights):
    """BERT's forward pass (last hidden state) with ONNX Runtime's fused operators."""
    inits, nodes = [], []

    def init(name, array):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(op, inputs, outputs, **attrs):
        domain = "com.microsoft" if op in ("EmbedLayerNormalization", "Attention",
                                           "SkipLayerNormalization", "BiasGelu") else None
        nodes.append(helper.make_node(op, inputs, outputs, domain=domain, **attrs))
        return outputs[0]

    w = weights
    for x in ("input_ids", "attention_mask", "token_type_ids"):
        node("Cast", [x], [x + "_32"], to=TensorProto.INT32)
    e = "embeddings."
    hidden = node(
        "EmbedLayerNormalization",
        ["input_ids_32", "token_type_ids_32",
         init("word_embeddings", w[e + "word_embeddings.weight"]),
         init("position_embeddings", w[e + "position_embeddings.weight"]),
         init("token_type_embeddings", w[e + "token_type_embeddings.weight"]),
         init("embeddings_gamma", w[e + "LayerNorm.weight"]),
         init("embeddings_beta", w[e + "LayerNorm.bias"])],
        ["embeddings", "embeddings_mask_index"], epsilon=EPS)
    for i in range(LAYERS):
        p = f"encoder.layer.{i}."
        qkv = ("query", "key", "value")
        qkv_w = np.concatenate([w[p + f"attention.self.{k}.weight"].T for k in qkv], axis=1)
        qkv_b = np.concatenate([w[p + f"attention.self.{k}.bias"] for k in qkv])
        attended = node("Attention",
                        [hidden, init(f"l{i}_qkv_w", qkv_w), init(f"l{i}_qkv_b", qkv_b),
                         "attention_mask_32"],
                        [f"l{i}_attended"], num_heads=HEADS)
        projected = node("MatMul",
                         [attended, init(f"l{i}_out_w", w[p + "attention.output.dense.weight"].T)],
                         [f"l{i}_projected"])
        normed = node("SkipLayerNormalization",
                      [projected, hidden,
                       init(f"l{i}_ln1_gamma", w[p + "attention.output.LayerNorm.weight"]),
                       init(f"l{i}_ln1_beta", w[p + "attention.output.LayerNorm.bias"]),
                       init(f"l{i}_out_b", w[p + "attention.output.dense.bias"])],
                      [f"l{i}_normed"], epsilon=EPS)
        up = node("MatMul", [normed, init(f"l{i}_up_w", w[p + "intermediate.dense.weight"].T)],
                  [f"l{i}_up"])
        act = node("BiasGelu", [up, init(f"l{i}_up_b", w[p + "intermediate.dense.bias"])],
                   [f"l{i}_act"])
        down = node("MatMul", [act, init(f"l{i}_down_w", w[p + "output.dense.weight"].T)],
                    [f"l{i}_down"])
        out = "last_hidden_state" if i == LAYERS - 1 else f"l{i}_hidden"
        hidden = node("SkipLayerNormalization",
                      [down, normed,
                       init(f"l{i}_ln2_gamma", w[p + "output.LayerNorm.weight"]),
                       init(f"l{i}_ln2_beta", w[p + "output.LayerNorm.bias"]),
                       init(f"l{i}_down_b", w[p + "output.dense.bias"])],
                      [out], epsilon=EPS)
    inputs = [helper.make_tensor_value_info(x, TensorProto.INT64, ["batch", "sequence"])
              for x in ("input_ids", "attention_mask", "token_type_ids")]
    outputs = [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT,
                                             ["batch", "sequence", 384])]
    graph = helper.make_graph(nodes, "all-MiniLM-L6-v2", inputs, outputs, inits)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
        producer_name="lyss scripts/build-embedding-model.py")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main():
    # The quantizer advises "pre-processing" (shape inference) this graph does not need.
    logging.getLogger().setLevel(logging.ERROR)
    weights, out = sys.argv[1], sys.argv[2]
    float_model = out + ".float.onnx"
    onnx.save(build(load_safetensors(weights)), float_model)
    quantize_dynamic(float_model, out, weight_type=QuantType.QInt8, per_channel=True,
                     extra_options={"DefaultTensorType": TensorProto.FLOAT})


if __name__ == "__main__":
    main()
