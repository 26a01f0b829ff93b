#!/usr/bin/env python3
"""Fits the rational tanh of src/activation.rs (numpy only).

tanh(a) ~ u * P(s) / Q(s) on a in [0, A], u = a / A, s = u^2, P and Q of
degree 4 with Q(0) = 1 (the factor A is folded into P). The fit is a
linearised weighted least-squares minimax (Loeb / Lawson iterations) in a
Chebyshev basis on [0, 1]; the coefficients are then converted to the
monomial basis and rounded to f32. The script also evaluates the f32
formula as the kernels do (Estrin's scheme with FMA) on a dense grid and
prints the maximum absolute error, which src/activation.rs quotes.

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
    pf, qf = pm.astype(f32), qm.astype(f32)
    print(f"A = {A}: approximation error {e:.3e}")
    print("P =", [float(v) for v in pf])
    print("Q =", [float(v) for v in qf])

    def fma(x, y, z):
        return (x.astype(np.float64) * y + z).astype(f32)

    x = np.concatenate([np.linspace(0, 2 * A, 4000001), np.logspace(-30, 0, 10000)]).astype(f32)
    u = np.minimum((x * f32(1 / A)).astype(f32), f32(1))
    s = (u * u).astype(f32)
    s2 = (s * s).astype(f32)

    def estrin(c):
        c = [np.full_like(s, v) for v in c]
        lo = fma(c[1], s, c[0])
        hi = fma(c[4], s2, fma(c[3], s, c[2]))
        return fma(s2, hi, lo)

    t = np.minimum(((u * estrin(pf)).astype(f32) / estrin(qf)).astype(f32), f32(1))
    err = np.abs(t.astype(np.float64) - np.tanh(x.astype(np.float64)))
    print(f"f32 tanh max abs error {err.max():.3e} at {x[err.argmax()]}")


if __name__ == "__main__":
    main()
