#!/usr/bin/env python3
"""Writes small, deliberately unsupported or malformed ONNX LSTM models to
tests/golden/bad_onnx/ for tests/errors.rs (`bad_onnx_models_are_errors`)
and tests/hostile.rs. Each file differs from a valid forward LSTM (input 3,
hidden 2) in one way; the test expects an error naming that way. Issue 16
adds graphs: external data escaping the model's directory or beyond its
file, huge folded constants, cycles, bad Reshapes, unknown ops in the
weights or between the LSTMs, LSTMs not chained or of mismatched sizes. Needs the `onnx` package (not
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
    issue16()


def ext(location, offset=None, length=None):
    """An edit pointing R at external data."""

    def edit(m):
        r = next(t for t in m.graph.initializer if t.name == "R")
        r.ClearField("raw_data")
        r.ClearField("float_data")
        r.data_location = TensorProto.EXTERNAL
        for k, v in [("location", location), ("offset", offset), ("length", length)]:
            if v is not None:
                e = r.external_data.add()
                e.key, e.value = k, str(v)

    return edit


def issue16():
    rng = np.random.default_rng(2)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)
    c64 = lambda name, v: helper.make_node("Constant", [], [name], name=name, value=numpy_helper.from_array(np.array(v, np.int64)))

    # External data: refused paths, and offsets/lengths beyond the file.
    model("ext_dotdot", edit=ext("../frameworks/onnx_plain/x.npy"))
    model("ext_absolute", edit=ext("/etc/passwd"))
    model("ext_symlink", edit=ext("ext_symlink.bin"))  # the link is made by tests/hostile.rs
    with open(os.path.join(OUT, "ext_data.bin"), "wb") as fh:
        fh.write(bytes(64))
    model("ext_beyond", edit=ext("ext_data.bin", offset=48, length=4 * H * H * 4))
    model("ext_huge_length", edit=ext("ext_data.bin", offset=0, length=2**62))
    model("ext_offset_huge", edit=ext("ext_data.bin", offset=2**63 - 1, length=64))
    model("ext_missing", edit=ext("no_such_file.bin"))

    # W computed by a constant subgraph that is hostile.
    def w_from(nodes, extra_inits=None):
        lstm = helper.make_node("LSTM", ["X", "Wc", "R", "B"], ["Y"], name="lstm", hidden_size=H)
        return dict(nodes=nodes + [lstm], inits=dict({"W": None, "W0": f(1, 4 * H, N)}, **(extra_inits or {})))

    model("fold_huge_dims", **w_from([c64("shape", [2**40, 2**40]),
                                      helper.make_node("ConstantOfShape", ["shape"], ["Wc"], name="huge")]))
    model("fold_over_budget", **w_from([c64("shape", [2**15, 2**15]),
                                        helper.make_node("ConstantOfShape", ["shape"], ["Wc"], name="big")]))
    model("fold_reshape_bad", **w_from([c64("shape", [5, 7]),
                                        helper.make_node("Reshape", ["W0", "shape"], ["Wc"], name="reshape_bad")]))
    model("fold_unknown_op", **w_from([helper.make_node("MatMul", ["W0", "W0"], ["Wc"], name="mm")]))
    model("fold_cycle", **w_from([helper.make_node("Add", ["W0", "b"], ["a"], name="loop_a"),
                                  helper.make_node("Sum", ["a"], ["b"], name="loop_b"),
                                  helper.make_node("Identity", ["a"], ["Wc"], name="to_w")]))
    model("fold_gather_out_of_range", **w_from([c64("idx", [0, 7]),
                                                helper.make_node("Gather", ["W0", "idx"], ["Wc"], name="gather")]))

    # Two LSTMs: chained through Squeeze, or not.
    def two(glue, w2_in=H, y1="Y1", extra=()):
        l1 = helper.make_node("LSTM", ["X", "W", "R", "B"], [y1], name="lstm1", hidden_size=H)
        l2 = helper.make_node("LSTM", ["S", "W2", "R", "B"], ["Y"], name="lstm2", hidden_size=H)
        return dict(nodes=[l1, c64("ax1", [1])] + glue + [l2] + list(extra),
                    inits={"W2": f(1, 4 * H, w2_in)})

    squeeze = [helper.make_node("Squeeze", ["Y1", "ax1"], ["S"], name="squeeze")]
    model("chain_size_mismatch", **two(squeeze, w2_in=N))
    model("chain_unknown_op", **two([helper.make_node("Squeeze", ["Y1", "ax1"], ["S0"], name="squeeze"),
                                     helper.make_node("Relu", ["S0"], ["S"], name="relu")]))
    model("chain_unsqueezed", **two([helper.make_node("Identity", ["Y1"], ["S"], name="ident")]))
    model("chain_swapped_axes", **two([helper.make_node("Squeeze", ["Y1", "ax1"], ["S0"], name="squeeze"),
                                       helper.make_node("Transpose", ["S0"], ["S"], name="swap", perm=[1, 0, 2])]))
    # The second LSTM's initial state is the first one's final state.
    model("chain_from_state", nodes=[
        helper.make_node("LSTM", ["X", "W", "R", "B"], ["", "Yh"], name="lstm1", hidden_size=H),
        helper.make_node("LSTM", ["X", "W", "R", "B", "", "Yh"], ["Y"], name="lstm2", hidden_size=H)])
    # A head after the LSTM: the graph output is not the LSTM's.
    model("output_head", nodes=[helper.make_node("LSTM", ["X", "W", "R", "B"], ["Y0"], name="lstm", hidden_size=H),
                                helper.make_node("MatMul", ["Y0", "head"], ["Y"], name="head_matmul")],
          inits={"head": f(H, 1)})
    # Batch-first input, time-major output.
    model("mixed_layout", nodes=[helper.make_node("Transpose", ["X"], ["Xt"], name="tin", perm=[1, 0, 2]),
                                 helper.make_node("LSTM", ["Xt", "W", "R", "B"], ["Y"], name="lstm", hidden_size=H)])
    # Per-direction activations with a non-default one.
    rb = lambda: dict(W=f(2, 4 * H, N), R=f(2, 4 * H, H), B=np.zeros((2, 8 * H), np.float32))
    model("bidir_relu", attrs={"direction": "bidirectional",
                               "activations": ["Sigmoid", "Tanh", "Tanh", "Sigmoid", "Relu", "Tanh"]}, inits=rb())


if __name__ == "__main__":
    main()
