#!/usr/bin/env python3
"""Fits the rational tanh of src/activation.rs (numpy only).

tanh(a) ~ u * P(s) / Q(s) on a in [0, A], u = a / A, s = u^2, P and Q of
degree 4 with Q(0) = 1 (the factor A is folded into P). The fit is a
linearised weighted least-squares minimax (Loeb / Lawson iterations) in a
Chebyshev basis on [0, 1]; the coefficients are then converted to the
monomial basis.

The kernels evaluate it in x directly: tanh(x) ~ x * P'(x^2) / Q'(x^2) with
x clamped to [-A, A], P'_k = P_k / A^(2k+1), Q'_k = Q_k / A^(2k); and
sigmoid(x) = 1/2 + x * P''(x^2) / Q''(x^2) with x clamped to [-2A, 2A],
P''_k = P'_k / (4 * 4^k), Q''_k = Q'_k / 4^k (tanh(x/2)/2, exact power-of-two
rescalings of P', Q'). Both results are clamped to [-1, 1] / [-1/2, 1/2].
The script prints the four f32 coefficient sets, evaluates the f32
formulas as the kernels do (Estrin's scheme with FMA) on a dense grid and
prints the maximum absolute errors, which src/activation.rs quotes.

Usage: python3 tools/fit_tanh.py [A]   (default A = 9.5)
"""
import sys

import numpy as np
from numpy.polynomial import chebyshev as C
from numpy.polynomial import polynomial as Pm


def fit(dp, dq, A, iters=60):
    s = (1 - np.cos(np.linspace(0, np.pi, 40001))) / 2
    a = A * np.sqrt(s)
    t = np.tanh(a)

    def basis(d):
        return np.stack([C.chebval(2 * s - 1, np.eye(d + 1)[k]) for k in range(d + 1)], 1)

    bp, bq = basis(dp), basis(dq)
    w = np.ones_like(s)
    qv = np.ones_like(s)
    best = None
    for _ in range(iters):
        m = np.concatenate([a[:, None] * bp, -t[:, None] * bq[:, 1:]], 1) * (w / qv)[:, None]
        rhs = t * bq[:, 0] * (w / qv)
        sol, *_ = np.linalg.lstsq(m, rhs, rcond=None)
        pc, qc = sol[: dp + 1], np.concatenate([[1.0], sol[dp + 1 :]])
        p, q = bp @ pc, bq @ qc
        err = a * p / q - t
        e = np.abs(err).max()
        if best is None or e < best[0]:
            best = (e, pc, qc)
        qv = q
        w = w * np.abs(err) + 1e-300
        w /= w.sum()
    return best


def monomial(cc):
    """Chebyshev coefficients in (2s - 1) -> monomial coefficients in s."""
    m = C.cheb2poly(cc)
    out = np.zeros(len(m))
    for k, ck in enumerate(m):
        out[: k + 1] += ck * Pm.polypow([-1.0, 2.0], k)[: k + 1]
    return out


def main():
    A = float(sys.argv[1]) if len(sys.argv) > 1 else 9.5
    e, pc, qc = fit(4, 4, A)
    pm, qm = monomial(pc), monomial(qc)
    pm, qm = pm * A / qm[0], qm / qm[0]
    f32 = np.float32
    k = np.arange(len(pm))
    pt, qt = (pm / A ** (2 * k + 1)).astype(f32), (qm / A ** (2 * k)).astype(f32)
    ps, qs = (pt / (4.0 * 4.0**k)).astype(f32), (qt / 4.0**k).astype(f32)
    print(f"A = {A}: approximation error {e:.3e}")
    print("TANH_P =", [float(v) for v in pt])
    print("TANH_Q =", [float(v) for v in qt])
    print("SIGMOID_P =", [float(v) for v in ps])
    print("SIGMOID_Q =", [float(v) for v in qs])

    def fma(x, y, z):
        return (x.astype(np.float64) * y + z).astype(f32)

    def rational(x, pc, qc, lim, out):
        x = np.clip(x, f32(-lim), f32(lim)).astype(f32)
        s = (x * x).astype(f32)
        s2 = (s * s).astype(f32)

        def estrin(c):
            c = [np.full_like(s, v) for v in c]
            lo = fma(c[1], s, c[0])
            hi = fma(c[4], s2, fma(c[3], s, c[2]))
            return fma(s2, hi, lo)

        r = ((x * estrin(pc)).astype(f32) / estrin(qc)).astype(f32)
        return np.clip(r, f32(-out), f32(out)).astype(f32)

    g = np.concatenate([np.linspace(0, 4 * A, 4000001), np.logspace(-30, 0, 10000)])
    x = np.concatenate([g, -g]).astype(f32)
    xd = x.astype(np.float64)
    t = rational(x, pt, qt, A, 1.0)
    err = np.abs(t.astype(np.float64) - np.tanh(xd))
    print(f"f32 tanh max abs error {err.max():.3e} at {x[err.argmax()]}")
    sg = (rational(x, ps, qs, 2 * A, 0.5) + f32(0.5)).astype(f32)
    err = np.abs(sg.astype(np.float64) - 0.5 * (1 + np.tanh(xd / 2)))
    print(f"f32 sigmoid max abs error {err.max():.3e} at {x[err.argmax()]}")


if __name__ == "__main__":
    main()
