"""Cases ``conv2d.*``: 2-D convolution forward and backward (SPEC §3, :mod:`refsnn.kernels.conv`),
checked against the direct-loop oracle too."""
from __future__ import annotations

from refsnn.kernels.conv import conv2d_backward, conv2d_backward_ref, conv2d_forward, conv2d_forward_ref
from refsnn.vectors.case import Case

PREFIXES = ("conv2d.",)


def _conv_compute(params, inp):
    b = inp.get("b")
    y, ctx = conv2d_forward(inp["x"], inp["w"], b, stride=tuple(params["stride"]),
                            padding=tuple(params["padding"]))
    dx, dw, db = conv2d_backward(inp["dy"], ctx)
    out = {"y": y, "dx": dx, "dw": dw}
    if db is not None:
        out["db"] = db
    return out


def _conv_oracle(params, inp):
    b = inp.get("b")
    kw = dict(stride=tuple(params["stride"]), padding=tuple(params["padding"]))
    y = conv2d_forward_ref(inp["x"], inp["w"], b, **kw)
    dx, dw, db = conv2d_backward_ref(inp["dy"], inp["x"], inp["w"], has_bias=b is not None, **kw)
    out = {"y": y, "dx": dx, "dw": dw}
    if db is not None:
        out["db"] = db
    return out


def cases() -> list[Case]:
    """The ``conv2d.*`` cases, in manifest order."""
    configs = {
        # name: (x shape, w shape, stride, padding, bias)
        "k3s1p1": ((3, 2, 5, 6), (4, 2, 3, 3), (1, 1), (1, 1), True),
        "k3x2s2x1p0x1": ((2, 3, 7, 5), (2, 3, 3, 2), (2, 1), (0, 1), False),
    }
    out = []
    for dtype in ("float32", "float64"):
        for cname, (xs, ws, st, pd, bias) in configs.items():
            N, C, H, W = xs
            n_out, _, kh, kw = ws
            Ho, Wo = (H + 2 * pd[0] - kh) // st[0] + 1, (W + 2 * pd[1] - kw) // st[1] + 1

            def make(rng, xs=xs, ws=ws, bias=bias, dtype=dtype, yshape=(N, n_out, Ho, Wo)):
                d = {"x": rng.standard_normal(xs), "w": rng.standard_normal(ws) * 0.3,
                     "dy": rng.standard_normal(yshape)}
                if bias:
                    d["b"] = rng.standard_normal(ws[0]) * 0.1
                return {k: v.astype(dtype) for k, v in d.items()}

            out.append(Case(
                f"conv2d.{cname}.{dtype}", "1, 3",
                "SPEC §3: y[n,o,p,q] = b[o] + sum_{c,i,j} w[o,c,i,j] xpad[n,c,p*sh+i,q*sw+j] "
                "(cross-correlation, zero padding, PyTorch layouts); dW = dY col^T, dX = col2im(W^T dY), "
                "db = sum dY",
                f"conv2d forward and backward, kernel {kh}x{kw}, stride {st}, padding {pd}, "
                f"{'with' if bias else 'no'} bias; dy is the upstream gradient",
                {"stride": list(st), "padding": list(pd), "bias": bias, "dtype": dtype,
                 "layout": "x (N, C, H, W), w (O, C, kh, kw), b (O,), y/dy (N, O, Ho, Wo)"},
                make, _conv_compute, oracle=_conv_oracle))
    return out
