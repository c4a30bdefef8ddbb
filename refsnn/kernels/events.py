"""Event-camera kernels (SPEC §4.3): binning events into frames, and an ideal event camera watching
a moving image (the simulated saccades of ``mnist5k-events``). Everything is integer arithmetic, so
every output is exact and bit-identical on every machine; the data sets that use these kernels (event
files, the saccade path and its constants) are :mod:`refsnn.datasets.events` and
:mod:`refsnn.datasets.saccades`.

Binning (:func:`bin_events`)
----------------------------
Events are integer columns ``x, y, t, p`` (``p > 0``: ON, channel 1; ``p <= 0``: OFF, channel 0).
With ``[t0, t1]`` the span and ``T`` the number of bins (``out.shape[0]``), event ``e`` goes to bin ::

    b(e) = min(T - 1, ((t_e - t0) * T) // (t1 - t0))        (b(e) = 0 when t1 == t0)

and ``out[b, c, y, x] += 1`` (float32 ``[T, 2, H, W]``, exact up to 2**24 events per entry); events
with ``t_e`` outside ``[t0, t1]`` are skipped. ``(t1 - t0) * T`` must fit in int64.
:func:`bin_events_batched` bins sample ``i = events[offsets[i]:offsets[i + 1]]`` into ``out[i]``.

Rendering (:func:`render`)
--------------------------
A :class:`Camera` sees an ``h x w`` uint8 image drawn at ``(offset, offset)`` on its ``height x
width`` canvas, displaced by ``(dy, dx) / subpix`` pixels (integers ``dy, dx``). With ``s_Y = (Y -
offset) * subpix - dy``, ``i_Y = floor(s_Y / subpix)``, ``f_Y = s_Y mod subpix`` (and the same for
``X``), the canvas intensity (units ``1 / subpix**2`` of an image level) is the bilinear
interpolation ::

    I[Y, X] = sum_{o, q in {0, 1}} w(o, f_Y) w(q, f_X) img[i_Y + o, i_X + q]   (0 outside the image)
    w(0, f) = subpix - f,   w(1, f) = f

Ideal DVS (:func:`dvs_events`)
------------------------------
The image moves through the displacements ``disp[k]`` (int64 ``(K + 1, 2)``, ``(dy, dx)``) at the
step boundaries ``k * dt``. Each pixel keeps a reference level ``r``, initialised to its intensity
at ``k = 0``. During step ``k`` its intensity goes linearly from ``I0`` to ``I1``; with ``theta`` the
threshold ::

    while I1 - r >= theta:  r += theta;  ON  event (p = 1) at t = k dt + ((r - I0) dt) // (I1 - I0)
    while r - I1 >= theta:  r -= theta;  OFF event (p = 0) at t = k dt + ((I0 - r) dt) // (I0 - I1)

so ``t`` lies in ``(k dt, (k + 1) dt]``. Events are ordered by step, then pixel (row-major), then
crossing.

The plain-NumPy oracles :func:`bin_events_ref`, :func:`render_ref` and :func:`dvs_events_ref` are
held exactly equal to the Numba kernels by the tests.
"""
from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from refsnn._checks import check_array, check_int

__all__ = ["Camera", "bin_events_ref", "render_ref", "dvs_events_ref", "bin_events", "bin_events_batched",
           "render", "dvs_events", "dvs_events_batched"]

_INT64_MAX = int(np.iinfo(np.int64).max)
_MARGIN = 64  # pixels added before a floor division so that its operand stays positive


class Camera(NamedTuple):
    """Geometry and event model of the simulated camera (module docstring), all integers."""

    height: int   #: canvas rows
    width: int    #: canvas columns
    offset: int   #: the image's top-left corner on the canvas, (offset, offset), in pixels
    subpix: int   #: displacements are in 1/subpix pixel
    theta: int    #: event threshold, in intensity units (1/subpix**2 of an image level)
    dt: int       #: duration of one step, microseconds


def _check_camera(cam) -> Camera:
    if not isinstance(cam, Camera):
        raise TypeError(f"cam: expected a refsnn.kernels.events.Camera, got {type(cam).__name__}")
    lows = {"height": 1, "width": 1, "offset": 0, "subpix": 1, "theta": 1, "dt": 1}
    return Camera(*(check_int(f"cam.{f}", getattr(cam, f), lo=lows[f]) for f in Camera._fields))


def _check_columns(x, y, t, p, height, width, t0, t1, n_bins, name="events"):
    """Integer 1-D columns of one length, coordinates inside ``height x width``, and a span whose
    ``(t1 - t0) * n_bins`` fits in int64."""
    n = None
    for f, v in zip("xytp", (x, y, t, p)):
        check_array(f"{name}.{f}", v, ndim=1, dtypes=None)
        if v.dtype.kind not in "iu":
            raise TypeError(f"{name}.{f}: expected an integer dtype, got {v.dtype}")
        if n is not None and len(v) != n:
            raise ValueError(f"{name}.{f}: expected {n} entries like {name}.x, got {len(v)}")
        n = len(v)
    for f, v, hi in (("x", x, width), ("y", y, height)):
        if v.size and (int(v.min()) < 0 or int(v.max()) >= hi):
            raise ValueError(f"{name}.{f}: expected 0 <= {f} < {hi}, got range [{v.min()}, {v.max()}]")
    t0 = check_int("t0", t0, lo=-_INT64_MAX - 1, hi=_INT64_MAX)
    t1 = check_int("t1", t1, lo=t0, hi=_INT64_MAX)
    if (t1 - t0) * n_bins > _INT64_MAX:
        raise ValueError(f"t1: a span of {t1 - t0} microseconds cut into {n_bins} bins overflows int64")
    return np.int64(t0), np.int64(t1)


def _check_frames(out, ndim):
    out = check_array("out", out, ndim=ndim, dtypes=(np.dtype(np.float32),))
    if out.shape[-3] != 2 or out.shape[-4] < 1:
        raise ValueError(f"out: expected [..., T >= 1, 2, H, W] frames, got shape {out.shape}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError("out: expected a writeable C-contiguous array")
    return out


# ---- oracles --------------------------------------------------------------------------------------

def bin_events_ref(x, y, t, p, t0: int, t1: int, out: np.ndarray) -> np.ndarray:
    """Oracle of :func:`bin_events` (``np.add.at``); same contract."""
    out = _check_frames(out, 4)
    T, _, H, W = out.shape
    t0, t1 = (int(v) for v in _check_columns(x, y, t, p, H, W, t0, t1, T))
    x, y, t = (np.asarray(v, np.int64) for v in (x, y, t))
    c = (p > 0).astype(np.int64)
    keep = (t >= t0) & (t <= t1)
    x, y, t, c = x[keep], y[keep], t[keep], c[keep]
    b = np.zeros_like(t) if t1 == t0 else np.minimum((t - t0) * T // (t1 - t0), T - 1)
    np.add.at(out, (b, c, y, x), np.float32(1.0))
    return out


def render_ref(img: np.ndarray, dy: int, dx: int, cam: Camera) -> np.ndarray:
    """Oracle of :func:`render`: the int64 ``(height, width)`` canvas of uint8 ``img`` displaced by
    ``(dy, dx) / subpix`` (module docstring), by whole-array indexing."""
    cam = _check_camera(cam)
    img = check_array("img", img, ndim=2, dtypes=(np.dtype(np.uint8),))
    H, W, S, M = cam.height, cam.width, cam.subpix, _MARGIN
    big = np.zeros((H + 2 * M, W + 2 * M), np.int64)  # image pasted into a wide zero margin
    big[M + cam.offset:M + cam.offset + img.shape[0], M + cam.offset:M + cam.offset + img.shape[1]] = img
    iy, fy = np.divmod(np.arange(H) * S - int(dy), S)  # source position relative to the canvas origin
    ix, fx = np.divmod(np.arange(W) * S - int(dx), S)
    iy, ix = iy + M, ix + M
    out = np.zeros((H, W), np.int64)
    for oy, wy in ((0, S - fy), (1, fy)):
        for ox, wx in ((0, S - fx), (1, fx)):
            out += wy[:, None] * wx[None, :] * big[np.ix_(iy + oy, ix + ox)]
    return out


def dvs_events_ref(img: np.ndarray, disp: np.ndarray, cam: Camera):
    """Oracle of :func:`dvs_events` for one uint8 ``img``: int64 columns ``(x, y, t, p)`` of all its
    events, in the kernel's order (step, pixel row-major, crossing), by whole-canvas arithmetic."""
    cam = _check_camera(cam)
    disp = check_array("disp", disp, ndim=2, dtypes=(np.dtype(np.int64),), shape=(None, 2))
    theta, dt = cam.theta, cam.dt
    prev = render_ref(img, *disp[0], cam)
    ref = prev.copy()
    yy, xx = np.divmod(np.arange(prev.size), cam.width)
    chunks = []
    for k in range(len(disp) - 1):
        cur = render_ref(img, *disp[k + 1], cam)
        i0, i1, r = prev.ravel(), cur.ravel(), ref.ravel()
        n_on = np.maximum((i1 - r) // theta, 0)   # crossings upwards
        n_off = np.maximum((r - i1) // theta, 0)  # crossings downwards (at most one is > 0)
        n = n_on + n_off
        pix = np.repeat(np.arange(i0.size), n)
        j = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n) + 1  # 1..n within each pixel
        on = np.repeat(n_on > 0, n)
        level = r[pix] + np.where(on, j, -j) * theta
        num = np.where(on, level - i0[pix], i0[pix] - level)
        den = np.abs(i1[pix] - i0[pix])
        chunks.append((xx[pix], yy[pix], k * dt + (num * dt) // np.maximum(den, 1), on.astype(np.int64)))
        ref = (r + (n_on - n_off) * theta).reshape(ref.shape)
        prev = cur
    if not chunks:
        return tuple(np.zeros(0, np.int64) for _ in range(4))
    return tuple(np.concatenate([c[i] for c in chunks]).astype(np.int64) for i in range(4))


# ---- Numba kernels ---------------------------------------------------------------------------------

@numba.njit(cache=True)
def _bin_events(x, y, t, p, t0, t1, out):  # pragma: no cover - compiled
    """Add one count per event to ``out[bin, p > 0, y, x]`` (float32 [T, 2, H, W]); module docs."""
    T = out.shape[0]
    span = t1 - t0
    for i in range(t.shape[0]):
        ti = t[i]
        if ti < t0 or ti > t1:
            continue
        if span == 0:
            b = 0
        else:
            b = ((ti - t0) * T) // span
            if b > T - 1:
                b = T - 1
        c = 1 if p[i] > 0 else 0
        out[b, c, y[i], x[i]] += 1.0


@numba.njit(cache=True, parallel=True)
def _bin_events_batched(x, y, t, p, offsets, t0, t1, out):  # pragma: no cover - compiled
    for i in numba.prange(offsets.shape[0] - 1):  # each sample writes only its own out[i]
        a = offsets[i]
        b = offsets[i + 1]
        _bin_events(x[a:b], y[a:b], t[a:b], p[a:b], t0, t1, out[i])


@numba.njit(cache=True)
def _render(img, dy, dx, cam, out):  # pragma: no cover - compiled
    """Canvas intensities (int64 (H, W)) of uint8 ``img`` displaced by (dy, dx)/subpix; module docs."""
    H, W = out.shape
    h, w = img.shape
    S = cam.subpix
    for Y in range(H):
        sy = (Y - cam.offset) * S - dy + _MARGIN * S  # + margin keeps the floor division positive
        iy = sy // S - _MARGIN
        fy = sy % S
        for X in range(W):
            sx = (X - cam.offset) * S - dx + _MARGIN * S
            ix = sx // S - _MARGIN
            fx = sx % S
            acc = 0
            for oy in range(2):
                yy = iy + oy
                if yy < 0 or yy >= h:
                    continue
                wy = (S - fy) if oy == 0 else fy
                for ox in range(2):
                    xx = ix + ox
                    if xx < 0 or xx >= w:
                        continue
                    wx = (S - fx) if ox == 0 else fx
                    acc += wy * wx * np.int64(img[yy, xx])
            out[Y, X] = acc


@numba.njit(cache=True)
def _simulate(img, disp, cam, out_x, out_y, out_t, out_p):  # pragma: no cover - compiled
    """Run the ideal-DVS model for one image; return the event count n.

    The first ``min(n, len(out_x))`` events are written to ``out_*``; the rest are only counted.
    """
    cap = out_x.shape[0]
    theta = cam.theta
    dt = cam.dt
    prev = np.empty((cam.height, cam.width), dtype=np.int64)
    cur = np.empty((cam.height, cam.width), dtype=np.int64)
    _render(img, disp[0, 0], disp[0, 1], cam, prev)
    ref = prev.copy()
    n = 0
    for k in range(disp.shape[0] - 1):
        _render(img, disp[k + 1, 0], disp[k + 1, 1], cam, cur)
        tk = k * dt
        for Y in range(cam.height):
            for X in range(cam.width):
                i0 = prev[Y, X]
                i1 = cur[Y, X]
                r = ref[Y, X]
                while i1 - r >= theta:
                    r += theta
                    if n < cap:
                        out_x[n] = X
                        out_y[n] = Y
                        out_t[n] = tk + ((r - i0) * dt) // (i1 - i0)
                        out_p[n] = 1
                    n += 1
                while r - i1 >= theta:
                    r -= theta
                    if n < cap:
                        out_x[n] = X
                        out_y[n] = Y
                        out_t[n] = tk + ((i0 - r) * dt) // (i0 - i1)
                        out_p[n] = 0
                    n += 1
                ref[Y, X] = r
        prev, cur = cur, prev
    return n


@numba.njit(cache=True, parallel=True)
def _simulate_batched(images, disp, cam, xs, ys, ts, ps, counts):  # pragma: no cover - compiled
    for i in numba.prange(images.shape[0]):  # each sample writes only its own row: order-free
        counts[i] = _simulate(images[i], disp, cam, xs[i], ys[i], ts[i], ps[i])


@numba.njit(cache=True)
def _simulate_one(img, disp, cam, xs, ys, ts, ps):  # pragma: no cover - compiled
    return _simulate(img, disp, cam, xs, ys, ts, ps)


# ---- public functions ------------------------------------------------------------------------------

def bin_events(x, y, t, p, t0: int, t1: int, out: np.ndarray) -> np.ndarray:
    """Add the events ``x, y, t, p`` (integer 1-D columns of one length) to the frames ``out``
    (float32 ``[T, 2, H, W]``, C-contiguous) over the span ``[t0, t1]`` (module docstring); returns
    ``out``."""
    out = _check_frames(out, 4)
    T, _, H, W = out.shape
    t0, t1 = _check_columns(x, y, t, p, H, W, t0, t1, T)
    if len(t):
        _bin_events(x, y, t, p, t0, t1, out)
    return out


def bin_events_batched(x, y, t, p, offsets: np.ndarray, t0: int, t1: int, out: np.ndarray) -> np.ndarray:
    """:func:`bin_events` of every sample ``i`` (events ``offsets[i]:offsets[i + 1]``, int64
    ``offsets`` non-decreasing from 0 to ``len(t)``) into ``out[i]`` (float32 ``[N, T, 2, H, W]``),
    samples in parallel; returns ``out``."""
    out = _check_frames(out, 5)
    N, T, _, H, W = out.shape
    t0, t1 = _check_columns(x, y, t, p, H, W, t0, t1, T)
    offsets = check_array("offsets", offsets, ndim=1, dtypes=(np.dtype(np.int64),), shape=(N + 1,))
    if offsets[0] != 0 or offsets[-1] != len(t) or np.any(np.diff(offsets) < 0):
        raise ValueError(f"offsets: expected non-decreasing from 0 to {len(t)} (the number of events)")
    _bin_events_batched(x, y, t, p, offsets, t0, t1, out)
    return out


def render(img: np.ndarray, dy: int, dx: int, cam: Camera, out: np.ndarray) -> np.ndarray:
    """The canvas of uint8 ``img`` displaced by ``(dy, dx) / subpix`` into int64 ``out`` ``(height,
    width)`` (module docstring); returns ``out``."""
    cam = _check_camera(cam)
    check_array("img", img, ndim=2, dtypes=(np.dtype(np.uint8),))
    check_array("out", out, dtypes=(np.dtype(np.int64),), shape=(cam.height, cam.width))
    _render(img, np.int64(dy), np.int64(dx), cam, out)
    return out


def _check_buffers(cols, lead):
    """``xs, ys`` uint8, ``ts`` int32, ``ps`` int8, each of shape ``lead + (capacity,)``."""
    cap = check_array("xs", cols[0], ndim=len(lead) + 1, dtypes=None).shape[-1]
    for f, v, dt in zip("xytp", cols, (np.uint8, np.uint8, np.int32, np.int8)):
        check_array(f"{f}s", v, dtypes=(np.dtype(dt),), shape=lead + (cap,))
        if not v.flags.c_contiguous or not v.flags.writeable:
            raise ValueError(f"{f}s: expected a writeable C-contiguous array")


def _check_sim(images, disp, cam, ndim):
    cam = _check_camera(cam)
    if cam.height > 256 or cam.width > 256:
        raise ValueError(f"cam: the uint8 event coordinates need height, width <= 256, got {cam[:2]}")
    check_array("images" if ndim == 3 else "img", images, ndim=ndim, dtypes=(np.dtype(np.uint8),))
    check_array("disp", disp, ndim=2, dtypes=(np.dtype(np.int64),), shape=(None, 2))
    if len(disp) < 1:
        raise ValueError("disp: expected at least one displacement (the start)")
    return cam


def dvs_events(img: np.ndarray, disp: np.ndarray, cam: Camera, xs, ys, ts, ps) -> int:
    """Events of the ideal DVS (module docstring) watching uint8 ``img`` move through ``disp``
    (int64 ``(K + 1, 2)``): the first ``min(n, len(xs))`` are written to ``xs, ys`` (uint8), ``ts``
    (int32) and ``ps`` (int8) of one length; returns their count ``n``."""
    cam = _check_sim(img, disp, cam, 2)
    _check_buffers((xs, ys, ts, ps), ())
    return int(_simulate_one(img, disp, cam, xs, ys, ts, ps))


def dvs_events_batched(images: np.ndarray, disp: np.ndarray, cam: Camera, xs, ys, ts, ps,
                       counts: np.ndarray) -> np.ndarray:
    """:func:`dvs_events` of every image of uint8 ``images`` ``(N, h, w)`` into row ``i`` of the
    ``(N, capacity)`` buffers, the event count into ``counts[i]`` (int64 ``(N,)``), images in
    parallel; returns ``counts``."""
    cam = _check_sim(images, disp, cam, 3)
    _check_buffers((xs, ys, ts, ps), (len(images),))
    check_array("counts", counts, dtypes=(np.dtype(np.int64),), shape=(len(images),))
    _simulate_batched(np.ascontiguousarray(images), disp, cam, xs, ys, ts, ps, counts)
    return counts


def _warmup() -> None:
    """Compile (or load from cache) every kernel with the argument types refsnn's data sets use."""
    i64 = np.array([0, 1], np.int64)
    bin_events(i64, i64, np.array([0, 5], np.int64), i64, 0, 5, np.zeros((2, 2, 2, 2), np.float32))
    cam = Camera(height=6, width=6, offset=1, subpix=16, theta=13056, dt=5000)
    img = np.zeros((2, 4, 4), np.uint8)
    img[:, 1:3, 1:3] = 255
    img.flags.writeable = False  # as the embedded data sets' cached images (a separate Numba signature)
    disp = np.array([[0, 0], [8, -8], [16, 0]], np.int64)
    bufs = tuple(np.empty((2, 64), dt) for dt in (np.uint8, np.uint8, np.int32, np.int8))
    counts = dvs_events_batched(img, disp, cam, *bufs, np.empty(2, np.int64))
    dvs_events(img[0], disp, cam, *(b[0] for b in bufs))
    render(img[0], np.int64(1), np.int64(2), cam, np.empty((6, 6), np.int64))
    offsets = np.zeros(3, np.int64)
    np.cumsum(counts, out=offsets[1:])
    cols = [np.concatenate([b[i, :counts[i]] for i in range(2)]) for b in bufs]
    bin_events_batched(*cols, offsets, 0, 10000, np.zeros((2, 2, 2, 6, 6), np.float32))
