"""``mnist5k-events``: a neuromorphic demo set made from mnist5k by simulated saccades (SPEC §4.3).

It imitates N-MNIST (Orchard et al. 2015: an ATIS camera making three saccades in front of a
screen showing MNIST digits, 34x34 pixels, ~300 ms per sample), without any download, by
simulating an ideal event camera looking at the moving digit. Everything is integer arithmetic,
so the events are bit-identical on every machine.

Scene
-----
The 28x28 digit is drawn on a 34x34 black canvas at offset (3, 3) and displaced by ``d(t) =
(dy, dx)`` pixels. The canvas intensity at pixel ``(Y, X)`` is the bilinear interpolation of the
digit at ``(Y - 3 - dy, X - 3 - dx)`` (zero outside the digit), computed with ``d`` quantised to
1/16 pixel, in units of ``1/(255*256)`` (``I in [0, 65280]``).

Path (:data:`PATH`)
-------------------
Three straight saccades around a triangle, like N-MNIST's three saccades, each ``SACCADE_US =
100_000`` us long with ``STEPS_PER_SACCADE = 20`` simulation steps of ``DT_US = 5_000`` us::

    (dy, dx) = (-1, -2)  ->  (+2, 0)  ->  (-1, +2)  ->  (-1, -2)      (pixels)

At step boundary ``k = 0..60`` (time ``k * DT_US``) the displacement is the linear interpolation
between the saccade's end points, rounded to the nearest 1/16 pixel. The recording spans
``[0, DURATION_US] = [0, 300_000]`` us; its frames use ``t_range=(0, DURATION_US)``.

Event model (ideal DVS, linear intensity)
-----------------------------------------
Each pixel keeps a reference level ``r`` (initialised to its intensity at ``t = 0``, so no events
at ``t = 0``). During step ``k`` its intensity goes from ``I0`` to ``I1``, taken as linear in time.
While ``I1 - r >= theta`` the pixel emits an ON event (``p = 1``) and sets ``r += theta``; while
``r - I1 >= theta`` an OFF event (``p = 0``) and ``r -= theta``. Each event is time-stamped when
the linear ramp crosses its new level: ``t = k*DT_US + ((r_new - I0) * DT_US) // (I1 - I0)``
(ON; mirrored for OFF), so ``t`` is in ``(k*DT_US, (k+1)*DT_US]`` and any number of time bins gets
sensible frames. ``theta = THRESHOLD = 0.2`` of full scale (``13056`` in intensity units).
No noise, no refractory period. Events are ordered by step, then pixel (row-major), then
crossing, so ``t`` is not globally sorted within a sample.

The split is mnist5k's (4,000 train / 1,000 test, same order, same labels). Generating all 5,000
samples takes a few seconds (after Numba compilation, cached on disk); the events are
cached in memory per process (~80 MB); binning them into T frames takes a fraction of a second.
The frames of both splits take 5,000 x T x 2 x 34 x 34 x 4 bytes, about 46 MB per time bin.
"""
from __future__ import annotations

import numpy as np

from refsnn._checks import check_array, check_int
from refsnn.datasets.events import EVENT_DTYPE
from refsnn.datasets.mnist import load_mnist5k_arrays
from refsnn.kernels import events as ek

SENSOR_SIZE = (34, 34)
OFFSET = 3
SUBPIX = 16
PATH = ((-1, -2), (2, 0), (-1, 2), (-1, -2))  # (dy, dx) in pixels; 3 saccades
STEPS_PER_SACCADE = 20
DT_US = 5_000
SACCADE_US = STEPS_PER_SACCADE * DT_US
N_STEPS = STEPS_PER_SACCADE * (len(PATH) - 1)
DURATION_US = N_STEPS * DT_US
FULL_SCALE = 255 * SUBPIX * SUBPIX
THRESHOLD = 0.2
THRESHOLD_INT = int(round(THRESHOLD * FULL_SCALE))
#: the simulated camera of :mod:`refsnn.kernels.events` with the constants above
CAMERA = ek.Camera(height=SENSOR_SIZE[0], width=SENSOR_SIZE[1], offset=OFFSET, subpix=SUBPIX,
                   theta=THRESHOLD_INT, dt=DT_US)


def displacements() -> np.ndarray:
    """int64 (N_STEPS + 1, 2): ``(dy, dx)`` in 1/16 pixel at each step boundary (module docs)."""
    out = np.empty((N_STEPS + 1, 2), dtype=np.int64)
    S = STEPS_PER_SACCADE
    for s in range(len(PATH) - 1):
        a = np.array(PATH[s], dtype=np.int64) * SUBPIX
        b = np.array(PATH[s + 1], dtype=np.int64) * SUBPIX
        for j in range(S + 1):
            num = a * (S - j) + b * j  # exact position is num / S; round half up
            out[s * S + j] = np.floor_divide(2 * num + S, 2 * S)
    return out


def _render(img: np.ndarray, dy: int, dx: int, out: np.ndarray) -> np.ndarray:
    """The canvas (int64 (34, 34), units 1/(255*256)) of uint8 ``img`` displaced by (dy, dx)/16 into
    ``out``: the kernel :func:`refsnn.kernels.events.render` with :data:`CAMERA`."""
    return ek.render(img, dy, dx, CAMERA, out)


_CAPACITY = 6144  # events per sample buffered in one pass (mnist5k's maximum is ~4,000)
_CHUNK = 512


def _saccade_columns(images: np.ndarray):
    """Compact columns ``x, y`` uint8, ``t`` int32, ``p`` int8 and ``offsets`` int64 (N + 1,).

    One simulation pass into per-sample buffers of ``_CAPACITY`` events, chunk by chunk; a sample
    that overflows its buffer is simulated again with an exact-size one.
    """
    images = np.ascontiguousarray(images)
    disp = displacements()
    parts, counts_all = [], []
    for a in range(0, len(images), _CHUNK):
        imgs = images[a:a + _CHUNK]
        n = len(imgs)
        buf = (np.empty((n, _CAPACITY), np.uint8), np.empty((n, _CAPACITY), np.uint8),
               np.empty((n, _CAPACITY), np.int32), np.empty((n, _CAPACITY), np.int8))
        counts = np.empty(n, np.int64)
        ek.dvs_events_batched(imgs, disp, CAMERA, *buf, counts)
        valid = np.arange(_CAPACITY)[None, :] < counts[:, None]
        cols = [b[valid] for b in buf]  # row-major: sample order, then event order
        if np.any(counts > _CAPACITY):  # rare: redo the overflowing samples exactly
            pieces = [[] for _ in range(4)]
            for i in range(n):
                if counts[i] > _CAPACITY:
                    one = (np.empty(counts[i], np.uint8), np.empty(counts[i], np.uint8),
                           np.empty(counts[i], np.int32), np.empty(counts[i], np.int8))
                    ek.dvs_events(imgs[i], disp, CAMERA, *one)
                else:
                    one = tuple(b[i, :counts[i]] for b in buf)
                for k in range(4):
                    pieces[k].append(one[k])
            cols = [np.concatenate(pc) for pc in pieces]
        parts.append(cols)
        counts_all.append(counts)
    counts = np.concatenate(counts_all) if counts_all else np.zeros(0, np.int64)
    offsets = np.zeros(len(images) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    cols = tuple(np.concatenate([pc[k] for pc in parts]) if parts else np.zeros(0, dt_)
                 for k, dt_ in enumerate((np.uint8, np.uint8, np.int32, np.int8)))
    return cols + (offsets,)


def saccade_events(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Simulated-saccade events of every image (module docstring).

    Parameters
    ----------
    images : uint8 (N, 28, 28)

    Returns
    -------
    events : EVENT_DTYPE (M,)
        All samples' events concatenated; sample i is ``events[offsets[i]:offsets[i+1]]``,
        coordinates on the 34x34 sensor, ``t`` in ``(0, DURATION_US]``, ``p`` in {0, 1}.
    offsets : int64 (N + 1,)
    """
    images = check_array("images", images, ndim=3, dtypes=(np.dtype(np.uint8),), shape=(None, 28, 28))
    x, y, t, p, offsets = _saccade_columns(images)
    ev = np.empty(len(t), dtype=EVENT_DTYPE)
    ev["x"], ev["y"], ev["t"], ev["p"] = x, y, t, p
    return ev, offsets


def render_ref(img: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Plain-NumPy oracle of ``_render``: int64 (34, 34) canvas of uint8 ``img`` shifted by (dy, dx)/16
    (:func:`refsnn.kernels.events.render_ref` with :data:`CAMERA`)."""
    return ek.render_ref(img, dy, dx, CAMERA)


def saccade_events_ref(img: np.ndarray) -> np.ndarray:
    """Plain-NumPy oracle of the event model for one uint8 (28, 28) image -> EVENT_DTYPE (M,).

    Same events in the same order as :func:`saccade_events` (step, pixel row-major, crossing);
    :func:`refsnn.kernels.events.dvs_events_ref` with :data:`CAMERA`.
    """
    x, y, t, p = ek.dvs_events_ref(img, displacements(), CAMERA)
    ev = np.empty(len(t), EVENT_DTYPE)
    ev["x"], ev["y"], ev["t"], ev["p"] = x, y, t, p
    return ev


def saccade_frames(cols, n_time_bins: int) -> np.ndarray:
    """float32 (N, T, 2, 34, 34): every sample of ``cols = (x, y, t, p, offsets)`` binned like
    ``events_to_frames(sample, SENSOR_SIZE, T, t_range=(0, DURATION_US))``."""
    T = check_int("n_time_bins", n_time_bins, lo=1)
    x, y, t, p, offsets = cols
    out = np.zeros((len(offsets) - 1, T, 2) + SENSOR_SIZE, dtype=np.float32)
    return ek.bin_events_batched(x, y, t, p, offsets, 0, DURATION_US, out)


_CACHE: dict[str, tuple] = {}


def mnist5k_saccade_frames(split: str, n_time_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Frames float32 (N, T, 2, 34, 34) and labels int64 (N,) of mnist5k's ``split``.

    The events (compact columns, ~7 bytes per event, ~80 MB for both splits) are generated once
    per process and cached in memory; the frames are binned anew on each call.
    """

    if split not in ("train", "test"):
        raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
    arrays = load_mnist5k_arrays()
    if split not in _CACHE:
        _CACHE[split] = _saccade_columns(arrays[f"x_{split}"])
    return saccade_frames(_CACHE[split], n_time_bins), arrays[f"y_{split}"].astype(np.int64)

