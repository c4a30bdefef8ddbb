"""Every public kernel entry point under adversarial arguments (SPEC §1 "Bad input").

Each test draws a valid call, then (most of the time) spoils one argument: a wrong dtype (int64,
bool, float16, ...), a wrong rank, a changed or zero size, a non-contiguous view, a NaN/inf value,
a list instead of an array; outputs, workspaces and in-place state in addition read-only,
non-contiguous, too wide, too narrow, int64, or sharing memory with an input. The call must then
either give the oracle's answer (spikes and counts exactly, floats to a tight tolerance) or raise
``ValueError``/``TypeError`` whose message names the spoiled argument — never crash, hang or
silently truncate. The segfault reproducers run in a subprocess so that a regression fails the test
instead of killing pytest.
"""
from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from refsnn.kernels import batchnorm as bn
from refsnn.kernels import conv, cuba, lif, linear, pool, rectify
from refsnn.kernels import surrogate as sg
from tests.strategies import (
    conv_cases_bounded,
    dtypes,
    nonfinite_values,
    rng_from,
    rsnn_sizes,
    seeds,
    time_major_shapes,
)

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: what may be done to an input array
#: spoils that change a shape: the error may name another argument the shape must match
RESHAPING = ("size", "zero", "ndim+", "ndim-", "wider", "narrower", "huge")
INPUT_SPOILS = ["none", "dtype", "ndim+", "ndim-", "size", "zero", "noncontig", "nonfinite", "list",
                "readonly"]
#: ... and to an array the kernel writes (out=, state)
OUTPUT_SPOILS = ["none", "dtype", "int64", "wider", "narrower", "noncontig", "readonly", "list",
                 "huge", "alias"]


# ---------------------------------------------------------------------------------------------
# harness
# ---------------------------------------------------------------------------------------------
def spoil(a: np.ndarray, how: str, rng: np.random.Generator, *, bad=np.nan, alias=None):
    """``a`` spoiled as ``how`` says (a new array or view; ``a`` is not modified)."""
    if how == "none":
        return a
    if how == "dtype":
        with np.errstate(invalid="ignore", over="ignore"):
            return a.astype([np.int64, np.int32, np.bool_, np.float16, np.complex64][int(rng.integers(5))])
    if how == "int64":
        with np.errstate(invalid="ignore"):
            return a.astype(np.int64)
    if how == "ndim+":
        return a[..., None]
    if how == "ndim-":
        return a.reshape(a.shape[:-2] + (a.shape[-2] * a.shape[-1],)) if a.ndim >= 2 else a[:1].reshape(())
    if how in ("size", "wider", "narrower"):
        if a.ndim == 0:
            return a.reshape(1, 1)
        ax = int(rng.integers(a.ndim))
        n = a.shape[ax] + (1 if how == "wider" else -1 if how == "narrower" else int(rng.choice([-1, 1])))
        shape = a.shape[:ax] + (max(n, 0),) + a.shape[ax + 1:]
        return np.zeros(shape, a.dtype)
    if how == "huge":   # the segfault reproducer's shape class: far wider on the last axis
        return np.zeros(a.shape[:-1] + (a.shape[-1] + 100_000,), a.dtype) if a.ndim else a.reshape(1, 1)
    if how == "zero":
        return np.zeros((0,) + a.shape[1:], a.dtype) if a.ndim else a.reshape(0)
    if how == "noncontig":
        big = np.zeros(a.shape + (2,), a.dtype)
        big[..., 0] = a
        return big[..., 0]
    if how == "nonfinite":
        if a.dtype.kind != "f" or a.size == 0:
            return a
        b = a.copy()
        b.flat[int(rng.integers(b.size))] = bad
        return b
    if how == "list":
        return a.tolist()
    if how == "readonly":
        b = a.copy()
        b.setflags(write=False)
        return b
    if how == "alias":
        return alias if alias is not None else a
    raise AssertionError(how)


def names_in(msg: str, names) -> bool:
    return any(re.search(rf"(?<![\w\[])({re.escape(n)})(?![\w])", msg) for n in names)


def run(fn):
    """``("ok", result)`` or ``("err", exception)`` for ValueError/TypeError; anything else propagates."""
    try:
        return "ok", fn()
    except (ValueError, TypeError) as e:
        return "err", e


def check_outcome(got, want, arg_names, spoiled, *, exact=(), rtol=1e-6, atol=1e-6):
    """``got`` from the kernel, ``want`` from the oracle (both from :func:`run`).

    A kernel error must name an argument (the spoiled one if one was spoiled, else any); a kernel
    result must equal the oracle's (which must then have succeeded too)."""
    kind, val = got
    if kind == "err":
        msg = str(val)
        expect = ([spoiled] if isinstance(spoiled, str) else list(spoiled)) if spoiled else arg_names
        assert names_in(msg, expect), f"error does not name {expect}: {type(val).__name__}: {msg}"
        return
    wkind, wval = want
    assert wkind == "ok", f"kernel accepted what the oracle refused ({wval}), spoiled={spoiled}"
    got_t = val if isinstance(val, tuple) else (val,)
    want_t = wval if isinstance(wval, tuple) else (wval,)
    assert len(got_t) == len(want_t)
    for i, (a, b) in enumerate(zip(got_t, want_t)):
        if b is None or a is None:
            assert a is None and b is None
            continue
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == b.shape and a.dtype == b.dtype, (i, a.shape, b.shape, a.dtype, b.dtype)
        if i in exact or a.dtype.kind in "biu":
            np.testing.assert_array_equal(a, b)
        else:
            np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


def tol(dtype):
    return dict(rtol=2e-4, atol=2e-4) if np.dtype(dtype) == np.float32 else dict(rtol=1e-9, atol=1e-9)


spoils_in = st.sampled_from(INPUT_SPOILS)
spoils_out = st.sampled_from(OUTPUT_SPOILS)


# ---------------------------------------------------------------------------------------------
# LIF and surrogates (§2.1, §2.2)
# ---------------------------------------------------------------------------------------------
@FUZZ
@given(shape=time_major_shapes, dtype=dtypes, seed=seeds, target=st.sampled_from(["x", "out0", "out1"]),
       how_in=spoils_in, how_out=spoils_out, bad=nonfinite_values, relaxed=st.booleans(),
       preset=st.sampled_from(sorted(lif.PRESETS)))
def test_fuzz_lif_forward(shape, dtype, seed, target, how_in, how_out, bad, relaxed, preset):
    rng = rng_from(seed)
    p = lif.PRESETS[preset]
    x = rng.normal(0.4, 0.8, size=shape).astype(dtype)
    out = [np.empty_like(x), np.empty_like(x)]
    spoiled = None
    if target == "x":
        x = spoil(x, how_in, rng, bad=bad)
        spoiled = "x" if how_in != "none" else None
        out = [np.empty(np.shape(x), getattr(x, "dtype", dtype)) for _ in range(2)] if how_in in (
            "none", "size", "zero", "noncontig", "readonly", "ndim+", "ndim-") else out
    else:
        k = int(target[-1])
        out[k] = spoil(out[k], how_out, rng, alias=x if k == 0 else out[0])
        spoiled = f"out[{k}]" if how_out != "none" else None
    got = run(lambda: lif.lif_forward(x, p, relaxed=relaxed, out=tuple(out)))
    want = run(lambda: lif.lif_forward_ref(x, p, relaxed=relaxed))
    if got[0] == "ok" and want[0] == "err" and how_in == "nonfinite":
        pytest.fail("NaN/inf input accepted")
    check_outcome(got, want, ["x", "out[0]", "out[1]", "out"], spoiled,
                  exact=() if relaxed else (0, 1), **tol(dtype))


@FUZZ
@given(shape=time_major_shapes, dtype=dtypes, seed=seeds, target=st.sampled_from(["grad_s", "h", "out"]),
       how_in=spoils_in, how_out=spoils_out, bad=nonfinite_values, relaxed=st.booleans(),
       preset=st.sampled_from(sorted(lif.PRESETS)))
def test_fuzz_lif_backward(shape, dtype, seed, target, how_in, how_out, bad, relaxed, preset):
    rng = rng_from(seed)
    p = lif.PRESETS[preset]
    _, h = lif.lif_forward(rng.normal(0.4, 0.8, size=shape).astype(dtype), p, relaxed=relaxed)
    g = rng.normal(size=shape).astype(dtype)
    out = np.empty_like(g)
    spoiled = None
    if target in ("grad_s", "h"):
        if target == "grad_s":
            g = spoil(g, how_in, rng, bad=bad)
        else:
            h = spoil(h, how_in, rng, bad=bad)
        spoiled = target if how_in != "none" else None
        out = None
    else:
        out = spoil(out, how_out, rng, alias=h)
        spoiled = "out" if how_out != "none" else None
    g_before = np.array(g, copy=True) if isinstance(g, np.ndarray) else g
    got = run(lambda: lif.lif_backward(g, h, p, relaxed=relaxed, out=out))
    want = run(lambda: lif.lif_backward_ref(g_before, h, p, relaxed=relaxed))
    t = tol(dtype)
    check_outcome(got, want, ["grad_s", "h", "out"], spoiled, rtol=t["rtol"] * 10, atol=t["atol"] * 10)


def test_lif_inplace_backward_and_aliasing():
    x = rng_from(3).normal(0.4, 0.8, size=(4, 3, 5))
    s, h = lif.lif_forward(x)
    g = rng_from(4).normal(size=x.shape)
    want = lif.lif_backward(g, h)
    gg = g.copy()
    assert lif.lif_backward(gg, h, out=gg) is gg and np.array_equal(gg, want)   # documented in place
    with pytest.raises(ValueError, match=r"^out\b.*h"):
        lif.lif_backward(g, h, out=h)
    with pytest.raises(ValueError, match=r"^out\b.*grad_s"):
        big = np.concatenate([g, g])                 # out overlaps grad_s without being it
        lif.lif_backward(big[1:5], h, out=big[0:4])
    with pytest.raises(ValueError, match=r"^out\[0\].*out\[1\]"):
        buf = np.empty_like(x)
        lif.lif_forward(x, out=(buf, buf))
    with pytest.raises(TypeError, match=r"^out\b"):
        lif.lif_forward(x, out=np.empty_like(x))
    with pytest.raises(TypeError, match=r"^relaxed\b"):
        lif.lif_forward(x, relaxed="yes")
    with pytest.raises(ValueError, match=r"^params\b"):
        lif.lif_forward(x.astype(np.float32), lif.LIFParams(v_th=1e39, v_reset=None))


@FUZZ
@given(shape=time_major_shapes, dtype=dtypes, seed=seeds, how=spoils_in, bad=nonfinite_values,
       name=st.sampled_from(sg.NAMES), alpha=st.sampled_from([None, 0.5, 3.0, 1e39, -1.0, 0.0]),
       kind=st.sampled_from(["grad", "primitive"]))
def test_fuzz_surrogates(shape, dtype, seed, how, bad, name, alpha, kind):
    rng = rng_from(seed)
    x = spoil(rng.normal(size=shape).astype(dtype), how, rng, bad=bad)
    fn_nb, fn_ref = (sg.grad_nb, sg.grad) if kind == "grad" else (sg.primitive_nb, sg.primitive)
    got = run(lambda: fn_nb(name, x, alpha))
    want = run(lambda: fn_ref(name, x, alpha))
    spoiled = (["alpha"] if alpha is not None and (alpha <= 0 or (alpha > 3.5e38 and dtype == np.float32)) else []) \
        + (["x"] if how in ("dtype", "nonfinite", "list") else [])
    check_outcome(got, want, ["x", "alpha"], spoiled or None, **tol(dtype))
    if got[0] == "ok" and np.ndim(x) >= 2 and how == "none":   # a Fortran-ordered input too
        np.testing.assert_allclose(fn_nb(name, np.asfortranarray(x), alpha), fn_ref(name, x, alpha), **tol(dtype))


# ---------------------------------------------------------------------------------------------
# conv, BN, pooling, linear, rectifier (§3, §6.2)
# ---------------------------------------------------------------------------------------------
@FUZZ
@given(case=conv_cases_bounded(), dtype=dtypes, seed=seeds, bias=st.booleans(),
       target=st.sampled_from(["x", "w", "b", "dy", "padding", "stride", "workspace", "check_finite"]),
       how=spoils_in, bad=nonfinite_values, check_finite=st.booleans(), ws=st.booleans(),
       algorithm=st.sampled_from(conv.ALGORITHMS), density=st.sampled_from([0.05, 1.0]))
def test_fuzz_conv(case, dtype, seed, bias, target, how, bad, check_finite, ws, algorithm, density):
    rng = rng_from(seed)
    xs, wsh, stride, padding = case
    x = (rng.uniform(-1, 1, xs) * (rng.random(xs) < density)).astype(dtype)
    w = rng.uniform(-1, 1, wsh).astype(dtype)
    b = rng.uniform(-1, 1, wsh[0]).astype(dtype) if bias else None
    workspace = conv.Conv2dWorkspace() if ws else None
    kw = dict(stride=stride, padding=padding)
    spoiled = target if how not in ("none",) + RESHAPING else None
    cf = check_finite
    if target == "x":
        x = spoil(x, how, rng, bad=bad)
    elif target == "w":
        w = spoil(w, how, rng, bad=bad)
    elif target == "b" and b is not None:
        b = spoil(b, how, rng, bad=bad)
    elif target == "padding" and how != "none":
        opts = [10**5, -1, 1.5, "1", (1, 2, 3), wsh[2]]
        kw["padding"] = opts[int(rng.integers(len(opts)))]
    elif target == "stride" and how != "none":
        opts = [0, -2, 2.0, None, (1,)]
        kw["stride"] = opts[int(rng.integers(len(opts)))]
    elif target == "workspace" and how != "none":
        workspace = {}
    elif target == "check_finite" and how != "none":
        cf = "no"
    else:
        spoiled = None
    got = run(lambda: conv.conv2d_forward(x, w, b, check_finite=cf, workspace=workspace, algorithm=algorithm, **kw))
    want = run(lambda: conv.conv2d_forward_ref(x, w, b, **kw))
    if got[0] == "ok" and want[0] == "err" and not check_finite and how == "nonfinite":
        return   # documented: check_finite=False lets NaN/inf through (the layers' contract)
    if algorithm != "gemm" and target == "w" and how == "nonfinite" and not check_finite:
        return   # documented: the event path skips zero inputs, so 0 * inf is not NaN there
    check_outcome((got[0], got[1][0] if got[0] == "ok" else got[1]), want,
                  ["x", "w", "b", "padding", "stride", "workspace", "check_finite"], spoiled, **tol(dtype))
    if got[0] != "ok" or want[0] != "ok":
        return
    y, ctx = got[1]
    dy = rng.uniform(-1, 1, y.shape).astype(dtype)
    if target == "dy":
        dy = spoil(dy, how, rng, bad=bad)
    got_b = run(lambda: conv.conv2d_backward(dy, ctx, check_finite=check_finite, workspace=workspace))
    want_b = run(lambda: conv.conv2d_backward_ref(dy, x, w, has_bias=b is not None, **kw))
    if got_b[0] == "ok" and want_b[0] == "err" and not check_finite and how == "nonfinite":
        return
    check_outcome(got_b, want_b, ["dy", "ctx"], "dy" if target == "dy" and how != "none" else None,
                  **tol(dtype))


def test_conv_padding_is_bounded():
    x = np.ones((1, 1, 4, 4), np.float32)
    w = np.ones((1, 1, 3, 3), np.float32)
    for p in (10**5, 3, (0, 3), (3, 0)):
        with pytest.raises(ValueError, match=r"^padding\b.*kernel"):
            conv.conv2d_forward(x, w, padding=p)
        with pytest.raises(ValueError, match=r"^padding\b"):
            conv.conv2d_forward_ref(x, w, padding=p)
    y, _ = conv.conv2d_forward(x, w, padding=2)          # the largest accepted: full correlation
    assert y.shape == (1, 1, 6, 6)


def test_conv_overflow_and_forged_context():
    x = np.full((1, 1, 3, 3), 1e30, np.float32)
    w = np.full((1, 1, 3, 3), 1e30, np.float32)
    with pytest.raises(ValueError, match=r"^x\b.*overflow"):
        conv.conv2d_forward(x, w)
    with np.errstate(over="ignore"):
        y, _ = conv.conv2d_forward(x, w, check_finite=False)   # the layers' contract: no extra pass
    assert np.isinf(y).all()
    y, ctx = conv.conv2d_forward(np.ones((1, 1, 3, 3), np.float32), w)
    with pytest.raises(ValueError, match=r"^dy\b.*overflow"):
        conv.conv2d_backward(np.full(y.shape, 1e30, np.float32), ctx)
    ctx.stride = (1, 0)
    with pytest.raises(ValueError, match=r"^ctx\b"):
        conv.conv2d_backward(np.ones_like(y), ctx)
    y, ctx = conv.conv2d_forward(np.ones((2, 1, 3, 3), np.float32), w)
    ctx.x_shape = (20, 1, 3, 3)                           # would make col2im write out of bounds
    with pytest.raises(ValueError, match=r"^(ctx|dy)\b"):
        conv.conv2d_backward(np.ones((20, 1, 1, 1), np.float32), ctx)


@FUZZ
@given(shape=st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 4), st.integers(1, 4)),
       dtype=dtypes, seed=seeds, training=st.booleans(),
       target=st.sampled_from(["x", "gamma", "beta", "running_mean", "running_var", "dy"]),
       how=spoils_in, bad=nonfinite_values, check_finite=st.booleans(), scale=st.sampled_from([1.0, 1e30]))
def test_fuzz_batchnorm(shape, dtype, seed, training, target, how, bad, check_finite, scale):
    rng = rng_from(seed)
    C = shape[1]
    x = (rng.normal(size=shape) * scale).astype(dtype)
    g, b = rng.uniform(0.5, 2, C).astype(dtype), rng.normal(size=C).astype(dtype)
    rm, rv = rng.normal(size=C).astype(dtype), rng.uniform(0.5, 2, C).astype(dtype)
    args = {"x": x, "gamma": g, "beta": b, "running_mean": rm, "running_var": rv}
    if target != "dy":
        args[target] = spoil(args[target], how, rng, bad=bad)
    if how == "readonly" and target in ("running_mean", "running_var") and not training:
        how = "none"                                   # eval does not write them: read-only is fine
    harmless = ("none", "noncontig") + (("readonly",) if target not in ("running_mean", "running_var") else ())
    spoiled = target if how not in harmless + RESHAPING and target != "dy" else None
    a = dict(args)
    ref_args = {k: (np.array(v, copy=True) if isinstance(v, np.ndarray) else v) for k, v in a.items()}
    with np.errstate(over="ignore", invalid="ignore"):
        got = run(lambda: bn.batchnorm2d_forward(*a.values(), training=training, check_finite=check_finite))
        want = run(lambda: bn.batchnorm2d_forward_ref(*ref_args.values(), training=training))
    if got[0] == "err":
        msg = str(got[1])
        ok = [spoiled] if spoiled else ["x", "gamma", "beta", "running_mean", "running_var"]
        if scale > 1 or (how == "nonfinite" and not check_finite):
            ok = ok + ["x", "running_mean", "running_var"]
        assert names_in(msg, ok), msg
        if isinstance(a["running_mean"], np.ndarray) and a["running_mean"].shape == (C,):
            pass
        return
    if want[0] == "err" and how == "nonfinite" and not check_finite and not training:
        return                                          # eval, check_finite=False: NaN flows through
    assert want[0] == "ok", (want[1], spoiled)
    y, ctx = got[1]
    yr, rmr, rvr = want[1]
    assert np.all(np.isfinite(a["running_mean"])) and np.all(np.isfinite(a["running_var"]))
    np.testing.assert_allclose(y, yr, **tol(dtype))
    np.testing.assert_allclose(a["running_mean"], rmr, **tol(dtype))
    np.testing.assert_allclose(a["running_var"], rvr, **tol(dtype))
    dy = rng.normal(size=shape).astype(dtype)
    if target == "dy":
        dy = spoil(dy, how, rng, bad=bad)
    got_b = run(lambda: bn.batchnorm2d_backward(dy, ctx, check_finite=check_finite))
    want_b = run(lambda: bn.batchnorm2d_backward_ref(dy, ref_args["x"], ref_args["gamma"], ref_args["running_mean"],
                                                     ref_args["running_var"], training=training))
    if got_b[0] == "ok" and want_b[0] == "err" and not check_finite and how == "nonfinite":
        return
    t = tol(dtype)
    check_outcome(got_b, want_b, ["dy", "ctx"], "dy" if target == "dy" and how != "none" else None,
                  rtol=t["rtol"] * 10, atol=t["atol"] * 10 * max(1.0, scale ** 0))


def test_batchnorm_running_stats_overflow_is_refused_and_leaves_them():
    x = np.array([-3e38, 3e38, -3e38, 3e38], np.float32).reshape(4, 1, 1, 1)
    rm, rv = np.zeros(1, np.float32), np.ones(1, np.float32)
    with pytest.raises(ValueError, match=r"^(running_var|x)\b"):
        bn.batchnorm2d_forward(x, np.ones(1, np.float32), np.zeros(1, np.float32), rm, rv, training=True,
                               check_finite=False)
    assert rm.tolist() == [0.0] and rv.tolist() == [1.0]
    rs = np.zeros(2, np.float32)
    with pytest.raises(ValueError, match=r"^running_mean\b.*running_var"):
        bn.batchnorm2d_forward(np.ones((2, 2, 1, 1), np.float32), np.ones(2, np.float32),
                               np.zeros(2, np.float32), rs, rs, training=True)
    g = np.ones(2, np.float32)
    with pytest.raises(ValueError, match=r"^running_var\b.*gamma"):
        bn.batchnorm2d_forward(np.ones((2, 2, 1, 1), np.float32), g, np.zeros(2, np.float32),
                               np.zeros(2, np.float32), g, training=True)


@FUZZ
@given(shape=st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(0, 3), st.integers(0, 3)),
       k=st.sampled_from([1, 2, 3, 0, -1, 2.0, True]), dtype=dtypes, seed=seeds, how=spoils_in,
       bad=nonfinite_values, which=st.sampled_from(["avg", "gap"]), check_finite=st.booleans())
def test_fuzz_pool(shape, k, dtype, seed, how, bad, which, check_finite):
    rng = rng_from(seed)
    N, C, H, W = shape
    if isinstance(k, int) and not isinstance(k, bool) and k > 0:
        shape = (N, C, H * k, W * k)
    x = spoil(rng.normal(size=shape).astype(dtype), how, rng, bad=bad)
    spoiled = "x" if how not in ("none", "noncontig", "readonly", "zero", "size") else None
    if which == "avg":
        got = run(lambda: pool.avgpool2d_forward(x, k, check_finite=check_finite))
        want = run(lambda: pool.avgpool2d_forward_ref(x, k))
        names = ["x", "k"]
    else:
        got = run(lambda: pool.global_avgpool_forward(x, check_finite=check_finite))
        want = run(lambda: pool.global_avgpool_forward_ref(x))
        names = ["x"]
    if got[0] == "ok" and want[0] == "err" and not check_finite and how == "nonfinite":
        return
    check_outcome(got, want, names, spoiled if got[0] == "err" and spoiled and names_in(str(got[1]), ["x"]) else None,
                  **tol(dtype))
    if got[0] == "ok" and how == "none":
        y = got[1]
        dy = spoil(rng.normal(size=y.shape).astype(dtype), "noncontig", rng)
        if which == "avg":
            check_outcome(run(lambda: pool.avgpool2d_backward(dy, k)), run(lambda: pool.avgpool2d_backward_ref(dy, k)),
                          ["dy", "k"], None, **tol(dtype))
        else:
            hw = x.shape[2:]
            check_outcome(run(lambda: pool.global_avgpool_backward(dy, hw)),
                          run(lambda: pool.global_avgpool_backward_ref(dy, hw)), ["dy", "hw"], None, **tol(dtype))


@FUZZ
@given(n=st.integers(0, 4), fin=st.integers(1, 5), fout=st.integers(1, 5), dtype=dtypes, seed=seeds,
       bias=st.booleans(), target=st.sampled_from(["x", "w", "b", "dy", "has_bias"]), how=spoils_in,
       bad=nonfinite_values, scale=st.sampled_from([1.0, 1e20]))
def test_fuzz_linear(n, fin, fout, dtype, seed, bias, target, how, bad, scale):
    rng = rng_from(seed)
    a = {"x": (rng.normal(size=(n, fin)) * scale).astype(dtype),
         "w": (rng.normal(size=(fout, fin)) * scale).astype(dtype),
         "b": rng.normal(size=fout).astype(dtype) if bias else None}
    dy = rng.normal(size=(n, fout)).astype(dtype) * np.asarray(scale, dtype)
    has_bias = bias
    if target in a and a[target] is not None:
        a[target] = spoil(a[target], how, rng, bad=bad)
    elif target == "dy":
        dy = spoil(dy, how, rng, bad=bad)
    elif target == "has_bias" and how != "none":
        has_bias = "yes"
    spoiled = target if how not in ("none",) + RESHAPING and (target != "b" or bias) else None
    with np.errstate(over="ignore", invalid="ignore"):
        got = run(lambda: linear.linear_forward(a["x"], a["w"], a["b"]))
        want = run(lambda: linear.linear_forward_ref(a["x"], a["w"], a["b"]))
        if got[0] == "err" and scale > 1 and names_in(str(got[1]), ["x"]):
            return   # an overflowing product is refused
        check_outcome(got, want, ["x", "w", "b"], spoiled if target in a else None, **tol(dtype))
        if got[0] != "ok":
            return
        assert np.isfinite(got[1]).all()
        got_b = run(lambda: linear.linear_backward(dy, a["x"], a["w"], has_bias))
        want_b = run(lambda: linear.linear_backward_ref(dy, a["x"], a["w"], has_bias))
        if got_b[0] == "err" and scale > 1 and names_in(str(got_b[1]), ["dy"]):
            return
    check_outcome(got_b, want_b, ["dy", "x", "w", "has_bias"],
                  spoiled if target in ("dy", "has_bias") else None, rtol=1e-4, atol=1e-4 * scale)


@FUZZ
@given(shape=time_major_shapes, dtype=dtypes, seed=seeds, how=spoils_in, bad=nonfinite_values,
       sign=st.sampled_from([1, -1, 0, 2, True, 1.0, -1.0, "1", None]), mask_how=spoils_in)
def test_fuzz_rectify(shape, dtype, seed, how, bad, sign, mask_how):
    rng = rng_from(seed)
    x = spoil(rng.normal(size=shape).astype(dtype), how, rng, bad=bad)
    sign_bad = sign not in (1, -1) or isinstance(sign, bool)
    spoiled = (["sign"] if sign_bad else []) + (["x"] if how in ("dtype", "nonfinite", "list") else [])
    got = run(lambda: rectify.rectify_forward(x, sign))
    want = run(lambda: rectify.rectify_forward_ref(x, sign))
    check_outcome(got, want, ["x", "sign"], spoiled or None, exact=(0, 1))
    if got[0] != "ok":
        return
    y, mask = got[1]
    m = spoil(mask, mask_how, rng, bad=bad)
    dy = rng.normal(size=y.shape).astype(y.dtype)
    spoiled = "mask" if mask_how in ("dtype", "ndim+", "ndim-", "size", "zero", "list") and np.size(x) else None
    check_outcome(run(lambda: rectify.rectify_backward(dy, m, sign)),
                  run(lambda: rectify.rectify_backward_ref(dy, m, sign)),
                  ["dy", "mask", "sign"], spoiled if spoiled else None, exact=(0,))


# ---------------------------------------------------------------------------------------------
# CuBa-LIF RSNN (§2.3, §5.3)
# ---------------------------------------------------------------------------------------------
STATE_NAMES = ["v", "i_syn", "rate", "s"]


@FUZZ
@given(size=rsnn_sizes.filter(lambda s: s[0] <= 70), B=st.integers(1, 3), d=st.integers(1, 4),
       d_out=st.integers(1, 3), dtype=dtypes, seed=seeds,
       target=st.sampled_from(["u", "C_in", "C_h", "C_out", "active", "out", "v", "i_syn", "rate", "s"]),
       how_in=spoils_in, how_out=spoils_out, bad=nonfinite_values, parallel=st.booleans(),
       kernel=st.sampled_from(["packed", "float"]))
def test_fuzz_rsnn_step(size, B, d, d_out, dtype, seed, target, how_in, how_out, bad, parallel, kernel):
    n, n_exc = size
    rng = rng_from(seed)
    if kernel == "packed":
        cfg = cuba.CubaConfig(n_neurons=n, exc_ratio=n_exc / n, sim_time=2.0)
        u = rng.normal(size=(B, 2 * d)).astype(dtype)
        C_in = rng.random((B, 2 * d, n)) < 0.5
        C_h = rng.random((B, n, n)) < 0.5
        C_out = rng.random((B, n, d_out)) < 0.5
    else:
        cfg = cuba.CubaConfig(n_neurons=n, dale=False, sparsity=1.0, sim_time=2.0)
        u = rng.normal(size=(B, d)).astype(dtype)
        C_in = rng.normal(size=(B, d, n)).astype(dtype)
        C_h = rng.normal(size=(B, n, n)).astype(dtype)
        C_out = rng.normal(size=(B, n, d_out)).astype(dtype)
    dense = cuba.initial_state(cfg, rng.random((B, n)), dtype)
    dense = (dense[0], dense[1], rng.normal(size=(B, n)).astype(dtype) * 0.1, dense[3])
    active = rng.random(B) < 0.7
    out = np.empty((B, d_out), dtype)
    ins = {"u": u, "C_in": C_in, "C_h": C_h, "C_out": C_out, "active": active}
    state = list(dense) if kernel == "float" else list(dense[:3]) + [cuba.pack_spikes(dense[3], cfg.n_exc)]
    spoiled = None
    if target in ins and how_in != "none":
        ins[target] = spoil(ins[target], how_in, rng, bad=bad)
        spoiled = target if how_in not in RESHAPING else None
    elif target == "out" and how_out != "none":
        out = spoil(out, how_out, rng, alias=state[0])
        spoiled = "out"
    elif target in STATE_NAMES and how_out != "none":
        i = STATE_NAMES.index(target)
        state[i] = spoil(state[i], how_out, rng, alias=state[(i + 1) % 4])
        spoiled = target if target != "s" else ("s", "sbits")
    ref_state = tuple(np.array(a, copy=True) if isinstance(a, np.ndarray) else a for a in state)
    ref_ins = {k: (np.array(v, copy=True) if isinstance(v, np.ndarray) else v) for k, v in ins.items()}
    if kernel == "packed":
        def call():
            Chp = cuba.pack_hidden(ins["C_h"], cfg.n_exc) if isinstance(ins["C_h"], np.ndarray) and \
                ins["C_h"].dtype == bool and ins["C_h"].ndim == 3 else ins["C_h"]
            return cuba.cuba_env_step_packed(cfg, ins["u"], ins["C_in"], Chp, ins["C_out"], tuple(state),
                                             active=ins["active"], parallel=parallel, out=out)
        rs = ref_state
        if isinstance(rs[3], np.ndarray) and rs[3].dtype == np.uint64 and rs[3].ndim == 2:
            try:
                rs = rs[:3] + (cuba.unpack_spikes(rs[3], n, cfg.n_exc, dtype=dtype),)
            except (ValueError, TypeError):
                pass

        def ref():
            return cuba.cuba_env_step_ref(cfg, ref_ins["u"], ref_ins["C_in"], ref_ins["C_h"], ref_ins["C_out"], rs,
                                          active=ref_ins["active"])
    else:
        def call():
            return cuba.float_env_step(cfg, ins["u"], ins["C_in"], ins["C_h"], ins["C_out"], tuple(state),
                                       active=ins["active"], parallel=parallel, out=out)

        def ref():
            return cuba.float_env_step_ref(cfg, ref_ins["u"], ref_ins["C_in"], ref_ins["C_h"], ref_ins["C_out"],
                                           ref_state, active=ref_ins["active"])
    got = run(call)
    want = run(ref)
    names = ["u", "C_in", "C_h", "Chp", "C_out", "active", "out", "state", "v", "i_syn", "rate", "s", "sbits",
             "W_in", "W_h", "W_out"]
    if got[0] == "err":
        msg = str(got[1])
        expect = names if spoiled is None else ([spoiled] if isinstance(spoiled, str) else list(spoiled))
        if spoiled in ("C_in", "C_h", "C_out"):
            expect = expect + ["W_in", "W_h", "W_out", "Chp"]
        if target == "out" or target in STATE_NAMES:
            expect = expect + ["out", "state", "v", "i_syn", "rate", "s", "sbits"]   # alias pairs name both
        assert names_in(msg, expect), (spoiled, msg)
        return
    assert want[0] == "ok", (spoiled, want[1])
    act, nsp = got[1]
    (v2, i2, r2, s2), act_r, nsp_r = want[1]
    np.testing.assert_array_equal(act, act_r)          # bit-identical by construction (module notes)
    np.testing.assert_array_equal(nsp, nsp_r)
    np.testing.assert_array_equal(state[0], v2)
    np.testing.assert_array_equal(state[2], r2)
    if out is not None and target == "out":
        assert act is out


@FUZZ
@given(size=rsnn_sizes, B=st.integers(0, 3), dtype=dtypes, seed=seeds, how=spoils_in,
       which=st.sampled_from(["pack_hidden", "unpack_hidden", "pack_spikes", "unpack_spikes", "packed_matvec",
                              "popcount"]),
       n_exc_delta=st.sampled_from([0, 0, 0, 1, -1000]))
def test_fuzz_packing(size, B, dtype, seed, how, which, n_exc_delta):
    n, n_exc = size
    rng = rng_from(seed)
    ne = n_exc + n_exc_delta
    C = rng.random((B, n, n)) < 0.4
    s = ((rng.random((B, n)) < 0.5) * np.where(np.arange(n) < n_exc, 1.0, -1.0)).astype(dtype)
    Chp = cuba.pack_hidden(C, n_exc)
    sb = cuba.pack_spikes(s, n_exc)
    if which == "pack_hidden":
        arg = spoil(C, how, rng)
        got = run(lambda: cuba.pack_hidden(arg, ne))
        if got[0] == "ok":
            assert np.array_equal(cuba.unpack_hidden(got[1], np.shape(arg)[-1], ne), np.asarray(arg))
        names = ["C_h", "n_exc"]
    elif which == "unpack_hidden":
        arg = spoil(Chp, how, rng)
        got = run(lambda: cuba.unpack_hidden(arg, n, ne))
        if got[0] == "ok" and ne == n_exc and how in ("none", "noncontig", "readonly"):
            assert np.array_equal(got[1], C)
        names = ["Chp", "n_exc", "n_neurons"]
    elif which == "pack_spikes":
        arg = spoil(s, how, rng)
        got = run(lambda: cuba.pack_spikes(arg, ne))
        if got[0] == "ok" and ne == n_exc and how == "none":
            assert np.array_equal(got[1], sb)
        names = ["s", "n_exc"]
    elif which == "unpack_spikes":
        arg = spoil(sb, how, rng)
        got = run(lambda: cuba.unpack_spikes(arg, n, ne, dtype=dtype))
        if got[0] == "ok" and ne == n_exc and how in ("none", "noncontig", "readonly"):
            assert np.array_equal(got[1], s)
        names = ["sbits", "n_exc", "n_neurons", "dtype"]
    elif which == "packed_matvec":
        arg = spoil(sb, how, rng)
        got = run(lambda: cuba.packed_matvec(Chp, arg, ne))
        if got[0] == "ok":
            want = cuba.packed_matvec_ref(cuba.unpack_spikes(arg, n, ne, dtype=np.float64),
                                          cuba.unpack_hidden(Chp, n, ne))
            assert np.array_equal(got[1], want)
        names = ["sbits", "Chp", "n_exc"]
    else:
        arg = spoil(sb, how, rng)
        got = run(lambda: cuba.popcount64_ref(arg))
        if got[0] == "ok":
            assert got[1].tolist() == np.vectorize(lambda v: bin(int(v)).count("1"), otypes=[np.int64])(arg).tolist()
        names = ["x"]
    if got[0] == "err":
        assert names_in(str(got[1]), names), str(got[1])


# ---------------------------------------------------------------------------------------------
# regression tests of the findings
# ---------------------------------------------------------------------------------------------
_SEGFAULT_SCRIPT = textwrap.dedent("""
    import numpy as np
    from refsnn.kernels import cuba
    cfg = cuba.CubaConfig(n_neurons=8)
    rng = np.random.default_rng(0)
    B, d = 2, 3
    u = rng.standard_normal((B, 2 * d)).astype(np.float32)
    C_in = rng.random((B, 2 * d, 8)) < 0.5
    Chp = cuba.pack_hidden(rng.random((B, 8, 8)) < 0.5, cfg.n_exc)
    C_out = rng.random((B, 8, 4)) < 0.5
    fcfg = cuba.CubaConfig(n_neurons=8, dale=False, sparsity=1.0)
    W = [rng.standard_normal(s).astype(np.float32) for s in ((B, d, 8), (B, 8, 8), (B, 8, 4))]
    outs = [np.zeros((2, 30_000_000), np.float32), np.zeros((2, 3), np.float32), np.zeros((2, 4), np.int64),
            np.zeros((2, 4), np.float32)[:, ::-1], np.zeros((3, 4), np.float32)]
    for out in outs:
        for parallel in (False, True):
            for step in ("packed", "float"):
                try:
                    if step == "packed":
                        st = cuba.initial_state_packed(cfg, rng.random((B, 8)), np.float32)
                        cuba.cuba_env_step_packed(cfg, u, C_in, Chp, C_out, st, out=out, parallel=parallel)
                    else:
                        st = cuba.initial_state(fcfg, rng.random((B, 8)), np.float32)
                        cuba.float_env_step(fcfg, u[:, :d], *W, st, out=out, parallel=parallel)
                    print("ACCEPTED", step, out.shape, out.dtype)
                except (ValueError, TypeError) as e:
                    assert str(e).startswith("out"), e
    print("DONE")
""")


def test_too_wide_out_does_not_crash_the_interpreter():
    """``out`` wider than the action once segfaulted (exit 139); narrower/int64 truncated."""
    r = subprocess.run([sys.executable, "-c", _SEGFAULT_SCRIPT], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"exit {r.returncode}: {r.stderr[-2000:]}"
    assert "ACCEPTED" not in r.stdout and r.stdout.strip().endswith("DONE"), r.stdout


def test_state_arrays_are_checked_before_the_kernel_writes_them():
    cfg = cuba.CubaConfig(n_neurons=8)
    rng = rng_from(1)
    u = rng.normal(size=(2, 4)).astype(np.float32)
    C_in, C_out = rng.random((2, 4, 8)) < 0.5, rng.random((2, 8, 2)) < 0.5
    Chp = cuba.pack_hidden(rng.random((2, 8, 8)) < 0.5, cfg.n_exc)

    def state():
        return list(cuba.initial_state_packed(cfg, rng.random((2, 8)), np.float32))

    st = state()
    st[0].setflags(write=False)
    with pytest.raises(ValueError, match=r"^state v\b.*writeable"):
        cuba.cuba_env_step_packed(cfg, u, C_in, Chp, C_out, tuple(st))
    st = state()
    st[1] = st[0]
    with pytest.raises(ValueError, match=r"^state v\b.*i_syn"):
        cuba.cuba_env_step_packed(cfg, u, C_in, Chp, C_out, tuple(st))
    st = state()
    with pytest.raises(ValueError, match=r"^state v\b.*u"):
        cuba.cuba_env_step_packed(cfg, st[0][:, :4], C_in, Chp, C_out, tuple(st))
    st = state()
    st[3] = st[3].astype(np.int64)
    with pytest.raises(TypeError, match=r"^state sbits\b"):
        cuba.cuba_env_step_packed(cfg, u, C_in, Chp, C_out, tuple(st))
    with pytest.raises(TypeError, match=r"^state\b"):
        cuba.cuba_env_step_packed(cfg, u, C_in, Chp, C_out, tuple(state())[:3])
    with pytest.raises(TypeError, match=r"^parallel\b"):
        cuba.cuba_env_step_packed(cfg, u, C_in, Chp, C_out, tuple(state()), parallel="yes")
    with pytest.raises(TypeError, match=r"^cfg\b"):
        cuba.cuba_env_step_packed({"n_neurons": 8}, u, C_in, Chp, C_out, tuple(state()))


@pytest.mark.parametrize("field, value, exc", [
    ("v_th", float("nan"), ValueError), ("k_out", float("inf"), ValueError), ("v_reset", 1.0, ValueError),
    ("v_reset", 2.0, ValueError), ("dale", "no", TypeError), ("dale", 1, TypeError),
    ("n_neurons", 0, ValueError), ("n_neurons", 8.0, TypeError), ("exc_ratio", 1.5, ValueError),
    ("sparsity", 0.0, ValueError), ("sparsity", 2.0, ValueError), ("k_in", -0.1, ValueError),
    ("k_h", "1", TypeError), ("tau_m", float("inf"), ValueError), ("dt", 0.0, ValueError),
    ("dt", 1e-9, ValueError), ("sim_time", 0.1, ValueError),
])
def test_cuba_config_fields_are_validated(field, value, exc):
    with pytest.raises(exc, match=rf"^{field}\b|^sim_time\b"):
        cuba.CubaConfig(**{field: value})


def test_cuba_constants_that_overflow_the_dtype_are_refused():
    cfg = cuba.CubaConfig(k_in=1e38, tau_m=1e3)
    cfg.constants(4, np.float64)
    with pytest.raises(ValueError, match=r"^k_in\b"):
        cfg.constants(4, np.float32)
