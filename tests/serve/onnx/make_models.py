#!/usr/bin/env python3
"""Writes the small ONNX models the serving tests load (one folder per model, each
holding `model.onnx`), with fixed seeded weights so that the files are reproducible.

Generated with the `onnx` package's helper API (onnx.helper, numpy_helper), opset 17;
each model has a dynamic batch dimension `N`. Regenerate (from the repository root):

    python3 -m venv /tmp/onnx && /tmp/onnx/bin/pip install onnx numpy
    /tmp/onnx/bin/python tests/serve/onnx/make_models.py

- `mlp/`: a tabular MLP, `features` FP32 [N, 8] → Gemm(16) → Relu → Gemm(1) → Sigmoid →
  `probability` FP32 [N, 1].
- `cnn/`: a small CNN, `image` FP32 [N, 1, 16, 16] → Conv(4, 3×3, pad 1) → Relu →
  MaxPool(2×2) → Flatten → Gemm(3) → Softmax → `probabilities` FP32 [N, 3], and
  ArgMax → `label` INT64 [N].
- `mlp-retrained/`: the same MLP with other weights (a second version to roll out to).
  The same model is written to `manifests/radiology-edge/models/pneumonia-detector/`,
  the example's edge copy of the imaging triage endpoint.
- `mixed/`: FP64 and INT64 in and out, `x` FP64 [N, 2] and `counts` INT64 [N, 2] →
  `y` = x × 2.5 + counts (FP64 [N, 2]) and `total` = ReduceSum(counts, axis 1) (INT64 [N, 1]).
"""

import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
OPSET = [helper.make_opsetid("", 17)]
# The model folder of the example's `radiology-edge` workspace.
EDGE_MODEL = os.path.join(
    HERE, "..", "..", "..", "manifests", "radiology-edge", "models", "pneumonia-detector"
)


def save(name, graph, folder=None):
    model = helper.make_model(graph, opset_imports=OPSET, producer_name="cairn-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    folder = folder or os.path.join(HERE, name)
    os.makedirs(folder, exist_ok=True)
    onnx.save(model, os.path.join(folder, "model.onnx"))


def weights(rng, name, *shape):
    return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.5, name)


def mlp(rng, name="mlp"):
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["features", "w1", "b1"], ["h1"]),
            helper.make_node("Relu", ["h1"], ["a1"]),
            helper.make_node("Gemm", ["a1", "w2", "b2"], ["logit"]),
            helper.make_node("Sigmoid", ["logit"], ["probability"]),
        ],
        "mlp",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["N", 1])],
        [
            weights(rng, "w1", 8, 16),
            weights(rng, "b1", 16),
            weights(rng, "w2", 16, 1),
            weights(rng, "b2", 1),
        ],
    )
    save(name, graph)


def cnn(rng):
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["image", "kernel", "kbias"], ["conv"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["conv"], ["relu"]),
            helper.make_node("MaxPool", ["relu"], ["pool"], kernel_shape=[2, 2], strides=[2, 2]),
            helper.make_node("Flatten", ["pool"], ["flat"], axis=1),
            helper.make_node("Gemm", ["flat", "dense", "dbias"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
            helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0),
        ],
        "cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 16, 16])],
        [
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
        ],
        [
            weights(rng, "kernel", 4, 1, 3, 3),
            weights(rng, "kbias", 4),
            weights(rng, "dense", 4 * 8 * 8, 3),
            weights(rng, "dbias", 3),
        ],
    )
    save("cnn", graph)
    # The example's edge workspace serves the same CNN as its pneumonia detector.
    save("cnn", graph, EDGE_MODEL)


def mixed():
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["x", "scale"], ["scaled"]),
            helper.make_node("Cast", ["counts"], ["counts_f"], to=TensorProto.DOUBLE),
            helper.make_node("Add", ["scaled", "counts_f"], ["y"]),
            helper.make_node("ReduceSum", ["counts", "axes"], ["total"], keepdims=1),
        ],
        "mixed",
        [
            helper.make_tensor_value_info("x", TensorProto.DOUBLE, ["N", 2]),
            helper.make_tensor_value_info("counts", TensorProto.INT64, ["N", 2]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.DOUBLE, ["N", 2]),
            helper.make_tensor_value_info("total", TensorProto.INT64, ["N", 1]),
        ],
        [
            numpy_helper.from_array(np.array([2.5], dtype=np.float64), "scale"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axes"),
        ],
    )
    save("mixed", graph)


def main():
    rng = np.random.default_rng(20261202)
    mlp(rng)
    cnn(rng)
    mixed()
    # The same MLP "retrained": other weights (tests/serving rolls from one to the other).
    mlp(np.random.default_rng(20261203), "mlp-retrained")


if __name__ == "__main__":
    main()
