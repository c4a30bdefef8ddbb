"""Cases ``batchnorm2d.*``, ``pool.*`` and ``linear.*``: the stateless layer kernels of SPEC §3
(:mod:`refsnn.kernels.batchnorm`, :mod:`refsnn.kernels.pool`, :mod:`refsnn.kernels.linear`), each
checked against a NumPy oracle written out from the equations. One module for the three because
the manifest lists their cases interleaved per dtype."""
from __future__ import annotations

import numpy as np

from refsnn.kernels.batchnorm import batchnorm2d_backward, batchnorm2d_forward
from refsnn.kernels.linear import linear_backward, linear_forward
from refsnn.kernels.pool import avgpool2d_backward, avgpool2d_forward, global_avgpool_backward, global_avgpool_forward
from refsnn.vectors.case import Case

PREFIXES = ("batchnorm2d.", "pool.", "linear.")


def _bn_compute(params, inp):
    rm, rv = inp["running_mean"].copy(), inp["running_var"].copy()
    training = params["training"]
    y, ctx = batchnorm2d_forward(inp["x"], inp["gamma"], inp["beta"], rm, rv, training=training,
                                 momentum=params["momentum"], eps=params["eps"])
    out = {"y": y, "running_mean": rm, "running_var": rv}
    if training:
        dx, dg, db = batchnorm2d_backward(inp["dy"], ctx)
        out.update(dx=dx, dgamma=dg, dbeta=db)
    return out


def _bn_oracle(params, inp):
    x = inp["x"].astype(np.float64)
    g, b = inp["gamma"].astype(np.float64), inp["beta"].astype(np.float64)
    eps, m = params["eps"], params["momentum"]
    c = (None, slice(None), None, None)
    rm, rv = inp["running_mean"].astype(np.float64), inp["running_var"].astype(np.float64)
    dt = inp["x"].dtype
    if not params["training"]:
        y = g[c] * (x - rm[c]) / np.sqrt(rv[c] + eps) + b[c]
        return {"y": y.astype(dt), "running_mean": inp["running_mean"], "running_var": inp["running_var"]}
    n = x.shape[0] * x.shape[2] * x.shape[3]
    mu = x.mean(axis=(0, 2, 3))
    var = x.var(axis=(0, 2, 3))
    xhat = (x - mu[c]) / np.sqrt(var[c] + eps)
    y = g[c] * xhat + b[c]
    dy = inp["dy"].astype(np.float64)
    dbeta = dy.sum(axis=(0, 2, 3))
    dgamma = (dy * xhat).sum(axis=(0, 2, 3))
    dxhat = dy * g[c]
    dx = (dxhat - dxhat.mean(axis=(0, 2, 3))[c] - xhat * (dxhat * xhat).mean(axis=(0, 2, 3))[c]) / np.sqrt(var[c] + eps)
    return {"y": y.astype(dt), "running_mean": ((1 - m) * rm + m * mu).astype(dt),
            "running_var": ((1 - m) * rv + m * var * n / (n - 1)).astype(dt),
            "dx": dx.astype(dt), "dgamma": dgamma.astype(dt), "dbeta": dbeta.astype(dt)}


def _pool_compute(params, inp):
    x, k = inp["x"], params["k"]
    y = avgpool2d_forward(x, k)
    dx = avgpool2d_backward(inp["dy"], k)
    if dx.shape != x.shape:  # rows/columns dropped by the floor get zero gradient
        full = np.zeros_like(x)
        full[:, :, :dx.shape[2], :dx.shape[3]] = dx
        dx = full
    gy = global_avgpool_forward(x)
    gdx = global_avgpool_backward(inp["dgy"], x.shape[2:])
    return {"y": y, "dx": dx, "gap_y": gy, "gap_dx": gdx}


def _pool_oracle(params, inp):
    x, k = inp["x"], params["k"]
    N, C, H, W = x.shape
    Ho, Wo = H // k, W // k
    xc = x[:, :, :Ho * k, :Wo * k].reshape(N, C, Ho, k, Wo, k)
    y = xc.mean(axis=(3, 5), dtype=np.float64).astype(x.dtype)
    dx = np.zeros_like(x)
    dx[:, :, :Ho * k, :Wo * k] = np.repeat(np.repeat(inp["dy"].astype(np.float64) / (k * k), k, axis=2), k, axis=3)
    gy = x.mean(axis=(2, 3), dtype=np.float64).astype(x.dtype)
    gdx = np.broadcast_to((inp["dgy"].astype(np.float64) / (H * W))[:, :, None, None], x.shape).astype(x.dtype)
    return {"y": y, "dx": dx, "gap_y": gy, "gap_dx": gdx}


def _linear_compute(params, inp):
    b = inp.get("b")
    y = linear_forward(inp["x"], inp["w"], b)
    dx, dw, db = linear_backward(inp["dy"], inp["x"], inp["w"], b is not None)
    out = {"y": y, "dx": dx, "dw": dw}
    if db is not None:
        out["db"] = db
    return out


def _linear_oracle(params, inp):
    x, w, dy = (inp[k].astype(np.float64) for k in ("x", "w", "dy"))
    dt = inp["x"].dtype
    out = {"y": x @ w.T, "dx": dy @ w, "dw": dy.T @ x}
    if "b" in inp:
        out["y"] = out["y"] + inp["b"]
        out["db"] = dy.sum(axis=0)
    return {k: v.astype(dt) for k, v in out.items()}


def cases() -> list[Case]:
    """The ``batchnorm2d.*``, ``pool.*`` and ``linear.*`` cases, in manifest order."""
    out = []
    for dtype in ("float32", "float64"):
        for training in (True, False):
            def make(rng, dtype=dtype):
                C = 3
                return {k: v.astype(dtype) for k, v in {
                    "x": rng.normal(0.5, 2.0, (6, C, 4, 5)), "gamma": rng.uniform(0.5, 1.5, C),
                    "beta": rng.normal(0, 0.5, C), "running_mean": rng.normal(0, 0.3, C),
                    "running_var": rng.uniform(0.5, 2.0, C), "dy": rng.standard_normal((6, C, 4, 5))}.items()}
            mode = "train" if training else "eval"
            out.append(Case(
                f"batchnorm2d.{mode}.{dtype}", "3",
                "SPEC §3 BatchNorm2d over (N = T*B, H, W) per channel: train y = gamma (x - mu)/sqrt(var + eps) "
                "+ beta (biased var), running_mean <- (1-m) running_mean + m mu, running_var <- (1-m) "
                "running_var + m var n/(n-1); eval uses the running statistics",
                f"BatchNorm2d forward{' and backward' if training else ''} in {mode} mode, eps 1e-5, momentum 0.1; "
                "outputs running_mean/running_var are the statistics after the call"
                + ("" if training else " (unchanged); dy unused"),
                {"training": training, "eps": 1e-5, "momentum": 0.1, "dtype": dtype,
                 "layout": "x, dy (N, C, H, W) with N = T*B folded; gamma, beta, running stats (C,)"},
                make, _bn_compute, oracle=_bn_oracle))

        def make_pool(rng, dtype=dtype):
            x = rng.standard_normal((4, 3, 4, 6))
            return {"x": x.astype(dtype), "dy": rng.standard_normal((4, 3, 2, 3)).astype(dtype),
                    "dgy": rng.standard_normal((4, 3)).astype(dtype)}

        out.append(Case(
            f"pool.avg2_gap.{dtype}", "3",
            "SPEC §3: average pooling k x k stride k, y[n,c,p,q] = mean_{i,j<k} x[n,c,pk+i,qk+j]; "
            "global average pooling y[n, c] = mean_{h,w} x[n, c, h, w]",
            "avgpool 2x2/2 of a 4x6 input forward/backward, and global average pooling forward/backward",
            {"k": 2, "dtype": dtype, "layout": "x (N, C, H, W); y/dy (N, C, H//k, W//k); gap_y/dgy (N, C)"},
            make_pool, _pool_compute, oracle=_pool_oracle))
        for bias in (True, False):
            def make_lin(rng, dtype=dtype, bias=bias):
                d = {"x": rng.standard_normal((6, 7)), "w": rng.standard_normal((4, 7)) * 0.4,
                     "dy": rng.standard_normal((6, 4))}
                if bias:
                    d["b"] = rng.standard_normal(4) * 0.1
                return {k: v.astype(dtype) for k, v in d.items()}

            out.append(Case(
                f"linear.{'bias' if bias else 'nobias'}.{dtype}", "1, 3",
                "SPEC §1: y = x W^T + b, W (out, in); dx = dy W, dW = dy^T x, db = sum_n dy",
                f"linear forward and backward, {'with' if bias else 'no'} bias",
                {"bias": bias, "dtype": dtype, "layout": "x (N, in), w (out, in), b (out,), y/dy (N, out)"},
                make_lin, _linear_compute, oracle=_linear_oracle))
    return out
