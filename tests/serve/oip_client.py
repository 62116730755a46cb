#!/usr/bin/env python3
"""Speaks the Open Inference Protocol to a running `cairn serve` with Triton's own HTTP
client (`tritonclient[http]`), and checks every output against `onnxruntime` running the
same `model.onnx` on the same inputs.

Usage: oip_client.py URL MODEL_NAME MODEL_DIR

Prints one JSON line: what was checked and the largest absolute difference seen. Exits 1
with the reason on any mismatch or protocol error.
"""

import json
import os
import sys

import numpy as np
import onnxruntime as ort
import tritonclient.http as http
from tritonclient.utils import InferenceServerException

NUMPY = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32,
         "UINT8": np.uint8, "BOOL": np.bool_}
TOLERANCE = 1e-5


def fail(message):
    print(message, file=sys.stderr)
    sys.exit(1)


def sample(rng, datatype, shape):
    if datatype in ("FP32", "FP64"):
        return rng.standard_normal(shape).astype(NUMPY[datatype])
    if datatype == "BOOL":
        return rng.integers(0, 2, shape).astype(np.bool_)
    return rng.integers(0, 10, shape).astype(NUMPY[datatype])


def main():
    url, name, folder = sys.argv[1:4]
    client = http.InferenceServerClient(url=url)
    if not client.is_server_live():
        fail("the server is not live")
    if not client.is_server_ready():
        fail("the server is not ready")
    if not client.is_model_ready(name):
        fail(f"model {name} is not ready")
    metadata = client.get_model_metadata(name)
    session = ort.InferenceSession(os.path.join(folder, "model.onnx"))
    expected_inputs = {i.name for i in session.get_inputs()}
    if {i["name"] for i in metadata["inputs"]} != expected_inputs:
        fail(f"metadata inputs {metadata['inputs']} are not the model's {expected_inputs}")
    if [o["name"] for o in metadata["outputs"]] != [o.name for o in session.get_outputs()]:
        fail(f"metadata outputs {metadata['outputs']} are not the model's")

    rng = np.random.default_rng(7)
    largest = 0.0
    checked = 0
    for batch in (1, 3, 17):
        feeds = {}
        inputs = []
        for meta in metadata["inputs"]:
            shape = [batch if d == -1 else d for d in meta["shape"]]
            array = sample(rng, meta["datatype"], shape)
            feeds[meta["name"]] = array
            tensor = http.InferInput(meta["name"], shape, meta["datatype"])
            tensor.set_data_from_numpy(array, binary_data=False)
            inputs.append(tensor)
        outputs = [http.InferRequestedOutput(o["name"], binary_data=False)
                   for o in metadata["outputs"]]
        result = client.infer(name, inputs, outputs=outputs, request_id=f"batch-{batch}")
        if result.get_response().get("id") != f"batch-{batch}":
            fail(f"the response's id is {result.get_response().get('id')!r}")
        reference = session.run(None, feeds)
        for meta, want in zip(metadata["outputs"], reference):
            got = result.as_numpy(meta["name"])
            if got is None:
                fail(f"no output {meta['name']}")
            if got.shape != want.shape:
                fail(f"output {meta['name']}: shape {got.shape}, onnxruntime {want.shape}")
            if got.dtype != want.dtype:
                fail(f"output {meta['name']}: dtype {got.dtype}, onnxruntime {want.dtype}")
            diff = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))
            if diff > TOLERANCE:
                fail(f"output {meta['name']} differs from onnxruntime by {diff}")
            largest = max(largest, diff)
            checked += want.size

    # Bad requests are 400, naming the input.
    meta = metadata["inputs"][0]
    refused = {}
    wrong_shape = [1] + [d if d != -1 else 1 for d in meta["shape"][1:]] + [2]
    bad = http.InferInput(meta["name"], wrong_shape, meta["datatype"])
    bad.set_data_from_numpy(sample(rng, meta["datatype"], wrong_shape), binary_data=False)
    other = "INT32" if meta["datatype"] != "INT32" else "FP32"
    shape = [1 if d == -1 else d for d in meta["shape"]]
    typed = http.InferInput(meta["name"], shape, other)
    typed.set_data_from_numpy(sample(rng, other, shape), binary_data=False)
    for case, tensor in (("shape", bad), ("datatype", typed)):
        try:
            client.infer(name, [tensor])
            fail(f"a request with a wrong {case} was answered")
        except InferenceServerException as e:
            if e.status() != "400" or f"`{meta['name']}`" not in e.message():
                fail(f"wrong {case}: status {e.status()}, message {e.message()!r}")
            refused[case] = e.message()
    print(json.dumps({"largest_difference": largest, "elements": checked, "refused": refused}))


if __name__ == "__main__":
    main()
