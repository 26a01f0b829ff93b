#!/usr/bin/env python3
"""Writes small, deliberately unsupported or malformed ONNX LSTM models to
tests/golden/bad_onnx/ for tests/errors.rs (`bad_onnx_models_are_errors`).
Each file differs from a valid forward LSTM (input 3, hidden 2) in one way;
the test expects an error naming that way. Needs the `onnx` package (not
needed by CI: the files are committed).

Usage: python3 tools/make_bad_onnx.py
"""
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "golden", "bad_onnx")
N, H = 3, 2


def model(name, attrs=None, inits=None, inputs=None, nodes=None, edit=None):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((1, 4 * H, N)).astype(np.float32)
    r = rng.standard_normal((1, 4 * H, H)).astype(np.float32)
    b = np.zeros((1, 8 * H), np.float32)
    init = {"W": w, "R": r, "B": b}
    init.update(inits or {})
    node_inputs = inputs or ["X", "W", "R", "B"]
    a = {"hidden_size": H}
    a.update(attrs or {})
    lstm = helper.make_node("LSTM", node_inputs, ["Y"], **a)
    graph = helper.make_graph(
        nodes or [lstm],
        name,
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, None, N])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, k) for k, v in init.items() if v is not None],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    if edit:
        edit(m)
    onnx.save(m, os.path.join(OUT, f"{name}.onnx"))


def main():
    os.makedirs(OUT, exist_ok=True)
    # W is a graph input, not a constant initializer.
    model("w_not_initializer", inits={"W": None})
    model("direction_reverse", attrs={"direction": "reverse"})
    model("custom_activations", attrs={"activations": ["Sigmoid", "Relu", "Tanh"]})
    model("layout_batch_first", attrs={"layout": 1})
    model("hidden_size_zero", attrs={"hidden_size": 0})
    model("wrong_w_shape", inits={"W": np.zeros((1, 4 * H + 1, N), np.float32)})
    lstm = lambda y: helper.make_node("LSTM", ["X", "W", "R", "B"], [y], hidden_size=H)
    model("two_lstm_nodes", nodes=[lstm("Y"), lstm("Y2")])
    model("no_lstm_node", nodes=[helper.make_node("Identity", ["X"], ["Y"])])
    model("int_weights", inits={"W": np.zeros((1, 4 * H, N), np.int32)})

    # R's raw_data two bytes past its last float (a partial value).
    def trailing(m):
        r = next(t for t in m.graph.initializer if t.name == "R")
        r.raw_data = r.raw_data + b"\x00\x01"

    model("raw_data_partial", edit=trailing)

    # Issue 17 review: what the importer must refuse rather than ignore.
    model(
        "initial_h_constant",
        inits={"h0": np.full((1, 1, H), 5.0, np.float32)},
        inputs=["X", "W", "R", "B", "", "h0"],
    )

    def dup_init(m):
        m.graph.initializer.append(m.graph.initializer[0])

    model("duplicate_initializer", edit=dup_init)

    def dup_attr(m):
        node = m.graph.node[0]
        node.attribute.append(helper.make_attribute("hidden_size", H))

    model("duplicate_attribute", edit=dup_attr)
    model("unknown_attribute", attrs={"activation_alpha": [1.0]})
    model("hidden_size_huge", attrs={"hidden_size": 2**62})


if __name__ == "__main__":
    main()
