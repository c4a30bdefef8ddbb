"""Checks of a NIR graph in NIR's dict form before :mod:`refsnn.nir.simulate` runs it (no ``nir`` import).

A graph read from a file is untrusted input: every problem is a ``ValueError`` (a wrong value or
structure) or ``TypeError`` (a parameter that is not a number) naming the node and the parameter,
never an exception from inside NumPy or the kernels. Checked here:

* structure: ``nodes`` a non-empty mapping of node dicts with a ``type``; ``edges`` a list of
  ``(source, target)`` pairs of node names (:func:`edges_of`);
* parameters (:data:`PARAMS`, the ones the simulation reads per node type): numeric (integer or
  float, not bool or text), finite (:func:`number`), integers where NIR states integers
  (:func:`integer`, :func:`pair`: strides and kernel sizes >= 1, padding >= 0), time constants > 0;
* shapes (:func:`infer_shapes`): every node's output shape per sample, from the ``Input`` shapes
  through the graph (a recurrent edge takes its spiking node's population shape), with the inputs of
  a node (summed) of one shape, a weight matching its input, a neuron's parameters of its input's
  shape (or scalars), and no activation of ``T x B`` steps and samples above the read budget of
  :mod:`refsnn.io` (a padding of 10^6 declared in a file would otherwise allocate gigabytes).
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["PARAMS", "TAUS", "MAX_NODES", "MAX_EDGES", "show", "text", "edges_of", "number", "integer", "pair",
           "input_shape", "infer_shapes"]

#: the parameters :mod:`refsnn.nir.simulate` reads, per supported node type (the file reader reads no others)
PARAMS = {
    "Input": ("shape",), "Output": ("shape",),
    "Affine": ("weight", "bias"), "Linear": ("weight",), "Scale": ("scale",), "Flatten": ("start_dim", "end_dim"),
    "Conv2d": ("weight", "bias", "stride", "padding", "dilation", "groups"),
    "AvgPool2d": ("kernel_size", "stride", "padding"),
    "LIF": ("tau", "r", "v_leak", "v_threshold", "v_reset"), "LI": ("tau", "r", "v_leak"),
    "CubaLIF": ("tau_mem", "tau_syn", "r", "v_leak", "v_threshold", "v_reset", "w_in"),
    "CubaLI": ("tau_mem", "tau_syn", "r", "v_leak", "w_in"),
}
#: time constants: > 0
TAUS = ("tau", "tau_mem", "tau_syn")
#: the neuron node types
NEURONS = ("LIF", "LI", "CubaLIF", "CubaLI")
#: most nodes and edges of a graph refsnn simulates (its own graphs have tens)
MAX_NODES, MAX_EDGES = 10_000, 100_000
#: largest integer parameter accepted (strides, kernel sizes, padding, shapes): far above any real network
MAX_INT = 1 << 20


def show(v, n: int = 60) -> str:
    """``repr(v)`` on one line, at most ``n`` characters (for messages)."""
    r = " ".join(repr(v).split())
    return r if len(r) <= n else r[:n - 3] + "..."


def text(v) -> str:
    """A NIR string (``str``, UTF-8 ``bytes`` or a 0-d array of either); ``ValueError`` for anything else."""
    if isinstance(v, np.ndarray) and v.shape == () and v.dtype.kind in "OSU":
        v = v[()]
    if isinstance(v, bytes):
        try:
            return v.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{v[:40]!r} is not UTF-8 text") from None
    if isinstance(v, str):
        return v
    raise ValueError(f"expected text, got {type(v).__name__} {show(v)}")


def _label(node: str, kind: str) -> str:
    return f"node {node!r} ({kind})"


def edges_of(desc: dict, nodes: dict) -> list[tuple[str, str]]:
    """The graph's edges as ``(source, target)`` name pairs, each naming a node of ``nodes``."""
    raw = desc.get("edges", [])
    if raw is None:
        raw = []
    if isinstance(raw, (str, bytes, dict)) or not hasattr(raw, "__iter__"):
        raise ValueError(f"graph: edges must be a list of (source, target) pairs, got {type(raw).__name__}")
    out = []
    for i, e in enumerate(raw):
        if i >= MAX_EDGES:
            raise ValueError(f"graph: more than {MAX_EDGES} edges")
        if isinstance(e, (str, bytes)) or not hasattr(e, "__len__") or len(e) != 2:
            n = len(e) if hasattr(e, "__len__") and not isinstance(e, (str, bytes)) else "not a pair"
            raise ValueError(f"graph: edge {i} must be a (source, target) pair of node names, got {n} "
                             f"value{'s' if n != 1 else ''}: {show(list(e) if hasattr(e, '__iter__') else e, 80)}")
        try:
            a, b = text(e[0]), text(e[1])
        except ValueError as err:
            raise ValueError(f"graph: edge {i}: node names must be text: {err}") from None
        for n in (a, b):
            if n not in nodes:
                raise ValueError(f"graph: edge ({a!r}, {b!r}) names an unknown node {n!r}")
        out.append((a, b))
    return out


def number(where: str, key: str, v, *, positive: bool = False) -> np.ndarray:
    """``v`` as a finite numeric array (its own dtype kept); ``TypeError`` if it is not numeric,
    ``ValueError`` if a value is not finite (or not > 0 with ``positive``). ``where`` names the node."""
    a = np.asarray(v) if not isinstance(v, np.ndarray) else v
    if a.dtype.kind not in "iuf":
        raise TypeError(f"{where}: parameter {key} must be numeric (integers or floats), got "
                        f"{'dtype ' + str(a.dtype) if a.dtype.kind != 'O' else type(v).__name__} {show(v)}")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise ValueError(f"{where}: parameter {key} holds non-finite values (NaN or infinity)")
    if positive and not (a > 0).all():
        raise ValueError(f"{where}: parameter {key} must be > 0, got {a.min()!r}")
    return a


def integer(where: str, key: str, v, lo: int, hi: int = MAX_INT) -> int:
    """A scalar integer parameter in ``[lo, hi]`` (an integral float is accepted)."""
    a = np.asarray(v)
    ok = a.size == 1 and a.dtype.kind in "iuf" and bool(np.isfinite(a).all()) and float(a.flat[0]).is_integer()
    if not ok:
        raise TypeError(f"{where}: {key} must be an integer, got {show(v)}")
    x = int(a.flat[0])
    if not lo <= x <= hi:
        raise ValueError(f"{where}: {key}={x} outside [{lo}, {hi}]")
    return x


def pair(where: str, key: str, v, lo: int, hi: int = MAX_INT) -> int:
    """One integer for both axes (a scalar or an equal pair) in ``[lo, hi]`` (refsnn's layers are square)."""
    a = np.atleast_1d(np.asarray(v)).ravel()
    if a.size not in (1, 2) or a.dtype.kind not in "iuf" or not np.isfinite(a).all() or (a != a[0]).any() \
            or not float(a[0]).is_integer():
        raise ValueError(f"{where}: {key}={show(v)} is not one integer for both axes (refsnn's layers are square)")
    return integer(where, key, a[0], lo, hi)


def input_shape(name: str, node: dict) -> tuple:
    """The per-sample shape an ``Input`` node declares (its ``shape``; ``None`` when it has none)."""
    if node.get("shape") is None:
        return None
    a = np.atleast_1d(np.asarray(node["shape"])).ravel()
    where = _label(name, "Input")
    if a.dtype.kind not in "iu" and not (a.dtype.kind == "f" and np.isfinite(a).all() and (a == np.round(a)).all()):
        raise TypeError(f"{where}: shape must be integers, got {show(node['shape'])}")
    return tuple(integer(where, "shape", s, 1) for s in a)


def _sum_shape(name: str, kind: str, shapes: list) -> tuple | None:
    known = [s for s in shapes if s is not None]
    if not known:
        return None
    if any(s != known[0] for s in known):
        raise ValueError(f"{_label(name, kind)}: its inputs (summed) have different shapes {known}")
    return known[0]


def _neuron_shape(params: dict) -> tuple | None:
    for k in ("v_threshold", "tau", "tau_mem", "r"):
        if params.get(k) is not None and np.ndim(params[k]) > 0:
            return tuple(np.shape(params[k]))
    return None


def _out_shape(name: str, kind: str, p: dict, x: tuple) -> tuple:
    """Output shape of one node for input shape ``x`` (per sample), checking the parameters against it."""
    where = _label(name, kind)
    if kind in ("Affine", "Linear"):
        w = np.shape(p["weight"])
        if len(x) != 1 or x[0] != w[1]:
            raise ValueError(f"{where}: weight of shape {w} takes {w[1]} input features, got input of shape {x}")
        return (w[0],)
    if kind == "Conv2d":
        w = np.shape(p["weight"])
        if len(x) != 3 or x[0] != w[1]:
            raise ValueError(f"{where}: weight of shape {w} takes input (C={w[1]}, H, W), got input of shape {x}")
        k, s, pad = w[2], p["stride"], p["padding"]
        ho, wo = (x[1] + 2 * pad - k) // s + 1, (x[2] + 2 * pad - k) // s + 1
        if ho < 1 or wo < 1:
            raise ValueError(f"{where}: kernel {k} (padding {pad}) larger than the input {x[1:]}")
        return (w[0], ho, wo)
    if kind == "AvgPool2d":
        k = p["kernel_size"]
        if len(x) != 3 or x[1] < k or x[2] < k:
            raise ValueError(f"{where}: kernel {k} needs input (C, H, W) with H, W >= {k}, got {x}")
        return (x[0], x[1] // k, x[2] // k)
    if kind == "Flatten":
        return (math.prod(x),)
    if kind == "Scale":
        try:
            np.broadcast_shapes(np.shape(p["scale"]), x)
        except ValueError:
            raise ValueError(f"{where}: scale of shape {np.shape(p['scale'])} does not fit input {x}") from None
        return x
    if kind in NEURONS:
        for k in PARAMS[kind]:
            if p.get(k) is not None and np.ndim(p[k]) > 0 and tuple(np.shape(p[k])) != x:
                raise ValueError(f"{where}: parameter {k} has shape {np.shape(p[k])}, its input {x}")
        return x
    return x  # Output


def infer_shapes(nodes: dict, kinds: dict, params: dict, edges: list, delayed: set, order: list,
                 inputs: dict, steps: int, itemsize: int, budget: int) -> dict:
    """Per-sample output shape of every node (module docstring). ``inputs``: shape per ``Input``
    node; ``steps``: ``T x B`` (an activation may hold at most ``budget`` bytes of ``itemsize``)."""
    shapes: dict[str, tuple | None] = {n: None for n in nodes}
    shapes.update(inputs)
    for n in nodes:   # a recurrent edge reads its spiking node's population shape
        if kinds[n] in NEURONS:
            shapes[n] = _neuron_shape(params[n])
    preds: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in edges:
        preds[b].append(a)
    for _ in range(len(nodes) + 1):
        changed = False
        for n in order:
            if kinds[n] == "Input":
                continue
            x = _sum_shape(n, kinds[n], [shapes[a] for a in preds[n]])
            if x is None:
                continue
            y = _out_shape(n, kinds[n], params[n], x)
            if shapes[n] is not None and shapes[n] != y:
                raise ValueError(f"{_label(n, kinds[n])}: output shape {y} from its input, but {shapes[n]} from "
                                 "its parameters")
            if shapes[n] is None:
                shapes[n], changed = y, True
            if steps * math.prod(y) * itemsize > budget:
                raise ValueError(f"{_label(n, kinds[n])}: output of shape {y} for {steps} steps x samples needs "
                                 f"{steps * math.prod(y) * itemsize} bytes, over the read budget of {budget}")
        if not changed:
            break
    unknown = [n for n in order if shapes[n] is None]
    if unknown:
        raise ValueError(f"graph: no input reaches node {unknown[0]!r} ({kinds[unknown[0]]}), so its shape is unknown")
    return shapes
