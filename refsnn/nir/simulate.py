"""Reference simulation of a NIR graph with refsnn's kernels, under a stated discretisation.

:func:`simulate` takes a ``nir.NIRGraph`` (or NIR's dict form, ``NIRGraph.to_dict()``; ``nir`` itself
is not imported here) and input arrays ``[T, B, *shape]`` per ``Input`` node, and runs ``T`` steps of
length ``dt``. Settings (each from the argument, else from the graph's metadata as refsnn writes it,
else the default): ``method`` (``euler`` | ``exact``, default ``euler``; :mod:`refsnn.nir.mapping`
has the equations), ``reset`` (``hard`` -- NIR's definition --, ``subtract``,
``subtract_after_decay``), ``threshold`` (``>`` -- NIR's --, ``>=``) and ``dt`` (no default: NIR has
none).

Graph semantics. A node's input is the sum of its incoming edges, added in the order the edges are
listed (``x = e_1 + e_2 + ...``). Every edge leaving a spiking node (``LIF``, ``CubaLIF``) that closes a
cycle carries a delay of one step (the node reads the spikes of the previous step; zero before step
0); every other edge is instantaneous, and the rest of the graph must be acyclic. Nodes run in a
topological order of the instantaneous edges (ties in the graph's node order). An acyclic graph is
evaluated layer by layer over all ``T`` steps at once; a graph with a delay step by step.

Nodes (``x`` the summed input, constants from :mod:`refsnn.nir.mapping` in float64, rounded once to
the input's dtype; every neuron parameter must be uniform over its population -- refsnn's neurons have
one value per population -- else a ``ValueError`` naming the node and parameter):

* ``LIF``, ``euler``: :func:`refsnn.kernels.lif.lif_forward` with ``tau_steps = tau/dt``,
  ``decay_input = (r == 1)`` (``r == tau_steps``: ``decay_input=False``; any other ``r`` scales the
  input by ``r`` first), ``v_th = v_threshold``; ``hard`` reset needs ``v_leak == v_reset``, the
  subtractive resets ``v_leak == 0`` (refsnn's LIF decays towards its reset value).
* ``LIF``, ``exact`` (and every ``LI``/``CubaLI``/``CubaLIF`` state under either method, the update of
  :mod:`refsnn.kernels.cuba`): ``H = a V + g x (+ c if v_leak != 0)``; spike ``H > v_th`` (or ``>=``);
  ``V = v_reset`` where it spiked (``hard``), ``V = H - v_th`` (``subtract``), or, for
  ``subtract_after_decay``, ``H = a H_prev + g x (+ c) - v_th S_prev``. ``CubaLIF``/``CubaLI``: first
  the synapse ``I = a_syn I + g_syn x`` (``g_syn`` with ``r = w_in``), then the membrane with ``I`` as its
  input. ``LI``: ``v = a v + g x (+ c)``, the output is ``v``.
* ``Conv2d``, ``AvgPool2d``, ``Affine``/``Linear`` (acyclic graphs), ``Flatten``: refsnn's layers
  (:mod:`refsnn.snn.layers`: Numba conv and pooling, BLAS linear). In a graph with a delay, ``Affine`` /
  ``Linear`` accumulate ``y = sum_i x_i W[:, i]`` over inputs in ascending order from 0 (then ``+ b``),
  the order of :mod:`refsnn.kernels.cuba`. ``Scale``: ``x * scale``. ``Flatten`` flattens every
  feature axis (``start_dim`` 0, or 1 as some exporters write it, with ``end_dim`` -1).

Initial state: ``v = v_leak`` and ``I = 0`` unless ``initial_state`` gives ``v/<node>`` (``H`` for
``subtract_after_decay``) or ``i/<node>``, shape ``[B, *shape]``. Unsupported nodes (``IF``, ``I``,
``Threshold``, ``Delay``, ``Conv1d``, ``SumPool2d``, nested graphs) and parameters refsnn cannot run
(dilation, groups, unequal strides, ...) are a ``ValueError`` naming the node.

Checks before anything runs (:mod:`refsnn.nir.graph`): the structure, every parameter (numeric,
finite, time constants > 0, integral strides/kernels/padding), the shapes through the graph, the
inputs (finite, ``T, B >= 1``, one array per ``Input`` node and nothing else) and the initial state
(``v/<node>``/``i/<node>`` of existing neuron nodes, finite, shape ``[B, *shape]``); a node whose
output is not finite (an overflow) is an error too. Every problem is a ``ValueError``/``TypeError``
naming the node, parameter or input.

Outputs (:func:`simulate`'s dict, ``[T, B, ...]`` each): ``spikes/<node>`` (0/1) of spiking nodes,
``v/<node>`` (membrane after reset; the state of ``LI``), ``h/<node>`` (membrane before reset),
``i/<node>`` (synaptic current), ``out/<node>`` (output of every other node, ``Output`` included).
"""
from __future__ import annotations

import math

import numpy as np

from refsnn._checks import FLOAT_DTYPES, check_array
from refsnn.io import file_budget
from refsnn.kernels.lif import LIFParams, lif_forward
from refsnn.nir import mapping
from refsnn.nir.graph import (
    MAX_NODES,
    NEURONS,
    PARAMS,
    TAUS,
    edges_of,
    infer_shapes,
    input_shape,
    integer,
    number,
    pair,
    show,
    text,
)
from refsnn.snn.layers import AvgPool2d, Conv2d, Linear

__all__ = ["SUPPORTED", "simulate", "settings", "as_dict"]

SPIKING = ("LIF", "CubaLIF")
SUPPORTED = tuple(PARAMS)


def as_dict(graph) -> dict:
    """NIR's dict form of ``graph`` (a ``nir.NIRGraph`` or already a dict)."""
    if isinstance(graph, dict):
        return graph
    to_dict = getattr(graph, "to_dict", None)
    if to_dict is None:
        raise TypeError(f"graph: expected a nir.NIRGraph or its dict form, got {type(graph).__name__}")
    return to_dict()


def _meta_text(meta: dict, key: str, default: str) -> str:
    if key not in meta:
        return default
    try:
        return text(meta[key])
    except ValueError as e:
        raise ValueError(f"{key}: the graph's metadata {key}: {e}") from None


def settings(graph, *, method=None, reset=None, threshold=None, dt=None) -> dict:
    """The discretisation :func:`simulate` uses: arguments, else the graph's metadata, else defaults."""
    meta = as_dict(graph).get("metadata")
    meta = {} if meta is None else meta
    if not isinstance(meta, dict):
        raise ValueError(f"graph: metadata must be a mapping, got {type(meta).__name__}")
    method = method or _meta_text(meta, "discretisation", "euler")
    reset = reset or _meta_text(meta, "reset", "hard")
    threshold = threshold or _meta_text(meta, "threshold", ">")
    if method not in mapping.METHODS:
        raise ValueError(f"discretisation: expected one of {mapping.METHODS}, got {method!r}")
    if reset not in mapping.RESETS:
        raise ValueError(f"reset: expected one of {mapping.RESETS}, got {reset!r}")
    if threshold not in mapping.THRESHOLDS:
        raise ValueError(f"threshold: expected one of {mapping.THRESHOLDS}, got {threshold!r}")
    if dt is None:
        if "dt" not in meta:
            raise ValueError("dt: the graph's metadata has no dt (NIR graphs carry no time step); pass one")
        raw = meta["dt"]
        a = None if isinstance(raw, (str, bytes)) else np.asarray(raw)
        if a is None or a.shape != () or a.dtype.kind not in "iuf":
            raise ValueError(f"dt: the graph's metadata dt must be a positive number, got {show(raw)}")
        dt = a.item()
    if isinstance(dt, bool) or not (isinstance(dt, (int, float)) and math.isfinite(dt) and dt > 0):
        raise ValueError(f"dt: expected a positive time step, got {dt!r}")
    return {"method": method, "reset": reset, "threshold": threshold, "dt": float(dt)}


# ---------------------------------------------------------------------------------------------
# parameters: checked once per node (refsnn.nir.graph), then read by the executors
# ---------------------------------------------------------------------------------------------
def _label(node: str, kind: str) -> str:
    return f"node {node!r} ({kind})"


def _weight(where: str, v, ndim: int) -> np.ndarray:
    w = number(where, "weight", v)
    if w.ndim != ndim or 0 in w.shape:
        want = "(out, in)" if ndim == 2 else "(O, C, k, k)"
        raise ValueError(f"{where}: weight must be {want} with no empty axis, got shape {w.shape}")
    return w


def _bias(where: str, v, n: int) -> np.ndarray | None:
    if v is None:
        return None
    b = number(where, "bias", v)
    if b.ndim > 1 or b.size not in (1, n):
        raise ValueError(f"{where}: bias must hold 1 or {n} values, got shape {b.shape}")
    return np.broadcast_to(b, (n,))


def _check_params(name: str, kind: str, node: dict, st: dict) -> dict:
    """The parameters of one node, checked (module docstring); keys absent from the node are ``None``."""
    where = _label(name, kind)
    p = {k: node.get(k) for k in PARAMS[kind]}
    if kind in ("Affine", "Linear"):
        if p["weight"] is None:
            raise ValueError(f"{where}: parameter weight missing")
        p["weight"] = _weight(where, p["weight"], 2)
        p["bias"] = _bias(where, p.get("bias"), p["weight"].shape[0])
    elif kind == "Conv2d":
        if p["weight"] is None:
            raise ValueError(f"{where}: parameter weight missing")
        w = p["weight"] = _weight(where, p["weight"], 4)
        if w.shape[2] != w.shape[3]:
            raise ValueError(f"{where}: weight must be (O, C, k, k) (square kernels), got shape {w.shape}")
        if integer(where, "groups", 1 if p["groups"] is None else p["groups"], 1) != 1:
            raise ValueError(f"{where}: groups != 1 is not supported")
        if pair(where, "dilation", 1 if p["dilation"] is None else p["dilation"], 1) != 1:
            raise ValueError(f"{where}: dilation != 1 is not supported")
        p["stride"] = pair(where, "stride", 1 if p["stride"] is None else p["stride"], 1)
        p["padding"] = _padding(where, 0 if p["padding"] is None else p["padding"], w.shape[2], p["stride"])
        p["bias"] = _bias(where, p["bias"], w.shape[0])
    elif kind == "AvgPool2d":
        if p["kernel_size"] is None:
            raise ValueError(f"{where}: parameter kernel_size missing")
        k = p["kernel_size"] = pair(where, "kernel_size", p["kernel_size"], 1)
        if pair(where, "stride", k if p["stride"] is None else p["stride"], 1) != k:
            raise ValueError(f"{where}: stride != kernel_size is not supported")
        if pair(where, "padding", 0 if p["padding"] is None else p["padding"], 0) != 0:
            raise ValueError(f"{where}: padding is not supported")
    elif kind == "Scale":
        if p["scale"] is None:
            raise ValueError(f"{where}: parameter scale missing")
        p["scale"] = number(where, "scale", p["scale"])
    elif kind == "Flatten":
        sd = integer(where, "start_dim", 1 if p["start_dim"] is None else p["start_dim"], -64, 64)
        ed = integer(where, "end_dim", -1 if p["end_dim"] is None else p["end_dim"], -64, 64)
        if sd not in (0, 1) or ed != -1:
            raise ValueError(f"{where}: start_dim={sd}, end_dim={ed}; refsnn flattens every feature axis "
                             "(start_dim 0 or 1, end_dim -1)")
    elif kind in NEURONS:
        for k in PARAMS[kind]:
            if p[k] is not None:
                p[k] = number(where, k, p[k], positive=k in TAUS)
    return p


def _padding(where: str, pad, k: int, stride: int) -> int:
    if isinstance(pad, np.ndarray) and pad.dtype.kind in "OSU" and pad.shape == ():
        pad = pad[()]
    if isinstance(pad, (str, bytes)):
        pad = text(pad)
        if pad == "valid":
            return 0
        if pad == "same" and stride == 1 and k % 2 == 1:
            return k // 2
        raise ValueError(f"{where}: padding {pad!r} with kernel {k}, stride {stride} is not supported")
    return pair(where, "padding", pad, 0, k)


def _cast(where: str, key: str, a: np.ndarray, dtype) -> np.ndarray:
    """``a`` in the compute dtype; ``ValueError`` when a value overflows it (1e300 in float32)."""
    with np.errstate(over="ignore"):
        out = np.asarray(a).astype(dtype)
    if not np.isfinite(out).all():
        raise ValueError(f"{where}: parameter {key} overflows {np.dtype(dtype).name}")
    return out


def _uniform(name: str, kind: str, params: dict, key: str, default=None) -> float:
    if params.get(key) is None:
        if default is None:
            raise ValueError(f"node {name!r} ({kind}): parameter {key} missing")
        return float(default)
    a = np.asarray(params[key], dtype=np.float64)
    if a.size == 0:
        raise ValueError(f"node {name!r} ({kind}): parameter {key} must be finite and non-empty")
    if (a != a.flat[0]).any():
        raise ValueError(f"node {name!r} ({kind}): parameter {key} is not uniform over the population; "
                         "refsnn's neurons have one value per population")
    return float(a.flat[0])


# ---------------------------------------------------------------------------------------------
# node executors: __call__(x [T', B, ...]) -> dict of outputs [T', B, ...]; state kept between calls
# ---------------------------------------------------------------------------------------------
class _Layer:
    def __init__(self, layer):
        self.layer = layer

    def __call__(self, x):
        return {"out": self.layer.forward(x, T=x.shape[0])}


class _Scale:
    def __init__(self, name, params, dtype):
        self.s = _cast(_label(name, "Scale"), "scale", params["scale"], dtype)

    def __call__(self, x):
        return {"out": x * self.s}


class _Flatten:
    def __call__(self, x):
        return {"out": x.reshape(x.shape[:2] + (-1,))}


class _OrderedLinear:
    """``y = sum_i x_i W[:, i]`` accumulated in ascending ``i`` from 0, then ``+ b`` (the EC order)."""

    def __init__(self, name, params, dtype):
        where = _label(name, "Linear")
        self.wt = np.ascontiguousarray(_cast(where, "weight", params["weight"], dtype).T)
        self.b = None if params.get("bias") is None else _cast(where, "bias", params["bias"], dtype)

    def __call__(self, x):
        acc = np.zeros(x.shape[:-1] + (self.wt.shape[1],), dtype=x.dtype)
        for i in range(self.wt.shape[0]):
            acc += x[..., i, None] * self.wt[i]
        return {"out": acc if self.b is None else acc + self.b}


def _euler_step_ok(name: str, kind: str, key: str, tau: float, st: dict) -> None:
    if st["method"] == "euler" and tau < st["dt"]:
        raise ValueError(f"node {name!r} ({kind}): {key}/dt = {tau / st['dt']:g} < 1; forward Euler with dt > "
                         f"{key} overshoots (use the exact discretisation or a smaller dt)")


class _Neuron:
    """LI / LIF (exact or generic form) / CubaLI / CubaLIF, per-step NumPy loop (module docstring)."""

    def __init__(self, name, kind, params, dtype, st, init, shape):
        self.kind, self.st, self.dtype = kind, st, dtype
        dt, m = st["dt"], st["method"]
        f = dtype.type
        cuba = kind.startswith("Cuba")
        key = "tau_mem" if cuba else "tau"
        tau = _uniform(name, kind, params, key)
        if kind != "LIF":
            _euler_step_ok(name, kind, key, tau, st)
        r = _uniform(name, kind, params, "r")
        self.v_leak = _uniform(name, kind, params, "v_leak")
        self.a, self.g = f(mapping.decay(m, dt, tau)), f(mapping.gain(m, dt, tau, r))
        self.c = f(mapping.gain(m, dt, tau, self.v_leak)) if self.v_leak != 0.0 else None
        if cuba:
            ts, w_in = _uniform(name, kind, params, "tau_syn"), _uniform(name, kind, params, "w_in", 1.0)
            _euler_step_ok(name, kind, "tau_syn", ts, st)
            self.a_s, self.g_s = f(mapping.decay(m, dt, ts)), f(mapping.gain(m, dt, ts, w_in))
        self.spiking = kind in SPIKING
        if self.spiking:
            self.v_th = f(_uniform(name, kind, params, "v_threshold"))
            self.v_reset = f(_uniform(name, kind, params, "v_reset", 0.0))
        consts = [self.a, self.g] + ([self.c] if self.c is not None else []) + \
            ([self.a_s, self.g_s] if cuba else []) + ([self.v_th, self.v_reset] if self.spiking else [])
        if not np.isfinite(np.array(consts, dtype=np.float64)).all():
            raise ValueError(f"node {name!r} ({kind}): its constants overflow {dtype.name} (r, v_leak, w_in or "
                             "a threshold too large)")
        self.shape = shape
        self.init = init
        self.v = self.i = self.s = None

    def _start(self, B):
        f = self.dtype.type
        self.v = np.full((B,) + self.shape, f(self.v_leak), self.dtype) if self.init.get("v") is None \
            else np.array(self.init["v"], dtype=self.dtype)
        self.i = np.zeros((B,) + self.shape, self.dtype) if self.init.get("i") is None \
            else np.array(self.init["i"], dtype=self.dtype)
        self.s = np.zeros((B,) + self.shape, self.dtype)
        if self.spiking and self.st["reset"] == "subtract_after_decay":
            self.s = self._fire(self.v)

    def _fire(self, h):
        z = (h >= self.v_th) if self.st["threshold"] == ">=" else (h > self.v_th)
        return z.astype(self.dtype)

    def __call__(self, x):
        if self.v is None:
            self._start(x.shape[1])
        rec = {k: [] for k in (("spikes", "v", "h") if self.spiking else ("v",))}
        if self.kind.startswith("Cuba"):
            rec["i"] = []
        reset = self.st["reset"]
        for t in range(x.shape[0]):
            inp = x[t]
            if self.kind.startswith("Cuba"):
                self.i = self.a_s * self.i + self.g_s * inp
                rec["i"].append(self.i)
                inp = self.i
            h = self.a * self.v + self.g * inp
            if self.c is not None:
                h = h + self.c
            if not self.spiking:
                self.v = h
                rec["v"].append(h)
                continue
            if reset == "subtract_after_decay":
                h = h - self.v_th * self.s
            s = self._fire(h)
            if reset == "hard":
                v = np.where(s != 0, self.v_reset, h)
            elif reset == "subtract":
                v = np.where(s != 0, h - self.v_th, h)
            else:
                v = h
            self.v, self.s = v.astype(self.dtype, copy=False), s
            rec["spikes"].append(s)
            rec["v"].append(self.v)
            rec["h"].append(h)
        out = {k: np.stack(v) for k, v in rec.items()}
        out["out"] = out["spikes"] if self.spiking else out["v"]
        return out


class _LIFKernel:
    """``LIF`` under ``euler``: refsnn's LIF kernel (module docstring)."""

    def __init__(self, name, params, dtype, st, init, shape):
        dt = st["dt"]
        tau = _uniform(name, "LIF", params, "tau")
        r = _uniform(name, "LIF", params, "r")
        v_leak = _uniform(name, "LIF", params, "v_leak")
        v_th = _uniform(name, "LIF", params, "v_threshold")
        v_reset = _uniform(name, "LIF", params, "v_reset", 0.0)
        ts = mapping.tau_steps_euler(dt, tau)
        if ts < 1.0:
            raise ValueError(f"node {name!r} (LIF): tau/dt = {ts:g} < 1; forward Euler with dt > tau overshoots "
                             "(refsnn's LIF needs tau >= dt)")
        reset = st["reset"]
        if reset == "hard" and v_leak != v_reset:
            raise ValueError(f"node {name!r} (LIF): v_leak={v_leak} != v_reset={v_reset}; refsnn's LIF decays "
                             "towards its reset value (hard reset)")
        if reset != "hard" and v_leak != 0.0:
            raise ValueError(f"node {name!r} (LIF): v_leak={v_leak} with a subtractive reset; refsnn's soft-reset "
                             "LIF decays towards 0")
        self.scale = None
        if r == 1.0:
            decay_input = True
        elif r == ts:
            decay_input = False
        else:
            decay_input, self.scale = True, _cast(_label(name, "LIF"), "r", np.float64(r), dtype)[()]
        try:
            self.p = LIFParams(tau=ts, v_th=v_th, v_reset=v_reset if reset == "hard" else None,
                               decay_input=decay_input, threshold=st["threshold"],
                               subtract_after_decay=reset == "subtract_after_decay")
        except (TypeError, ValueError) as e:
            raise ValueError(f"node {name!r} (LIF): {e}") from None
        self.shape = shape
        self.init = init.get("v")
        self.state = None
        self.dtype = dtype

    def __call__(self, x):
        if self.scale is not None:
            x = x * self.scale
        x = np.ascontiguousarray(x)
        v0 = self.state if self.state is not None else (
            None if self.init is None else np.array(self.init, dtype=self.dtype))
        s, h = lif_forward(x, self.p, v0=v0)
        p = self.p
        if p.subtract_after_decay:
            v = h
        elif p.v_reset is None:
            v = np.where(s != 0, h - x.dtype.type(p.v_th), h)
        else:
            v = np.where(s != 0, x.dtype.type(p.v_reset), h)
        self.state = np.ascontiguousarray(v[-1])
        return {"spikes": s, "v": v, "h": h, "out": s}


def _conv(name, p, dtype):
    w, where = p["weight"], _label(name, "Conv2d")
    layer = Conv2d(w.shape[1], w.shape[0], w.shape[2], stride=p["stride"], padding=p["padding"], bias=True,
                   rng=np.random.default_rng(0), dtype=dtype)
    layer.params["w"][...] = _cast(where, "weight", w, dtype)
    layer.params["b"][...] = 0 if p["bias"] is None else _cast(where, "bias", p["bias"], dtype)
    return _Layer(layer)


def _linear(name, p, dtype, ordered):
    if ordered:
        return _OrderedLinear(name, p, dtype)
    w, where = p["weight"], _label(name, "Linear")
    bias = p.get("bias") is not None
    layer = Linear(w.shape[1], w.shape[0], bias=bias, rng=np.random.default_rng(0), dtype=dtype)
    layer.params["w"][...] = _cast(where, "weight", w, dtype)
    if bias:
        layer.params["b"][...] = _cast(where, "bias", p["bias"], dtype)
    return _Layer(layer)


# ---------------------------------------------------------------------------------------------
# graph order
# ---------------------------------------------------------------------------------------------
def _cyclic_components(nodes: dict, succ: dict) -> dict:
    """Strongly connected component of every node (Kosaraju, iterative): an edge ``a -> b`` closes a
    cycle exactly when ``a`` and ``b`` are in the same component."""
    finished, seen = [], set()
    for s in nodes:
        if s in seen:
            continue
        seen.add(s)
        stack = [(s, iter(succ[s]))]
        while stack:
            u, it = stack[-1]
            for w in it:
                if w not in seen:
                    seen.add(w)
                    stack.append((w, iter(succ[w])))
                    break
            else:
                stack.pop()
                finished.append(u)
    pred: dict[str, list[str]] = {n: [] for n in nodes}
    for a in nodes:
        for b in succ[a]:
            pred[b].append(a)
    comp: dict[str, str] = {}
    for s in reversed(finished):
        if s in comp:
            continue
        comp[s], todo = s, [s]
        while todo:
            for w in pred[todo.pop()]:
                if w not in comp:
                    comp[w] = s
                    todo.append(w)
    return comp


def _order(nodes: dict, kinds: dict, edges: list) -> tuple[list[str], set]:
    """(topological order of the instantaneous edges, set of delayed edges) -- module docstring."""
    succ: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in edges:
        succ[a].append(b)
    comp = _cyclic_components(nodes, succ)
    delayed = {(a, b) for a, b in edges if kinds[a] in SPIKING and comp[a] == comp[b]}
    indeg = {n: 0 for n in nodes}
    after: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in edges:
        if (a, b) not in delayed:
            indeg[b] += 1
            after[a].append(b)
    rank = {n: i for i, n in enumerate(nodes)}
    order, ready = [], [n for n in nodes if indeg[n] == 0]
    while ready:
        u = ready.pop(0)
        order.append(u)
        for b in after[u]:
            indeg[b] -= 1
            if indeg[b] == 0:
                ready.append(b)
        ready.sort(key=rank.__getitem__)
    if len(order) != len(nodes):
        done = set(order)
        rest = [n for n in nodes if n not in done]
        raise ValueError(f"graph: the cycle through {rest[:10]} has no spiking node (LIF, CubaLIF) to carry a "
                         "one-step delay")
    return order, delayed


def _kind(name: str, node) -> str:
    if not isinstance(node, dict):
        raise ValueError(f"node {name!r}: expected a mapping of parameters with a 'type', got {type(node).__name__}")
    if node.get("type") is None:
        raise ValueError(f"node {name!r}: no 'type'")
    try:
        return text(node["type"])
    except ValueError as e:
        raise ValueError(f"node {name!r}: type: {e}") from None


# ---------------------------------------------------------------------------------------------
def _inputs(ins: list, inputs, shapes_declared: dict) -> dict:
    if not isinstance(inputs, dict):
        raise TypeError(f"inputs: expected a dict of arrays, got {type(inputs).__name__}")
    if len(ins) == 1 and ins[0] not in inputs and "input" in inputs:
        inputs = {ins[0]: inputs["input"], **{k: v for k, v in inputs.items() if k != "input"}}
    extra = sorted(str(k) for k in inputs if k not in ins)
    if extra:
        raise ValueError(f"inputs: {extra} name no Input node of the graph (Input nodes: {ins})")
    xs = {}
    for n in ins:
        if n not in inputs:
            raise ValueError(f"inputs: no array for Input node {n!r} (have {sorted(inputs)})")
        x = check_array(f"inputs[{n!r}]", inputs[n], ndim_min=2, dtypes=FLOAT_DTYPES)
        want = shapes_declared[n] if shapes_declared[n] is not None else x.shape[2:]
        if x.shape[2:] != want:
            raise ValueError(f"inputs[{n!r}]: expected shape [T, B, {', '.join(map(str, want))}] (the Input node's "
                             f"type), got {x.shape}")
        if x.shape[0] < 1 or x.shape[1] < 1 or 0 in x.shape[2:]:
            raise ValueError(f"inputs[{n!r}]: expected at least one time step, sample and feature, got {x.shape}")
        xs[n] = x
    first = next(iter(xs.values()))
    for n, x in xs.items():
        if x.dtype != first.dtype or x.shape[:2] != first.shape[:2]:
            raise ValueError(f"inputs[{n!r}]: expected dtype {first.dtype} and [T, B] = {first.shape[:2]}, got "
                             f"{x.dtype} {x.shape[:2]}")
    return xs


def _initial_state(init, kinds: dict, shapes: dict, B: int, dtype) -> dict:
    """``initial_state`` checked: ``v/<neuron node>`` (``i/`` for ``CubaLIF``/``CubaLI``), finite, ``[B, *shape]``."""
    if init is None:
        return {}
    if not isinstance(init, dict):
        raise TypeError(f"initial_state: expected a dict of arrays, got {type(init).__name__}")
    for key, a in init.items():
        kind_, _, node = str(key).partition("/")
        ok = kind_ in ("v", "i") and kinds.get(node) in NEURONS and (kind_ == "v" or kinds[node].startswith("Cuba"))
        if not ok:
            raise ValueError(f"initial_state[{key!r}]: expected v/<node> of a neuron node or i/<node> of a CubaLIF/"
                             f"CubaLI node; neuron nodes: {sorted(n for n, k in kinds.items() if k in NEURONS)}")
        check_array(f"initial_state[{key!r}]", a, dtypes=FLOAT_DTYPES,
                    shape=(B,) + shapes[node])
    return init


def simulate(graph, inputs: dict, *, method=None, reset=None, threshold=None, dt=None,
             initial_state: dict | None = None) -> dict[str, np.ndarray]:
    """Run a NIR graph (module docstring). ``inputs``: ``{input node name: [T, B, *shape]}`` (float32 or
    float64, all the same dtype and ``T, B``; a single ``Input`` node also takes the key ``"input"``).
    Returns ``spikes/``, ``v/``, ``h/``, ``i/``, ``out/<node>`` arrays ``[T, B, ...]``."""
    desc = as_dict(graph)
    if not isinstance(desc, dict):
        raise TypeError(f"graph: expected a nir.NIRGraph or its dict form, got {type(desc).__name__}")
    st = settings(desc, method=method, reset=reset, threshold=threshold, dt=dt)
    nodes = desc.get("nodes")
    if not isinstance(nodes, dict) or not nodes:
        raise ValueError("graph: no nodes")
    if len(nodes) > MAX_NODES:
        raise ValueError(f"graph: {len(nodes)} nodes, more than the {MAX_NODES} refsnn simulates")
    kinds = {}
    for name, node in nodes.items():
        if not isinstance(name, str):
            raise ValueError(f"graph: node names must be text, got {name!r}")
        k = kinds[name] = _kind(name, node)
        if k not in SUPPORTED:
            raise ValueError(f"node {name!r} ({k}): not supported by refsnn's NIR simulation "
                             f"(supported: {', '.join(SUPPORTED)})")
    edges = edges_of(desc, nodes)
    ins = [n for n in nodes if kinds[n] == "Input"]
    if not ins:
        raise ValueError("graph: no Input node")
    params = {n: _check_params(n, kinds[n], nodes[n], st) for n in nodes}
    xs = _inputs(ins, inputs, {n: input_shape(n, nodes[n]) for n in ins})
    first = next(iter(xs.values()))
    dtype, (T, B) = first.dtype, first.shape[:2]
    order, delayed = _order(nodes, kinds, edges)
    for a, b in edges:
        if kinds[b] == "Input":
            raise ValueError(f"graph: edge ({a!r}, {b!r}) enters Input node {b!r}")
    fed = {b for _, b in edges}
    for n in order:
        if kinds[n] != "Input" and n not in fed:
            raise ValueError(f"node {n!r} ({kinds[n]}): has no input (no edge enters it)")
    shapes = infer_shapes(nodes, kinds, params, edges, delayed, order, {n: x.shape[2:] for n, x in xs.items()},
                          T * B, dtype.itemsize, file_budget())
    init = _initial_state(initial_state, kinds, shapes, B, dtype)
    ex = {}
    for name in order:
        k, p = kinds[name], params[name]
        i0 = {"v": init.get(f"v/{name}"), "i": init.get(f"i/{name}")}
        if k in ("Input", "Output"):
            ex[name] = None
        elif k == "Conv2d":
            ex[name] = _conv(name, p, dtype)
        elif k == "AvgPool2d":
            ex[name] = _Layer(AvgPool2d(p["kernel_size"], dtype=dtype))
        elif k in ("Affine", "Linear"):
            ex[name] = _linear(name, p, dtype, ordered=bool(delayed))
        elif k == "Scale":
            ex[name] = _Scale(name, p, dtype)
        elif k == "Flatten":
            ex[name] = _Flatten()
        elif k == "LIF" and st["method"] == "euler":
            ex[name] = _LIFKernel(name, p, dtype, st, i0, shapes[name])
        else:
            ex[name] = _Neuron(name, k, p, dtype, st, i0, shapes[name])
    preds: dict[str, list] = {n: [] for n in nodes}
    for a, b in edges:
        preds[b].append((a, (a, b) in delayed))

    def run(cur: dict, prev: dict, t0: int, t1: int) -> dict:
        out = {}
        for name in order:
            k = kinds[name]
            if k == "Input":
                r = {"out": xs[name][t0:t1]}
            else:
                parts = []
                for a, d in preds[name]:
                    if not d:
                        parts.append(cur[a])
                    elif a in prev:
                        parts.append(prev[a])
                    else:   # before step 0: no spikes
                        parts.append(np.zeros((t1 - t0, B) + shapes[a], dtype))
                x = parts[0]
                for p in parts[1:]:
                    x = x + p
                r = {"out": x} if ex[name] is None else ex[name](x)
            cur[name] = r["out"]
            out[name] = r
        return out

    with np.errstate(over="ignore", invalid="ignore"):
        if not delayed:
            res = run({}, {}, 0, T)
        else:
            steps, prev = [], {}
            for t in range(T):
                r = run({}, prev, t, t + 1)
                prev = {a: r[a]["out"] for a, _ in delayed}
                steps.append(r)
            res = {n: {key: np.concatenate([s[n][key] for s in steps]) for key in steps[0][n]} for n in order}
    result = {}
    for name in order:
        r, k = res[name], kinds[name]
        if not all(np.isfinite(a).all() for a in r.values()):
            raise ValueError(f"node {name!r} ({k}): its output is not finite (an overflow of {dtype.name}: "
                             "weights, gains or inputs too large)")
        if k in NEURONS:
            for key in ("spikes", "v", "h", "i"):
                if key in r:
                    result[f"{key}/{name}"] = r[key]
        else:
            result[f"out/{name}"] = r["out"]
    return result
