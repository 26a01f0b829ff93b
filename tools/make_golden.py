#!/usr/bin/env python3
"""Generate the golden LSTM test files under tests/golden/.

Run from the crate root:

    pip install numpy safetensors
    python3 tools/make_golden.py

CI does NOT run this script; its outputs are committed. Re-running it
reproduces the files byte-for-byte (fixed seeds, legacy numpy RandomState).

The reference is an independent float64 numpy implementation of the cell
(row-vector convention, x is [batch, n_in]):

    i = sigmoid(x.w_i + m.u_i + b_i)
    f = sigmoid(x.w_f + m.u_f + b_f)
    c = f*c + i*tanh(x.w_c + m.u_c + b_c)
    o = sigmoid(x.w_o + m.u_o + c.v_o + b_o)   # v_o [H,H] on the NEW c; optional
    m = o*tanh(c)                              # recurrent state
    h = tanh(m.w_h + b_h)                      # optional head; output is m without it

For each case it writes tests/golden/<case>/:

    weights.npz          float32 w_i u_i b_i w_f u_f b_f w_c u_c b_c w_o u_o
                         [v_o] b_o [w_h b_h]; np.savez, except single_step
                         which uses np.savez_compressed
    weights.safetensors  same tensors; float32, except single_step: float64
                         (holding the same f32-rounded values)
    x.npy                float32 input, [T,B,n_in] (or [B,n_in] for one step)
    state_in.npz         float32 c, m [B,H] (only when the case has an
                         initial state; otherwise the state starts at zero)
    expected_y.npy       float64 outputs, [T,B,n_out] (or [B,n_out])
    expected_state.npz   float64 final c, m [B,H]

Expected values are computed in float64 from exactly the float32 values
stored in the files (float32 arrays cast to float64).
"""

import os

import numpy as np
from safetensors.numpy import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
OUT_ROOT = os.path.join(HERE, "..", "tests", "golden")

GATES = ["i", "f", "c", "o"]


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def lstm_step(p, x, c, m):
    """One step. x [B,n_in], c and m [B,H]; all float64. Returns (y, c, m)."""
    i = sigmoid(x @ p["w_i"] + m @ p["u_i"] + p["b_i"])
    f = sigmoid(x @ p["w_f"] + m @ p["u_f"] + p["b_f"])
    c = f * c + i * np.tanh(x @ p["w_c"] + m @ p["u_c"] + p["b_c"])
    o_pre = x @ p["w_o"] + m @ p["u_o"] + p["b_o"]
    if "v_o" in p:
        o_pre = o_pre + c @ p["v_o"]
    o = sigmoid(o_pre)
    m = o * np.tanh(c)
    if "w_h" in p:
        y = np.tanh(m @ p["w_h"] + p["b_h"])
    else:
        y = m
    return y, c, m


def lstm_sequence(p, x, c, m):
    """x [T,B,n_in] -> y [T,B,n_out], final (c, m)."""
    ys = []
    for t in range(x.shape[0]):
        y, c, m = lstm_step(p, x[t], c, m)
        ys.append(y)
    return np.stack(ys), c, m


def make_case(name, seed, n_in, hidden, n_out, peephole, steps, batch,
              has_state, x_scale=1.0, compressed=False, st_float64=False):
    rng = np.random.RandomState(seed)

    def weight(shape):
        return rng.uniform(-0.5, 0.5, size=shape).astype(np.float32)

    def bias(shape):
        return rng.uniform(-0.2, 0.2, size=shape).astype(np.float32)

    # Insertion order = order in the files.
    w = {}
    for g in GATES:
        w["w_" + g] = weight((n_in, hidden))
        w["u_" + g] = weight((hidden, hidden))
        if g == "o" and peephole:
            w["v_o"] = weight((hidden, hidden))
        w["b_" + g] = bias((hidden,))
    if n_out is not None:
        w["w_h"] = weight((hidden, n_out))
        w["b_h"] = bias((n_out,))

    x_shape = (batch, n_in) if steps is None else (steps, batch, n_in)
    x = (rng.random_sample(x_shape) * x_scale).astype(np.float32)

    if has_state:
        c0 = rng.random_sample((batch, hidden)).astype(np.float32)
        m0 = rng.random_sample((batch, hidden)).astype(np.float32)
    else:
        c0 = m0 = None

    # Reference in float64 from the exact float32 values.
    p64 = {k: v.astype(np.float64) for k, v in w.items()}
    c = np.zeros((batch, hidden)) if c0 is None else c0.astype(np.float64)
    m = np.zeros((batch, hidden)) if m0 is None else m0.astype(np.float64)
    x64 = x.astype(np.float64)
    if steps is None:
        y, c, m = lstm_step(p64, x64, c, m)
    else:
        y, c, m = lstm_sequence(p64, x64, c, m)

    d = os.path.join(OUT_ROOT, name)
    os.makedirs(d, exist_ok=True)
    (np.savez_compressed if compressed else np.savez)(
        os.path.join(d, "weights.npz"), **w)
    st = p64 if st_float64 else w
    save_file({k: np.ascontiguousarray(v) for k, v in st.items()},
              os.path.join(d, "weights.safetensors"))
    np.save(os.path.join(d, "x.npy"), x)
    state_path = os.path.join(d, "state_in.npz")
    if has_state:
        np.savez(state_path, c=c0, m=m0)
    elif os.path.exists(state_path):
        os.remove(state_path)
    np.save(os.path.join(d, "expected_y.npy"), y)
    np.savez(os.path.join(d, "expected_state.npz"), c=c, m=m)

    print(f"{name}: x{x.shape} -> y{y.shape}, state c{c.shape} m{m.shape}; "
          f"weights: {', '.join(w)}")


def main():
    make_case("seed", seed=1, n_in=7, hidden=5, n_out=3, peephole=True,
              steps=6, batch=10, has_state=True, x_scale=3.0)
    make_case("plain", seed=2, n_in=4, hidden=6, n_out=None, peephole=False,
              steps=3, batch=2, has_state=False)
    make_case("single_step", seed=3, n_in=3, hidden=4, n_out=2,
              peephole=True, steps=None, batch=5, has_state=True,
              compressed=True, st_float64=True)
    make_case("peephole_only", seed=4, n_in=5, hidden=3, n_out=None,
              peephole=True, steps=4, batch=1, has_state=True)


if __name__ == "__main__":
    main()
