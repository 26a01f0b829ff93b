#!/usr/bin/env python3
"""ONNX Runtime's DynamicQuantizeLSTM (int8 weights, com.microsoft domain),
as `onnxruntime.quantization.quantize_dynamic(weight_type=QInt8)` writes it,
for tests/frameworks.rs, under tests/golden/quantized/:

    $HOME/peers/bin/python tools/make_dq_goldens.py

Needs numpy, onnx and onnxruntime (written with onnx 1.23, onnxruntime
1.32). CI does not run this script; its outputs are committed. Cases:

* onnx_dq_tensor: a 1-layer forward LSTM quantized with one scale per
  tensor (per_channel=False, the default);
* onnx_dq_channel: a 1-layer bidirectional LSTM quantized per output
  channel (per_channel=True).

Each directory: weights.onnx (the quantized model), f32.onnx (the model
before quantization), x.npy [T, B, n], expected_y.npy (onnxruntime running
weights.onnx, PyTorch's layout [T, B, D·H]) and meta.json.
"""
import json
import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "golden", "quantized")

rng = np.random.RandomState(17)
for name, n, h, t, b, dirs, per_channel in [
    ("onnx_dq_tensor", 6, 16, 5, 3, 1, False),
    ("onnx_dq_channel", 5, 12, 4, 2, 2, True),
]:
    f32 = lambda *s: ((rng.rand(*s) - 0.5) * 1.0).astype(np.float32)
    W, R, B = f32(dirs, 4 * h, n), f32(dirs, 4 * h, h), f32(dirs, 8 * h)
    direction = "bidirectional" if dirs == 2 else "forward"
    node = helper.make_node("LSTM", ["X", "W", "R", "B"], ["Y"], hidden_size=h, direction=direction)
    g = helper.make_graph(
        [node],
        name,
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [t, b, n])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [t, dirs, b, h])],
        [numpy_helper.from_array(W, "W"), numpy_helper.from_array(R, "R"), numpy_helper.from_array(B, "B")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)], producer_name="make_dq_goldens")
    d = os.path.join(ROOT, name)
    os.makedirs(d, exist_ok=True)
    onnx.save(m, os.path.join(d, "f32.onnx"))
    quantize_dynamic(os.path.join(d, "f32.onnx"), os.path.join(d, "weights.onnx"), weight_type=QuantType.QInt8, per_channel=per_channel)
    q = onnx.load(os.path.join(d, "weights.onnx"))
    assert [nd.op_type for nd in q.graph.node] == ["DynamicQuantizeLSTM"], [nd.op_type for nd in q.graph.node]
    x = ((rng.rand(t, b, n) * 4) - 2).astype(np.float32)
    sess = ort.InferenceSession(os.path.join(d, "weights.onnx"), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {"X": x})
    y = y.transpose(0, 2, 1, 3).reshape(t, b, dirs * h)
    np.save(os.path.join(d, "x.npy"), x)
    np.save(os.path.join(d, "expected_y.npy"), y.astype(np.float32))
    with open(os.path.join(d, "meta.json"), "w") as f:
        json.dump({"format": "onnx", "per_channel": per_channel, "directions": dirs}, f, indent=1, sort_keys=True)
        f.write("\n")
print("wrote", sorted(os.listdir(ROOT)))
