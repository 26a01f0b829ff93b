#!/usr/bin/env python3
"""Golden cases from the real frameworks, for tests/frameworks.rs.

    pip install torch tensorflow-cpu tf-keras safetensors numpy
    TF_USE_LEGACY_KERAS=1 python3 tools/make_framework_goldens.py

(`ONLY=keras` or `ONLY=sequences` in the environment regenerates just those
cases.)

CI does not run this script; its outputs under tests/golden/frameworks/ are
committed. Each case directory holds:

    weights.safetensors | .npz | .onnx  the framework's own tensors/names
    x.npy                               float32 input, [T, B, n_in] ([B, n_in]: one step)
    state_in.npz                        float32 c [B, H] and m [B, R] (m = h)
    expected_y.npy                      float32 outputs the framework computed
    expected_state.npz                  float32 final c and m
    meta.json                           how to load it (format, prefix, TF options)

Cases: PyTorch nn.LSTM (plain, proj_size), nn.LSTMCell (one step); Keras
LSTM; tf.compat.v1 LSTMCell plain (forget_bias 1.0) and with diagonal
peepholes + projection + cell_clip + proj_clip; ONNX LSTM run by
onnxruntime, plain and with peepholes + clip + input_forget.

    pip install onnx onnxruntime   (also needed)
"""

import json
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "golden", "frameworks")


def save_case(name, meta, x, c0, m0, y, c1, m1, weights=None, weights_path=None):
    d = os.path.join(ROOT, name)
    os.makedirs(d, exist_ok=True)
    f32 = lambda a: np.ascontiguousarray(np.asarray(a, dtype=np.float32))
    np.save(os.path.join(d, "x.npy"), f32(x))
    np.savez(os.path.join(d, "state_in.npz"), c=f32(c0), m=f32(m0))
    np.save(os.path.join(d, "expected_y.npy"), f32(y))
    np.savez(os.path.join(d, "expected_state.npz"), c=f32(c1), m=f32(m1))
    if weights is not None:
        np.savez(os.path.join(d, weights_path), **{k: f32(v) for k, v in weights.items()})
    with open(os.path.join(d, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1, sort_keys=True)
        f.write("\n")
    return d


def torch_cases():
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)

    class Wrap(torch.nn.Module):
        def __init__(self, lstm):
            super().__init__()
            self.lstm = lstm

    for name, n, h, proj, t, b in [("torch_lstm", 5, 7, 0, 4, 3), ("torch_proj", 5, 8, 3, 3, 2)]:
        lstm = torch.nn.LSTM(n, h, proj_size=proj)
        r = proj or h
        x = torch.rand(t, b, n) * 4 - 2
        h0 = torch.rand(1, b, r) * 2 - 1
        c0 = torch.rand(1, b, h) * 2 - 1
        with torch.no_grad():
            y, (h1, c1) = lstm(x, (h0, c0))
        sd = {k: v.contiguous() for k, v in Wrap(lstm).state_dict().items()}
        d = save_case(name, {"format": "pytorch", "prefix": "lstm."}, x.numpy(), c0[0].numpy(), h0[0].numpy(), y.numpy(), c1[0].numpy(), h1[0].numpy())
        save_file(sd, os.path.join(d, "weights.safetensors"))

    cell = torch.nn.LSTMCell(4, 6)
    b = 5
    x = torch.rand(b, 4) * 4 - 2
    h0, c0 = torch.rand(b, 6) * 2 - 1, torch.rand(b, 6) * 2 - 1
    with torch.no_grad():
        h1, c1 = cell(x, (h0, c0))
    d = save_case("torch_cell", {"format": "pytorch", "prefix": ""}, x.numpy(), c0.numpy(), h0.numpy(), h1.numpy(), c1.numpy(), h1.numpy())
    save_file({k: v.contiguous() for k, v in cell.state_dict().items()}, os.path.join(d, "weights.safetensors"))


def keras_case():
    import tensorflow as tf

    tf.random.set_seed(1)
    rng = np.random.RandomState(1)
    t, b, n, u = 5, 2, 4, 6
    layer = tf.keras.layers.LSTM(u, return_sequences=True, return_state=True, time_major=False)
    x = tf.constant((rng.rand(b, t, n) * 4 - 2).astype(np.float32))
    h0 = tf.constant((rng.rand(b, u) * 2 - 1).astype(np.float32))
    c0 = tf.constant((rng.rand(b, u) * 2 - 1).astype(np.float32))
    y, h1, c1 = layer(x, initial_state=[h0, c0])
    # Every weight from the seeded numpy generator (Keras' own initialisers
    # are not reproducible across runs), the bias away from zero so a wrong
    # gate order shows.
    k = ((rng.rand(n, 4 * u) - 0.5) * 1.2).astype(np.float32)
    rk = ((rng.rand(u, 4 * u) - 0.5) * 1.2).astype(np.float32)
    layer.set_weights([k, rk, (rng.rand(4 * u) - 0.5).astype(np.float32)])
    y, h1, c1 = layer(x, initial_state=[h0, c0])
    k, rk, bias = layer.get_weights()
    x, h0, c0 = x.numpy(), h0.numpy(), c0.numpy()
    save_case("keras_lstm", {"format": "keras", "prefix": ""}, x.transpose(1, 0, 2), c0, h0, np.asarray(y).transpose(1, 0, 2), c1, h1,
              weights={"kernel": k, "recurrent_kernel": rk, "bias": bias}, weights_path="weights.npz")


def tf_cases():
    import tensorflow as tf

    rng = np.random.RandomState(2)
    for name, kwargs, n, u, t, b in [
        ("tf_cell", dict(num_units=5), 3, 5, 4, 2),
        ("tf_peep_proj_clip", dict(num_units=6, use_peepholes=True, num_proj=4, cell_clip=0.8, proj_clip=0.3, forget_bias=0.5), 3, 6, 5, 3),
    ]:
        cell = tf.compat.v1.nn.rnn_cell.LSTMCell(**kwargs)
        r = kwargs.get("num_proj") or u
        x = (rng.rand(t, b, n) * 4 - 2).astype(np.float32)
        c = (rng.rand(b, u) * 2 - 1).astype(np.float32)
        m = (rng.rand(b, r) * 2 - 1).astype(np.float32)
        c0, m0 = c.copy(), m.copy()
        cell.build(tf.TensorShape([b, n]))
        # Random, larger-than-default diagonals and bias so every term matters.
        for v in cell.variables:
            v.assign((rng.rand(*v.shape) - 0.5).astype(np.float32) * (2.0 if "diag" in v.name else 1.0))
        ys = []
        state = tf.compat.v1.nn.rnn_cell.LSTMStateTuple(c, m)
        for s in range(t):
            out, state = cell(x[s], state)
            ys.append(np.asarray(out))
        weights = {}
        for v in cell.variables:
            key = v.name.split("/", 1)[1] if "/" in v.name else v.name
            key = key.split(":")[0]
            weights[key] = v.numpy()
        meta = {"format": "tf", "prefix": "", "forget_bias": kwargs.get("forget_bias", 1.0), "cell_clip": kwargs.get("cell_clip"), "proj_clip": kwargs.get("proj_clip")}
        save_case(name, meta, x, c0, m0, np.stack(ys), np.asarray(state.c), np.asarray(state.h), weights=weights, weights_path="weights.npz")


def onnx_cases():
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.RandomState(3)
    for name, n, h, t, b, peep, attrs in [
        ("onnx_plain", 3, 5, 4, 2, False, {}),
        ("onnx_peep_clip_coupled", 4, 6, 5, 3, True, {"clip": 0.7, "input_forget": 1}),
    ]:
        f32 = lambda *s: ((rng.rand(*s) - 0.5) * 1.6).astype(np.float32)
        W, R, B = f32(1, 4 * h, n), f32(1, 4 * h, h), f32(1, 8 * h)
        inits = [numpy_helper.from_array(W, "W"), numpy_helper.from_array(R, "R"), numpy_helper.from_array(B, "B")]
        inputs = ["X", "W", "R", "B", "", "initial_h", "initial_c"]
        if peep:
            inits.append(numpy_helper.from_array(f32(1, 3 * h) * 2, "P"))
            inputs.append("P")
        node = helper.make_node("LSTM", inputs, ["Y", "Y_h", "Y_c"], hidden_size=h, **attrs)
        graph = helper.make_graph(
            [node],
            name,
            [
                helper.make_tensor_value_info("X", TensorProto.FLOAT, [t, b, n]),
                helper.make_tensor_value_info("initial_h", TensorProto.FLOAT, [1, b, h]),
                helper.make_tensor_value_info("initial_c", TensorProto.FLOAT, [1, b, h]),
            ],
            [
                helper.make_tensor_value_info("Y", TensorProto.FLOAT, [t, 1, b, h]),
                helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, [1, b, h]),
                helper.make_tensor_value_info("Y_c", TensorProto.FLOAT, [1, b, h]),
            ],
            inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], producer_name="make_framework_goldens")
        onnx.checker.check_model(model)
        x = ((rng.rand(t, b, n) * 4) - 2).astype(np.float32)
        h0 = ((rng.rand(1, b, h) * 2) - 1).astype(np.float32)
        c0 = ((rng.rand(1, b, h) * 2) - 1).astype(np.float32)
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        y, yh, yc = sess.run(None, {"X": x, "initial_h": h0, "initial_c": c0})
        d = save_case(name, {"format": "onnx", "prefix": ""}, x, c0[0], h0[0], y[:, 0], yc[0], yh[0])
        onnx.save(model, os.path.join(d, "weights.onnx"))


def onnx_clip_case():
    """ONNX `clip` where the cell state exceeds the clip: onnxruntime clamps
    the gates' pre-activations only, never the c entering tanh(c) (its own
    random stream, so the other goldens do not change)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.RandomState(23)
    name, n, h, t, b, clip = "onnx_clip_state", 5, 9, 4, 3, 0.5
    f32 = lambda *s: ((rng.rand(*s) - 0.5) * 1.6).astype(np.float32)
    W, R, B, P = f32(1, 4 * h, n), f32(1, 4 * h, h), f32(1, 8 * h), f32(1, 3 * h)
    inits = [numpy_helper.from_array(a, k) for a, k in [(W, "W"), (R, "R"), (B, "B"), (P, "P")]]
    node = helper.make_node("LSTM", ["X", "W", "R", "B", "", "initial_h", "initial_c", "P"], ["Y", "Y_h", "Y_c"], hidden_size=h, clip=clip)
    graph = helper.make_graph(
        [node],
        name,
        [
            helper.make_tensor_value_info("X", TensorProto.FLOAT, [t, b, n]),
            helper.make_tensor_value_info("initial_h", TensorProto.FLOAT, [1, b, h]),
            helper.make_tensor_value_info("initial_c", TensorProto.FLOAT, [1, b, h]),
        ],
        [
            helper.make_tensor_value_info("Y", TensorProto.FLOAT, [t, 1, b, h]),
            helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, [1, b, h]),
            helper.make_tensor_value_info("Y_c", TensorProto.FLOAT, [1, b, h]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], producer_name="make_framework_goldens")
    onnx.checker.check_model(model)
    x = ((rng.rand(t, b, n) * 4) - 2).astype(np.float32)
    h0 = ((rng.rand(1, b, h) * 2) - 1).astype(np.float32)
    # |c0| up to 2.5, several times the clip: the state stays above it.
    c0 = ((rng.rand(1, b, h) * 5) - 2.5).astype(np.float32)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    y, yh, yc = sess.run(None, {"X": x, "initial_h": h0, "initial_c": c0})
    assert np.abs(yc).max() > 1.2 * clip, "the golden must hold a state beyond the clip"
    d = save_case(name, {"format": "onnx", "prefix": ""}, x, c0[0], h0[0], y[:, 0], yc[0], yh[0])
    onnx.save(model, os.path.join(d, "weights.onnx"))


def torch_sequence_cases():
    """Stacked / bidirectional / proj_size nn.LSTM with per-sequence
    lengths (PackedSequence) or batch_first, under tests/golden/sequences/.
    State files hold PyTorch's layout: c [L*D, B, H], m (= h) [L*D, B, R]."""
    import torch
    from safetensors.torch import save_file

    seq_root = os.path.join(ROOT, "..", "sequences")
    torch.manual_seed(7)

    class Wrap(torch.nn.Module):
        def __init__(self, lstm):
            super().__init__()
            self.lstm = lstm

    for name, n, h, layers, bidir, proj, t, b, lens, batch_first in [
        ("torch_2layer_bidir_lens", 5, 6, 2, True, 0, 5, 4, [5, 3, 4, 1], False),
        ("torch_3layer_proj_batch_first", 4, 7, 3, False, 3, 4, 3, None, True),
        ("torch_bidir_proj_lens", 3, 5, 1, True, 2, 6, 3, [2, 6, 4], False),
    ]:
        lstm = torch.nn.LSTM(n, h, num_layers=layers, bidirectional=bidir, proj_size=proj, batch_first=batch_first)
        d_ = 2 if bidir else 1
        r = proj or h
        x = torch.rand(b, t, n) * 4 - 2 if batch_first else torch.rand(t, b, n) * 4 - 2
        h0 = torch.rand(layers * d_, b, r) * 2 - 1
        c0 = torch.rand(layers * d_, b, h) * 2 - 1
        with torch.no_grad():
            if lens is not None:
                packed = torch.nn.utils.rnn.pack_padded_sequence(x, torch.tensor(lens), batch_first=batch_first, enforce_sorted=False)
                yp, (hn, cn) = lstm(packed, (h0, c0))
                y, _ = torch.nn.utils.rnn.pad_packed_sequence(yp, batch_first=batch_first, total_length=t)
            else:
                y, (hn, cn) = lstm(x, (h0, c0))
        d = os.path.join(seq_root, name)
        os.makedirs(d, exist_ok=True)
        np.save(os.path.join(d, "x.npy"), x.numpy().astype(np.float32))
        np.savez(os.path.join(d, "state_in.npz"), c=c0.numpy(), m=h0.numpy())
        np.save(os.path.join(d, "expected_y.npy"), y.numpy().astype(np.float32))
        np.savez(os.path.join(d, "expected_state.npz"), c=cn.numpy(), m=hn.numpy())
        if lens is not None:
            np.save(os.path.join(d, "seq_lens.npy"), np.array(lens, dtype=np.int64))
        save_file({k: v.contiguous() for k, v in Wrap(lstm).state_dict().items()}, os.path.join(d, "weights.safetensors"))
        with open(os.path.join(d, "meta.json"), "w") as f:
            json.dump({"format": "pytorch", "prefix": "lstm.", "batch_first": batch_first}, f, indent=1, sort_keys=True)
            f.write("\n")


def onnx_sequence_cases(seq_root):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.RandomState(11)
    for name, n, h, t, b, lens, peep in [
        ("onnx_bidir_lens", 4, 5, 6, 3, [6, 2, 4], False),
        ("onnx_bidir_peep", 3, 4, 4, 2, None, True),
    ]:
        f32 = lambda *s: ((rng.rand(*s) - 0.5) * 1.6).astype(np.float32)
        W, R, B = f32(2, 4 * h, n), f32(2, 4 * h, h), f32(2, 8 * h)
        inits = [numpy_helper.from_array(W, "W"), numpy_helper.from_array(R, "R"), numpy_helper.from_array(B, "B")]
        graph_inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, [t, b, n]),
                        helper.make_tensor_value_info("initial_h", TensorProto.FLOAT, [2, b, h]),
                        helper.make_tensor_value_info("initial_c", TensorProto.FLOAT, [2, b, h])]
        inputs = ["X", "W", "R", "B", "", "initial_h", "initial_c"]
        feeds = {}
        if lens is not None:
            inputs[4] = "sequence_lens"
            graph_inputs.append(helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, [b]))
            feeds["sequence_lens"] = np.array(lens, dtype=np.int32)
        if peep:
            inits.append(numpy_helper.from_array(f32(2, 3 * h) * 2, "P"))
            inputs.append("P")
        node = helper.make_node("LSTM", inputs, ["Y", "Y_h", "Y_c"], hidden_size=h, direction="bidirectional")
        graph = helper.make_graph([node], name, graph_inputs,
            [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [t, 2, b, h]),
             helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, [2, b, h]),
             helper.make_tensor_value_info("Y_c", TensorProto.FLOAT, [2, b, h])], inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], producer_name="make_framework_goldens")
        onnx.checker.check_model(model)
        x = ((rng.rand(t, b, n) * 4) - 2).astype(np.float32)
        h0 = ((rng.rand(2, b, h) * 2) - 1).astype(np.float32)
        c0 = ((rng.rand(2, b, h) * 2) - 1).astype(np.float32)
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        y, yh, yc = sess.run(None, {"X": x, "initial_h": h0, "initial_c": c0, **feeds})
        # ONNX Y is [T, D, B, H]; PyTorch's layout is [T, B, D*H].
        y = y.transpose(0, 2, 1, 3).reshape(t, b, 2 * h)
        d = os.path.join(seq_root, name)
        os.makedirs(d, exist_ok=True)
        np.save(os.path.join(d, "x.npy"), x)
        np.savez(os.path.join(d, "state_in.npz"), c=c0, m=h0)
        np.save(os.path.join(d, "expected_y.npy"), y.astype(np.float32))
        np.savez(os.path.join(d, "expected_state.npz"), c=yc, m=yh)
        if lens is not None:
            np.save(os.path.join(d, "seq_lens.npy"), np.array(lens, dtype=np.int64))
        onnx.save(model, os.path.join(d, "weights.onnx"))
        with open(os.path.join(d, "meta.json"), "w") as f:
            json.dump({"format": "onnx", "prefix": "", "batch_first": False}, f, indent=1, sort_keys=True)
            f.write("\n")


if __name__ == "__main__":
    if os.environ.get("ONLY") == "keras":
        keras_case()
        raise SystemExit(0)
    if os.environ.get("ONLY") == "onnx_clip":
        onnx_clip_case()
        raise SystemExit(0)
    if os.environ.get("ONLY") == "sequences":
        torch_sequence_cases()
        onnx_sequence_cases(os.path.join(ROOT, "..", "sequences"))
        raise SystemExit(0)
    torch_sequence_cases()
    onnx_sequence_cases(os.path.join(ROOT, "..", "sequences"))
    torch_cases()
    keras_case()
    tf_cases()
    onnx_cases()
    onnx_clip_case()
    print("wrote", sorted(os.listdir(ROOT)))
