"""Event-camera data: event arrays, binning into frames, and a directory loader (SPEC §4.3).

Events
------
An event stream is a 1-D NumPy *structured* array with (at least) the integer fields

* ``x`` — column, ``0 <= x < W``;
* ``y`` — row, ``0 <= y < H``;
* ``t`` — timestamp in microseconds (any integer dtype; need not be sorted);
* ``p`` — polarity: ``p > 0`` is ON (frame channel 1), ``p <= 0`` is OFF (channel 0), so both the
  ``{0, 1}`` (Tonic, DVS128 Gesture, CIFAR10-DVS) and ``{-1, +1}`` conventions work. ``bool`` is
  accepted too.

:data:`EVENT_DTYPE` (``x, y: int16; t: int64; p: int8``) is what refsnn itself produces;
:func:`make_events` builds one from plain arrays.

Frames (``events_to_frames``)
-----------------------------
With ``t0, t1`` the recording's first and last timestamps (or an explicit ``t_range``) and ``T`` the
number of bins, event ``e`` goes to bin ::

    b(e) = min(T - 1, ((t_e - t0) * T) // (t1 - t0))        # integer arithmetic, exact

i.e. the span ``[t0, t1]`` is cut into ``T`` equal half-open bins, the last one closed so that the
final event counts. If ``t1 == t0`` (all events share one timestamp) every event goes to bin 0.
Events outside an explicit ``t_range`` are ignored. ``frames[b, c, y, x]`` is the number of events
of channel ``c`` (0 OFF, 1 ON) at pixel ``(y, x)`` in bin ``b``, as float32 (exact up to 2**24).
``(t1 - t0) * T`` must fit in int64 (true for recordings shorter than ~290 years / T); a longer
span (or timestamps that do not fit in int64, e.g. uint64 values above 2**63 - 1) is a ``ValueError``
naming ``t``, never a silent overflow into the wrong bins.

The binning is the kernel :func:`refsnn.kernels.events.bin_events`; :func:`events_to_frames_ref`
uses its oracle (``np.add.at``), and the tests hold the two exactly equal.

Directory layout (``events:DIR``)
---------------------------------
::

    DIR/meta.json                    {"sensor_size": [H, W],           (required)
                                      "classes": ["name0", ...],       (optional)
                                      "augment_pad": 0,                (optional, int >= 0)
                                      "augment_flip": false}           (optional)
    DIR/train/<label>/<sample>.npy   one event stream per file
    DIR/test/<label>/<sample>.npz

``<label>`` is a directory name: an entry of ``classes`` (label = its index) when ``classes`` is
given, otherwise a non-negative integer (``num_classes = max label + 1``, or ``len(classes)``).
A ``.npy`` holds the structured event array; a ``.npz`` holds either one structured array named
``events`` or four 1-D arrays ``x, y, t, p`` of equal length. Files are read with
``allow_pickle=False`` (``.npz`` through :func:`refsnn.io.load_npz`); a truncated, corrupt or foreign
file is a ``ValueError`` naming it. Samples are ordered by (label, file name). :func:`save_event_dir` writes
this layout (handy for converting a dataset once, and used by the tests).
"""
from __future__ import annotations

import io as _io
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from refsnn._checks import check_int
from refsnn.io import atomic_write_bytes, atomic_write_json, check_npy_header, load_npz, read_json
from refsnn.kernels.events import bin_events, bin_events_ref

EVENT_DTYPE = np.dtype([("x", np.int16), ("y", np.int16), ("t", np.int64), ("p", np.int8)])
EVENT_FIELDS = ("x", "y", "t", "p")
_INT64_MAX = int(np.iinfo(np.int64).max)


def make_events(x, y, t, p) -> np.ndarray:
    """Pack four equal-length 1-D integer (``p`` may be bool) arrays into an :data:`EVENT_DTYPE` array."""
    cols = {}
    for name, v in zip(EVENT_FIELDS, (x, y, t, p)):
        v = np.asarray(v)
        if v.ndim != 1:
            raise ValueError(f"{name}: expected a 1-D array, got shape {v.shape}")
        if v.size and v.dtype.kind not in "iub":
            raise TypeError(f"{name}: expected integers, got dtype {v.dtype}")
        cols[name] = v
    n = {len(v) for v in cols.values()}
    if len(n) != 1:
        raise ValueError(f"x, y, t, p: expected equal lengths, got {[len(v) for v in cols.values()]}")
    ev = np.empty(n.pop(), dtype=EVENT_DTYPE)
    for name in ("x", "y"):
        v = cols[name]
        if v.size and (v.min() < 0 or v.max() > np.iinfo(np.int16).max):
            raise ValueError(f"{name}: coordinates must be in [0, 32767]")
        ev[name] = v
    ev["t"] = cols["t"]
    ev["p"] = cols["p"].astype(np.int64) > 0 if cols["p"].dtype.kind == "b" else np.sign(cols["p"])
    return ev


def _columns(events, sensor_size, name="events"):
    """Validate ``events`` and return int64 columns ``x, y, t`` and the channel ``c`` (0 OFF, 1 ON)."""
    if not isinstance(events, np.ndarray):
        raise TypeError(f"{name}: expected a numpy structured array, got {type(events).__name__}")
    if events.dtype.names is None or any(f not in events.dtype.names for f in EVENT_FIELDS):
        raise TypeError(f"{name}: expected a structured array with fields x, y, t, p, got dtype "
                        f"{events.dtype}")
    if events.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of events, got shape {events.shape}")
    for f in EVENT_FIELDS:
        kind = events.dtype.fields[f][0].kind
        if kind not in "iub":
            raise TypeError(f"{name}[{f!r}]: expected an integer field, got {events.dtype.fields[f][0]}"
                            + (" (convert float microsecond timestamps to int64)" if f == "t" else ""))
    tt = events["t"]
    if tt.dtype.kind == "u" and tt.dtype.itemsize == 8 and tt.size and int(tt.max()) > _INT64_MAX:
        raise ValueError(f"{name}['t']: timestamps above 2**63 - 1 microseconds do not fit in int64, got "
                         f"{int(tt.max())}")
    H, W = sensor_size
    x = events["x"].astype(np.int64)
    y = events["y"].astype(np.int64)
    t = events["t"].astype(np.int64)
    c = (events["p"] > 0).astype(np.int64)
    if x.size:
        if x.min() < 0 or x.max() >= W:
            raise ValueError(f"{name}['x']: expected 0 <= x < W = {W}, got range [{x.min()}, {x.max()}]")
        if y.min() < 0 or y.max() >= H:
            raise ValueError(f"{name}['y']: expected 0 <= y < H = {H}, got range [{y.min()}, {y.max()}]")
    return x, y, t, c


def _check_sensor(sensor_size) -> tuple[int, int]:
    if not isinstance(sensor_size, (tuple, list)) or len(sensor_size) != 2:
        raise TypeError(f"sensor_size: expected a pair (H, W), got {sensor_size!r}")
    H = check_int("sensor_size[0]", sensor_size[0], lo=1)
    W = check_int("sensor_size[1]", sensor_size[1], lo=1)
    return H, W


def _time_range(t: np.ndarray, t_range, n_bins: int) -> tuple[int, int]:
    """``(t0, t1)``; ``ValueError`` when ``(t1 - t0) * n_bins`` would overflow int64 in the binning."""
    if t_range is None:
        if t.size == 0:
            return 0, 0
        t0, t1, name = int(t.min()), int(t.max()), "events['t']"
    else:
        if not isinstance(t_range, (tuple, list)) or len(t_range) != 2:
            raise TypeError(f"t_range: expected a pair (t0, t1) of integer microseconds, got {t_range!r}")
        t0 = check_int("t_range[0]", t_range[0], lo=-_INT64_MAX - 1, hi=_INT64_MAX)
        t1 = check_int("t_range[1]", t_range[1], lo=t0, hi=_INT64_MAX)
        name = "t_range"
    if (t1 - t0) * n_bins > _INT64_MAX:
        raise ValueError(f"{name}: a span of {t1 - t0} microseconds cut into {n_bins} bins overflows int64 "
                         f"(span x bins must be < 2**63); shift or shorten the recording")
    return t0, t1


def events_to_frames(events: np.ndarray, sensor_size: tuple[int, int], n_time_bins: int, *,
                     t_range: tuple[int, int] | None = None) -> np.ndarray:
    """Count events per time bin, polarity and pixel (SPEC §4.3).

    Parameters
    ----------
    events : structured ndarray (n,) with integer fields ``x, y, t, p`` (see module docstring)
    sensor_size : (H, W)
    n_time_bins : T >= 1
    t_range : (t0, t1) in microseconds, optional
        The span cut into T equal bins; default ``(t.min(), t.max())`` of this recording.
        Events outside it are ignored.

    Returns
    -------
    frames : float32 ndarray (T, 2, H, W)
        ``frames[b, c, y, x]`` = number of events with channel c (0 = OFF ``p <= 0``, 1 = ON
        ``p > 0``) at pixel (y, x) whose bin ``min(T-1, ((t - t0) * T) // (t1 - t0))`` is b
        (bin 0 for every event when ``t1 == t0``). Empty input gives all zeros.
    """
    H, W = _check_sensor(sensor_size)
    T = check_int("n_time_bins", n_time_bins, lo=1)
    x, y, t, c = _columns(events, (H, W))
    t0, t1 = _time_range(t, t_range, T)
    return bin_events(x, y, t, c, t0, t1, np.zeros((T, 2, H, W), dtype=np.float32))


def events_to_frames_ref(events: np.ndarray, sensor_size: tuple[int, int], n_time_bins: int, *,
                         t_range: tuple[int, int] | None = None) -> np.ndarray:
    """Plain-NumPy oracle of :func:`events_to_frames` (``np.add.at``); same contract."""
    H, W = _check_sensor(sensor_size)
    T = check_int("n_time_bins", n_time_bins, lo=1)
    x, y, t, c = _columns(events, (H, W))
    t0, t1 = _time_range(t, t_range, T)
    return bin_events_ref(x, y, t, c, t0, t1, np.zeros((T, 2, H, W), dtype=np.float32))


# ---- directory loader ---------------------------------------------------------------------------

def _read_events_file(path: Path) -> np.ndarray:
    """The event array of one sample file; ``ValueError`` naming the file when it is truncated,
    corrupt, crafted (a header claiming more data than the file holds) or foreign."""
    if path.suffix == ".npy":
        try:
            with open(path, "rb") as f:
                check_npy_header(f, path.stat().st_size, name=str(path))
            ev = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError, TypeError, SyntaxError, MemoryError) as e:
            raise ValueError(f"{path}: not a readable event file: {e}") from None
    else:
        z = load_npz(path)  # ValueError naming the file for a corrupt/foreign/pickled one
        try:
            if "events" in z:
                ev = z["events"]
            elif all(f in z for f in EVENT_FIELDS):
                ev = make_events(*(z[f] for f in EVENT_FIELDS))
            else:
                raise ValueError(f"expected an array 'events' or arrays x, y, t, p; found {sorted(z)}")
        except (ValueError, TypeError) as e:
            raise ValueError(f"{path}: not a readable event file: {e}") from None
    if not isinstance(ev, np.ndarray) or ev.dtype.names is None:
        raise ValueError(f"{path}: expected a structured event array with fields x, y, t, p, "
                         f"got dtype {getattr(ev, 'dtype', type(ev).__name__)}")
    return ev


def read_meta(root) -> dict:
    """Read and validate ``root/meta.json`` of an event directory (layout in the module docstring)."""
    root = Path(root)
    mp = root / "meta.json"
    if not mp.is_file():
        raise FileNotFoundError(f"{mp}: missing; an event directory needs meta.json with "
                                f"'sensor_size': [H, W]")
    meta = read_json(mp)  # ValueError naming the file (invalid, nested too deeply)
    if not isinstance(meta, dict) or "sensor_size" not in meta:
        raise ValueError(f"{mp}: expected a JSON object with 'sensor_size': [H, W]")
    ss = meta["sensor_size"]
    if not (isinstance(ss, list) and len(ss) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 32768 for v in ss)):
        raise ValueError(f"{mp}: 'sensor_size' must be [H, W] with integers in 1..32768, got {ss!r}")
    classes = meta.get("classes")
    if classes is not None and not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)
                                    and len(set(classes)) == len(classes) and classes):
        raise ValueError(f"{mp}: 'classes' must be a non-empty list of distinct strings")
    pad = meta.get("augment_pad", 0)
    if not (isinstance(pad, int) and not isinstance(pad, bool) and pad >= 0):
        raise ValueError(f"{mp}: 'augment_pad' must be an integer >= 0, got {pad!r}")
    flip = meta.get("augment_flip", False)
    if not isinstance(flip, bool):
        raise ValueError(f"{mp}: 'augment_flip' must be true or false, got {flip!r}")
    return {"sensor_size": (ss[0], ss[1]), "classes": classes, "augment_pad": pad,
            "augment_flip": flip}


def list_event_split(root, split: str, classes: Sequence[str] | None) -> list[tuple[Path, int]]:
    """``[(file, label), ...]`` of ``root/split``, ordered by (label, file name)."""
    d = Path(root) / split
    if not d.is_dir():
        raise FileNotFoundError(f"{d}: missing; expected {split}/<label>/<sample>.npy|.npz")
    items = []
    for sub in sorted(p for p in d.iterdir() if p.is_dir()):
        if classes is not None:
            if sub.name not in classes:
                raise ValueError(f"{sub}: class directory not listed in meta.json 'classes'")
            label = classes.index(sub.name)
        else:
            if not sub.name.isdigit():
                raise ValueError(f"{sub}: class directories must be non-negative integers "
                                 f"(or list the names in meta.json 'classes')")
            label = int(sub.name)
        files = sorted(p for p in sub.iterdir() if p.suffix in (".npy", ".npz") and p.is_file())
        items.extend((f, label) for f in files)
    items.sort(key=lambda fl: (fl[1], fl[0].name))
    if not items:
        raise ValueError(f"{d}: no .npy/.npz event files found under {split}/<label>/")
    return items


def load_event_split(root, split: str, n_time_bins: int, meta: Mapping | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Frames float32 (N, T, 2, H, W) and labels int64 (N,) of ``root/split`` (module docstring)."""
    meta = read_meta(root) if meta is None else meta
    items = list_event_split(root, split, meta["classes"])
    H, W = meta["sensor_size"]
    T = check_int("n_time_bins", n_time_bins, lo=1)
    x = np.zeros((len(items), T, 2, H, W), dtype=np.float32)
    y = np.empty(len(items), dtype=np.int64)
    for i, (f, label) in enumerate(items):
        ev = _read_events_file(f)
        try:
            x[i] = events_to_frames(ev, (H, W), T)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{f}: {e}") from None
        y[i] = label
    return x, y


def save_event_dir(root, samples: Mapping[str, Iterable[tuple[np.ndarray, int]]],
                   sensor_size: tuple[int, int], *, classes: Sequence[str] | None = None,
                   fmt: str = "npy", **meta_extra) -> Path:
    """Write ``{"train": [(events, label), ...], "test": [...]}`` in the ``events:DIR`` layout.

    Files are named ``<label>/<index:06d>.npy`` (or ``.npz`` with one array ``events`` when
    ``fmt="npz"``) and written atomically; ``meta.json`` gets ``sensor_size``, ``classes`` and
    any ``meta_extra`` (``augment_pad``, ``augment_flip``).
    """
    root = Path(root)
    H, W = _check_sensor(tuple(sensor_size))
    if fmt not in ("npy", "npz"):
        raise ValueError(f"fmt: expected 'npy' or 'npz', got {fmt!r}")
    for split, items in samples.items():
        for i, (ev, label) in enumerate(items):
            _columns(ev, (H, W), name=f"samples[{split!r}][{i}]")
            sub = classes[label] if classes is not None else str(int(label))
            buf = _io.BytesIO()
            if fmt == "npy":
                np.save(buf, ev, allow_pickle=False)
            else:
                np.savez_compressed(buf, events=ev)
            atomic_write_bytes(root / split / sub / f"{i:06d}.{fmt}", buf.getvalue())
    meta = {"sensor_size": [H, W], **meta_extra}
    if classes is not None:
        meta["classes"] = list(classes)
    atomic_write_json(root / "meta.json", meta)
    return root
