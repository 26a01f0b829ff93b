#!/usr/bin/env python3
"""Keras model files and Keras' own outputs, for tests/keras.rs and
tests/sequences.rs (issue 16, item 3).

    pip install tensorflow-cpu tf-keras h5py numpy   (keras 3 comes with TF)
    python3 tools/make_keras_goldens.py

CI does not run this script; its outputs are committed. Each case is built
twice with the same numpy weights: with Keras 3 (`model.save("model.keras")`)
and with tf-keras (`model.save("model.h5")`, the legacy HDF5 format, where
tf-keras can build it). The expected outputs are Keras 3's, computed by
running the model's LSTM layers one after the other, each a copy with
`return_state=True` and the given initial state; the script asserts that
this chain is the saved model itself (zero state: `model(x)` up to the last
LSTM layer) and that tf-keras computes the same to 1e-5.

Each case directory (tests/golden/keras/NAME, or tests/golden/sequences/
keras_NAME for plain stacks the sequence suite checks with its derived
bound) holds:

    model.keras, model.h5   the saved model
    x.npy                   float32 [B, T, n]: what the first LSTM receives
                            (after an Embedding, say)
    state_in.npz            c, m [L*D, B, H]: initial state per layer and
                            direction (m = Keras' h)
    expected_y.npy          the last LSTM layer's output ([B, T, W], or
                            [B, W] with return_sequences=False)
    expected_state.npz      final c, m [L*D, B, H]
    meta.json               format "keras", batch_first, and for the error
                            cases `error`: words the error must contain
"""

import json
import os
import shutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
KERAS_ROOT = os.path.join(HERE, "..", "tests", "golden", "keras")
SEQ_ROOT = os.path.join(HERE, "..", "tests", "golden", "sequences")

rng = np.random.RandomState(16)


def rnd(*shape, scale=1.2):
    return ((rng.rand(*shape) - 0.5) * scale).astype(np.float32)


# A case: (name, plain stack?, n_in, T, B, layers, options). Layers:
#   ("lstm", units, kwargs) | ("bidi", units, merge, kwargs) | ("dropout",)
#   | ("dense", units) | ("embedding", vocab)
CASES = [
    ("lstm_seq", True, 4, 5, 2, [("lstm", 6, {"return_sequences": True})], {}),
    ("stack2_dropout", True, 3, 4, 3, [("lstm", 6, {"return_sequences": True}), ("dropout",),
                                        ("lstm", 6, {"return_sequences": True})], {"functional": False}),
    ("bidir2", True, 3, 6, 3, [("bidi", 4, "concat", {"return_sequences": True}),
                               ("bidi", 4, "concat", {"return_sequences": True})], {"functional": True}),
    ("no_bias", True, 4, 5, 2, [("lstm", 6, {"return_sequences": True, "use_bias": False})], {}),
    ("go_backwards", False, 4, 6, 2, [("lstm", 5, {"return_sequences": True, "go_backwards": True})], {}),
    ("lstm_bidir_sum_last", False, 3, 5, 3, [("lstm", 4, {"return_sequences": True}),
                                              ("bidi", 4, "sum", {"return_sequences": False})], {"functional": True}),
    ("embed_lstm_dense", False, 4, 6, 3, [("embedding", 12), ("lstm", 6, {}), ("dense", 3)], {}),
]

ERROR_CASES = [
    ("relu", 4, [("lstm", 5, {"activation": "relu", "return_sequences": True})], ["activation", "relu", "lstm_relu"]),
    ("hard_sigmoid", 4, [("lstm", 5, {"recurrent_activation": "hard_sigmoid"})], ["recurrent_activation", "hard_sigmoid"]),
    ("dense_between", 4, [("lstm", 5, {"return_sequences": True}), ("dense", 3), ("lstm", 4, {})], ["between", "Dense"]),
    ("bidir_mul", 4, [("bidi", 3, "mul", {"return_sequences": True})], ["merge_mode", "mul"]),
]


def build(K, n_in, t, layers, functional, name_prefix=""):
    """The model in Keras module K (keras or tf_keras), and its LSTM layers."""
    L = K.layers
    int_input = layers[0][0] == "embedding"
    inp = K.Input((t,), dtype="int32") if int_input else K.Input((t, n_in))
    made = []
    for i, spec in enumerate(layers):
        kind = spec[0]
        if kind == "lstm":
            kw = dict(spec[2])
            nm = "lstm_relu" if kw.get("activation") == "relu" else f"rnn{i}"
            made.append(L.LSTM(spec[1], name=nm, **kw))
        elif kind == "bidi":
            made.append(L.Bidirectional(L.LSTM(spec[1], **spec[3]), merge_mode=spec[2], name=f"bi{i}"))
        elif kind == "dropout":
            made.append(L.Dropout(0.3, name=f"drop{i}"))
        elif kind == "dense":
            made.append(L.Dense(spec[1], name=f"dense{i}"))
        elif kind == "embedding":
            made.append(L.Embedding(spec[1], n_in, name=f"embed{i}"))
    if functional:
        x = inp
        for l in made:
            x = l(x)
        model = K.Model(inp, x)
    else:
        model = K.Sequential([inp] + made)
    return model, made


def set_weights(made, layers, n_in):
    """Seeded numpy weights (Keras' initialisers are not reproducible),
    biases away from zero so a wrong gate order shows; returns them."""
    ws = []
    width = n_in
    for l, spec in zip(made, layers):
        if spec[0] == "lstm":
            u = spec[1]
            w = [rnd(width, 4 * u), rnd(u, 4 * u)] + ([rnd(4 * u, scale=1.0)] if spec[2].get("use_bias", True) else [])
            width = u
        elif spec[0] == "bidi":
            u = spec[1]
            w = [rnd(width, 4 * u), rnd(u, 4 * u), rnd(4 * u, scale=1.0)] * 1
            w = w + [rnd(width, 4 * u), rnd(u, 4 * u), rnd(4 * u, scale=1.0)]
            width = 2 * u if spec[2] == "concat" else u
        elif spec[0] == "dense":
            w = [rnd(width, spec[1]), rnd(spec[1])]
            width = spec[1]
        elif spec[0] == "embedding":
            w = [rnd(spec[1], n_in, scale=3.0)]
        else:
            w = []
        ws.append(w)
    return ws


def apply_weights(made, ws):
    for l, w in zip(made, ws):
        if w:
            l.set_weights(w)


def chain(K, made, layers, x, states):
    """Runs the LSTM layers one by one (copies with return_state) from the
    given per-(layer, direction) states; returns (y, [(h, c), ...])."""
    import tensorflow as tf

    L = K.layers
    finals = []
    si = 0
    y = tf.constant(x)
    states = [(tf.constant(h), tf.constant(c)) for h, c in states]
    for l, spec in zip(made, layers):
        if spec[0] == "lstm":
            cfg = dict(l.get_config(), return_state=True, name=l.name + "_rs")
            c = L.LSTM.from_config(cfg)
            h0, c0 = states[si]
            si += 1
            out = c(y, initial_state=[h0, c0])
            c.set_weights(l.get_weights())
            y, h, cc = c(y, initial_state=[h0, c0])
            finals.append((np.asarray(h), np.asarray(cc)))
        elif spec[0] == "bidi":
            inner = dict(l.forward_layer.get_config())
            inner.pop("name", None)
            c = L.Bidirectional(L.LSTM(return_state=True, **{k: v for k, v in inner.items() if k != "return_state"}),
                                merge_mode=spec[2])
            (hf, cf), (hb, cb) = states[si], states[si + 1]
            si += 2
            c(y, initial_state=[hf, cf, hb, cb])
            c.set_weights(l.get_weights())
            outs = c(y, initial_state=[hf, cf, hb, cb])
            y = outs[0]
            finals += [(np.asarray(outs[1]), np.asarray(outs[2])), (np.asarray(outs[3]), np.asarray(outs[4]))]
        elif spec[0] == "embedding":
            y = l(y)
        # dropout: identity at inference; dense after the LSTMs: not run
    return np.asarray(y), finals


def lstm_dirs(layers):
    out = []
    for s in layers:
        if s[0] == "lstm":
            out.append(s[1])
        elif s[0] == "bidi":
            out += [s[1], s[1]]
    return out


def last_lstm_index(layers):
    return max(i for i, s in enumerate(layers) if s[0] in ("lstm", "bidi"))


def make_case(name, plain, n_in, t, b, layers, opts):
    import keras
    import tf_keras

    functional = opts.get("functional", True)
    model, made = build(keras, n_in, t, layers, functional)
    ws = set_weights(made, layers, n_in)
    apply_weights(made, ws)
    if layers[0][0] == "embedding":
        tokens = rng.randint(0, layers[0][1], size=(b, t)).astype(np.int32)
        x_in = tokens
        x = np.asarray(made[0](tokens)).astype(np.float32)
    else:
        x_in = rnd(b, t, n_in, scale=4.0)
        x = x_in
    units = lstm_dirs(layers)
    states = [(rnd(b, u, scale=2.0), rnd(b, u, scale=2.0)) for u in units]
    y, finals = chain(keras, made, layers, x_in, states)
    # The chain is the saved model (zero initial state), up to the last LSTM.
    zero = [(np.zeros((b, u), np.float32), np.zeros((b, u), np.float32)) for u in units]
    yz, _ = chain(keras, made, layers, x_in, zero)
    upto = keras.Model(model.inputs, made[last_lstm_index(layers)].output)
    np.testing.assert_allclose(np.asarray(upto(x_in)), yz, atol=1e-6)

    d = os.path.join(SEQ_ROOT, "keras_" + name) if plain else os.path.join(KERAS_ROOT, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    model.save(os.path.join(d, "model.keras"))

    # tf-keras: the same model and weights, saved as legacy .h5; it must
    # compute the same outputs.
    tmodel, tmade = build(tf_keras, n_in, t, layers, functional)
    apply_weights(tmade, ws)
    ty, tfinals = chain(tf_keras, tmade, layers, x_in, states)
    np.testing.assert_allclose(ty, y, atol=1e-5)
    tmodel.save(os.path.join(d, "model.h5"))

    np.save(os.path.join(d, "x.npy"), np.ascontiguousarray(x, dtype=np.float32))
    np.savez(os.path.join(d, "state_in.npz"), c=np.stack([s[1] for s in states]), m=np.stack([s[0] for s in states]))
    np.save(os.path.join(d, "expected_y.npy"), np.ascontiguousarray(y, dtype=np.float32))
    np.savez(os.path.join(d, "expected_state.npz"), c=np.stack([f[1] for f in finals]), m=np.stack([f[0] for f in finals]))
    meta = {"format": "keras", "prefix": "", "batch_first": True}
    with open(os.path.join(d, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1, sort_keys=True)
        f.write("\n")
    print(name, "ok", "->", os.path.relpath(d, os.path.join(HERE, "..")))


def make_error_case(name, n_in, layers, words):
    import keras
    import tf_keras

    d = os.path.join(KERAS_ROOT, "bad_" + name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    model, made = build(keras, n_in, 4, layers, True)
    model.save(os.path.join(d, "model.keras"))
    try:
        tmodel, _ = build(tf_keras, n_in, 4, layers, True)
        tmodel.save(os.path.join(d, "model.h5"))
    except Exception as e:  # noqa: BLE001 - tf-keras may refuse a setting
        print(name, "tf-keras:", e)
    with open(os.path.join(d, "meta.json"), "w") as f:
        json.dump({"format": "keras", "error": words}, f, indent=1, sort_keys=True)
        f.write("\n")
    print(name, "saved (an error case)")


def make_weights_only():
    import keras

    d = os.path.join(KERAS_ROOT, "bad_weights_only")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    model, _ = build(keras, 3, 4, [("lstm", 4, {})], True)
    model.save_weights(os.path.join(d, "model.weights.h5"))
    with open(os.path.join(d, "meta.json"), "w") as f:
        json.dump({"format": "keras", "error": ["weights-only", "model.save"]}, f, indent=1, sort_keys=True)
        f.write("\n")
    print("weights_only saved (an error case)")


def make_h5_variants():
    """The same tiny group/attribute/dataset structure written with h5py's
    newest file format (superblock v3, object header v2, link messages)
    and with a user block, so the reader's other paths are covered."""
    import h5py

    d = os.path.join(KERAS_ROOT, "h5_variants")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    data = np.arange(24, dtype=np.float32).reshape(4, 6) / 7
    for fname, kw in [("latest.h5", {"libver": "latest"}), ("userblock.h5", {"userblock_size": 512}),
                      ("earliest.h5", {})]:
        with h5py.File(os.path.join(d, fname), "w", **kw) as f:
            g = f.create_group("a/b")
            g.attrs["names"] = ["x", "yy", "zzz"]
            g.attrs["fixed"] = np.bytes_("hello")
            g.create_dataset("f32", data=data)
            g.create_dataset("f64", data=data.astype(np.float64))
            g.create_dataset("f16", data=data.astype(np.float16))
            g.create_dataset("be", data=data.astype(">f4"))
            dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
            dcpl.set_layout(h5py.h5d.COMPACT)
            space = h5py.h5s.create_simple((6,))
            dsid = h5py.h5d.create(g.id, b"compact", h5py.h5t.IEEE_F32LE, space, dcpl=dcpl)
            dsid.write(h5py.h5s.ALL, h5py.h5s.ALL, np.ascontiguousarray(data[0]))
            g.create_dataset("chunked", data=data, chunks=(2, 3))
            g.create_dataset("ints", data=np.arange(3))
            for i in range(40):  # many links: a multi-level B-tree (earliest), still compact (latest)
                f.create_group(f"many/g{i:02d}")
    print("h5_variants written")


if __name__ == "__main__":
    for c in CASES:
        make_case(*c)
    for c in ERROR_CASES:
        make_error_case(*c)
    make_weights_only()
    make_h5_variants()
