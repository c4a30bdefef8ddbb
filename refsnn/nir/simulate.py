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

Outputs (:func:`simulate`'s dict, ``[T, B, ...]`` each): ``spikes/<node>`` (0/1) of spiking nodes,
``v/<node>`` (membrane after reset; the state of ``LI``), ``h/<node>`` (membrane before reset),
``i/<node>`` (synaptic current), ``out/<node>`` (output of every other node, ``Output`` included).
"""
from __future__ import annotations

import math

import numpy as np

from refsnn._checks import FLOAT_DTYPES, check_array
from refsnn.kernels.lif import LIFParams, lif_forward
from refsnn.nir import mapping
from refsnn.snn.layers import AvgPool2d, Conv2d, Linear

__all__ = ["SUPPORTED", "simulate", "settings", "as_dict"]

SPIKING = ("LIF", "CubaLIF")
SUPPORTED = ("Input", "Output", "Affine", "Linear", "Scale", "Flatten", "Conv2d", "AvgPool2d", "LIF", "LI",
             "CubaLIF", "CubaLI")


def as_dict(graph) -> dict:
    """NIR's dict form of ``graph`` (a ``nir.NIRGraph`` or already a dict)."""
    if isinstance(graph, dict):
        return graph
    to_dict = getattr(graph, "to_dict", None)
    if to_dict is None:
        raise TypeError(f"graph: expected a nir.NIRGraph or its dict form, got {type(graph).__name__}")
    return to_dict()


def _text(v) -> str:
    if isinstance(v, bytes):
        return v.decode("utf-8")
    if isinstance(v, np.ndarray) and v.shape == ():
        return _text(v[()])
    return str(v)


def settings(graph, *, method=None, reset=None, threshold=None, dt=None) -> dict:
    """The discretisation :func:`simulate` uses: arguments, else the graph's metadata, else defaults."""
    meta = as_dict(graph).get("metadata") or {}
    method = method or (_text(meta["discretisation"]) if "discretisation" in meta else "euler")
    reset = reset or (_text(meta["reset"]) if "reset" in meta else "hard")
    threshold = threshold or (_text(meta["threshold"]) if "threshold" in meta else ">")
    if method not in mapping.METHODS:
        raise ValueError(f"discretisation: expected one of {mapping.METHODS}, got {method!r}")
    if reset not in mapping.RESETS:
        raise ValueError(f"reset: expected one of {mapping.RESETS}, got {reset!r}")
    if threshold not in mapping.THRESHOLDS:
        raise ValueError(f"threshold: expected one of {mapping.THRESHOLDS}, got {threshold!r}")
    if dt is None:
        if "dt" not in meta:
            raise ValueError("dt: the graph's metadata has no dt (NIR graphs carry no time step); pass one")
        dt = float(np.asarray(meta["dt"]))
    if not (isinstance(dt, (int, float)) and math.isfinite(dt) and dt > 0):
        raise ValueError(f"dt: expected a positive time step, got {dt!r}")
    return {"method": method, "reset": reset, "threshold": threshold, "dt": float(dt)}


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def _uniform(node: str, kind: str, params: dict, key: str, default=None) -> float:
    if key not in params or params[key] is None:
        if default is None:
            raise ValueError(f"node {node!r} ({kind}): parameter {key} missing")
        return float(default)
    a = np.asarray(params[key], dtype=np.float64)
    if a.size == 0 or not np.isfinite(a).all():
        raise ValueError(f"node {node!r} ({kind}): parameter {key} must be finite and non-empty")
    if (a != a.flat[0]).any():
        raise ValueError(f"node {node!r} ({kind}): parameter {key} is not uniform over the population; "
                         "refsnn's neurons have one value per population")
    return float(a.flat[0])


def _pair(node: str, kind: str, key: str, v) -> int:
    a = np.atleast_1d(np.asarray(v)).ravel()
    if a.size not in (1, 2) or a.dtype.kind not in "iuf" or (a != a[0]).any() or a[0] != int(a[0]):
        raise ValueError(f"node {node!r} ({kind}): {key}={v!r} is not one integer for both axes "
                         "(refsnn's layers are square)")
    return int(a[0])


def _shape_of(params: dict) -> tuple:
    for k in ("v_threshold", "tau", "tau_mem", "r"):
        if k in params:
            return tuple(np.shape(params[k]))
    return ()


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
        self.s = np.asarray(params["scale"]).astype(dtype)

    def __call__(self, x):
        return {"out": x * self.s}


class _Flatten:
    def __init__(self, name, params, dtype):
        sd, ed = int(np.asarray(params.get("start_dim", 1))), int(np.asarray(params.get("end_dim", -1)))
        if sd not in (0, 1) or ed != -1:
            raise ValueError(f"node {name!r} (Flatten): start_dim={sd}, end_dim={ed}; refsnn flattens every "
                             "feature axis (start_dim 0 or 1, end_dim -1)")

    def __call__(self, x):
        return {"out": x.reshape(x.shape[:2] + (-1,))}


class _OrderedLinear:
    """``y = sum_i x_i W[:, i]`` accumulated in ascending ``i`` from 0, then ``+ b`` (the EC order)."""

    def __init__(self, name, params, dtype):
        w = np.asarray(params["weight"])
        if w.ndim != 2:
            raise ValueError(f"node {name!r}: weight must be 2-D (out, in), got shape {w.shape}")
        self.wt = np.ascontiguousarray(w.T.astype(dtype))
        self.b = None if params.get("bias") is None else np.asarray(params["bias"]).astype(dtype)

    def __call__(self, x):
        acc = np.zeros(x.shape[:-1] + (self.wt.shape[1],), dtype=x.dtype)
        for i in range(self.wt.shape[0]):
            acc += x[..., i, None] * self.wt[i]
        return {"out": acc if self.b is None else acc + self.b}


class _Neuron:
    """LI / LIF (exact or generic form) / CubaLI / CubaLIF, per-step NumPy loop (module docstring)."""

    def __init__(self, name, kind, params, dtype, st, init):
        self.kind, self.st, self.dtype = kind, st, dtype
        dt, m = st["dt"], st["method"]
        f = dtype.type
        cuba = kind.startswith("Cuba")
        tau = _uniform(name, kind, params, "tau_mem" if cuba else "tau")
        r = _uniform(name, kind, params, "r")
        self.v_leak = _uniform(name, kind, params, "v_leak")
        self.a, self.g = f(mapping.decay(m, dt, tau)), f(mapping.gain(m, dt, tau, r))
        self.c = f(mapping.gain(m, dt, tau, self.v_leak)) if self.v_leak != 0.0 else None
        if cuba:
            ts, w_in = _uniform(name, kind, params, "tau_syn"), _uniform(name, kind, params, "w_in", 1.0)
            self.a_s, self.g_s = f(mapping.decay(m, dt, ts)), f(mapping.gain(m, dt, ts, w_in))
        self.spiking = kind in SPIKING
        if self.spiking:
            self.v_th = f(_uniform(name, kind, params, "v_threshold"))
            self.v_reset = f(_uniform(name, kind, params, "v_reset", 0.0))
        self.shape = _shape_of(params)
        self.init = init
        self.v = self.i = self.s = None

    def _start(self, B):
        f = self.dtype.type
        self.v = np.full((B,) + self.shape, f(self.v_leak), self.dtype) if self.init.get("v") is None \
            else np.array(self.init["v"], dtype=self.dtype).reshape((B,) + self.shape)
        self.i = np.zeros((B,) + self.shape, self.dtype) if self.init.get("i") is None \
            else np.array(self.init["i"], dtype=self.dtype).reshape((B,) + self.shape)
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

    def __init__(self, name, params, dtype, st, init):
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
            decay_input, self.scale = True, dtype.type(r)
        try:
            self.p = LIFParams(tau=ts, v_th=v_th, v_reset=v_reset if reset == "hard" else None,
                               decay_input=decay_input, threshold=st["threshold"],
                               subtract_after_decay=reset == "subtract_after_decay")
        except (TypeError, ValueError) as e:
            raise ValueError(f"node {name!r} (LIF): {e}") from None
        self.shape = tuple(np.shape(params["v_threshold"]))
        self.init = init.get("v")
        self.state = None
        self.dtype = dtype

    def __call__(self, x):
        if self.scale is not None:
            x = x * self.scale
        x = np.ascontiguousarray(x)
        v0 = self.state if self.state is not None else (
            None if self.init is None else np.array(self.init, dtype=self.dtype).reshape(x.shape[1:]))
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


def _conv(name, params, dtype):
    w = np.asarray(params["weight"])
    if w.ndim != 4 or w.shape[2] != w.shape[3]:
        raise ValueError(f"node {name!r} (Conv2d): weight must be (O, C, k, k), got shape {w.shape}")
    if int(np.asarray(params.get("groups", 1))) != 1:
        raise ValueError(f"node {name!r} (Conv2d): groups != 1 is not supported")
    if _pair(name, "Conv2d", "dilation", params.get("dilation", 1)) != 1:
        raise ValueError(f"node {name!r} (Conv2d): dilation != 1 is not supported")
    stride = _pair(name, "Conv2d", "stride", params.get("stride", 1))
    pad = params.get("padding", 0)
    if isinstance(pad, (str, bytes)):
        pad = _text(pad)
        if pad == "valid":
            pad = 0
        elif pad == "same" and stride == 1 and w.shape[2] % 2 == 1:
            pad = w.shape[2] // 2
        else:
            raise ValueError(f"node {name!r} (Conv2d): padding {pad!r} with kernel {w.shape[2]}, stride {stride} "
                             "is not supported")
    else:
        pad = _pair(name, "Conv2d", "padding", pad)
    layer = Conv2d(w.shape[1], w.shape[0], w.shape[2], stride=stride, padding=pad, bias=True,
                   rng=np.random.default_rng(0), dtype=dtype)
    layer.params["w"][...] = w.astype(dtype)
    b = params.get("bias")
    layer.params["b"][...] = 0 if b is None else np.broadcast_to(np.asarray(b), (w.shape[0],)).astype(dtype)
    return _Layer(layer)


def _avgpool(name, params, dtype):
    k = _pair(name, "AvgPool2d", "kernel_size", params["kernel_size"])
    if _pair(name, "AvgPool2d", "stride", params.get("stride", k)) != k:
        raise ValueError(f"node {name!r} (AvgPool2d): stride != kernel_size is not supported")
    if _pair(name, "AvgPool2d", "padding", params.get("padding", 0)) != 0:
        raise ValueError(f"node {name!r} (AvgPool2d): padding is not supported")
    return _Layer(AvgPool2d(k, dtype=dtype))


def _linear(name, params, dtype, ordered):
    if ordered:
        return _OrderedLinear(name, params, dtype)
    w = np.asarray(params["weight"])
    if w.ndim != 2:
        raise ValueError(f"node {name!r}: weight must be 2-D (out, in), got shape {w.shape}")
    bias = params.get("bias") is not None
    layer = Linear(w.shape[1], w.shape[0], bias=bias, rng=np.random.default_rng(0), dtype=dtype)
    layer.params["w"][...] = w.astype(dtype)
    if bias:
        layer.params["b"][...] = np.broadcast_to(np.asarray(params["bias"]), (w.shape[0],)).astype(dtype)
    return _Layer(layer)


# ---------------------------------------------------------------------------------------------
# graph order
# ---------------------------------------------------------------------------------------------
def _order(nodes: dict, edges: list) -> tuple[list[str], set]:
    """(topological order of the instantaneous edges, set of delayed edges) -- module docstring."""
    succ: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in edges:
        succ[a].append(b)

    def reaches(src, dst):
        seen, todo = {src}, [src]
        while todo:
            u = todo.pop()
            if u == dst:
                return True
            for w in succ[u]:
                if w not in seen:
                    seen.add(w)
                    todo.append(w)
        return False

    delayed = {(a, b) for a, b in edges if _kind(nodes[a]) in SPIKING and reaches(b, a)}
    indeg = {n: 0 for n in nodes}
    for a, b in edges:
        if (a, b) not in delayed:
            indeg[b] += 1
    order, ready = [], [n for n in nodes if indeg[n] == 0]
    while ready:
        u = ready.pop(0)
        order.append(u)
        for a, b in edges:
            if a == u and (a, b) not in delayed:
                indeg[b] -= 1
                if indeg[b] == 0:
                    ready.append(b)
        ready.sort(key=list(nodes).index)
    if len(order) != len(nodes):
        rest = [n for n in nodes if n not in order]
        raise ValueError(f"graph: the cycle through {rest} has no spiking node (LIF, CubaLIF) to carry a "
                         "one-step delay")
    return order, delayed


def _kind(node: dict) -> str:
    return _text(node.get("type", "?"))


# ---------------------------------------------------------------------------------------------
def simulate(graph, inputs: dict, *, method=None, reset=None, threshold=None, dt=None,
             initial_state: dict | None = None) -> dict[str, np.ndarray]:
    """Run a NIR graph (module docstring). ``inputs``: ``{input node name: [T, B, *shape]}`` (float32 or
    float64, all the same dtype and ``T, B``; a single ``Input`` node also takes the key ``"input"``).
    Returns ``spikes/``, ``v/``, ``h/``, ``i/``, ``out/<node>`` arrays ``[T, B, ...]``."""
    desc = as_dict(graph)
    st = settings(desc, method=method, reset=reset, threshold=threshold, dt=dt)
    nodes = desc.get("nodes")
    if not isinstance(nodes, dict) or not nodes:
        raise ValueError("graph: no nodes")
    edges = [(_text(a), _text(b)) for a, b in desc.get("edges", [])]
    for a, b in edges:
        for n in (a, b):
            if n not in nodes:
                raise ValueError(f"graph: edge ({a!r}, {b!r}) names an unknown node {n!r}")
    for name, node in nodes.items():
        k = _kind(node)
        if k not in SUPPORTED:
            raise ValueError(f"node {name!r} ({k}): not supported by refsnn's NIR simulation "
                             f"(supported: {', '.join(SUPPORTED)})")
    ins = [n for n in nodes if _kind(nodes[n]) == "Input"]
    if not ins:
        raise ValueError("graph: no Input node")
    if not isinstance(inputs, dict):
        raise TypeError(f"inputs: expected a dict of arrays, got {type(inputs).__name__}")
    if len(ins) == 1 and ins[0] not in inputs and "input" in inputs:
        inputs = {ins[0]: inputs["input"]}
    xs = {}
    for n in ins:
        if n not in inputs:
            raise ValueError(f"inputs: no array for Input node {n!r} (have {sorted(inputs)})")
        x = check_array(f"inputs[{n!r}]", inputs[n], ndim_min=2, dtypes=FLOAT_DTYPES)
        want = tuple(int(s) for s in np.atleast_1d(np.asarray(nodes[n].get("shape", x.shape[2:]))))
        if x.shape[2:] != want:
            raise ValueError(f"inputs[{n!r}]: expected shape [T, B, {', '.join(map(str, want))}] (the Input node's "
                             f"type), got {x.shape}")
        xs[n] = x
    first = next(iter(xs.values()))
    dtype, (T, B) = first.dtype, first.shape[:2]
    for n, x in xs.items():
        if x.dtype != dtype or x.shape[:2] != (T, B):
            raise ValueError(f"inputs[{n!r}]: expected dtype {dtype} and [T, B] = {(T, B)}, got {x.dtype} "
                             f"{x.shape[:2]}")
    order, delayed = _order(nodes, edges)
    init = initial_state or {}
    ex = {}
    for name in order:
        node, k = nodes[name], _kind(nodes[name])
        i0 = {"v": init.get(f"v/{name}"), "i": init.get(f"i/{name}")}
        if k in ("Input", "Output"):
            ex[name] = None
        elif k == "Conv2d":
            ex[name] = _conv(name, node, dtype)
        elif k == "AvgPool2d":
            ex[name] = _avgpool(name, node, dtype)
        elif k in ("Affine", "Linear"):
            ex[name] = _linear(name, node, dtype, ordered=bool(delayed))
        elif k == "Scale":
            ex[name] = _Scale(name, node, dtype)
        elif k == "Flatten":
            ex[name] = _Flatten(name, node, dtype)
        elif k == "LIF" and st["method"] == "euler":
            ex[name] = _LIFKernel(name, node, dtype, st, i0)
        else:
            ex[name] = _Neuron(name, k, node, dtype, st, i0)
    preds = {n: [(a, (a, b) in delayed) for a, b in edges if b == n] for n in nodes}

    def run(cur: dict, prev: dict, t0: int, t1: int) -> dict:
        out = {}
        for name in order:
            k = _kind(nodes[name])
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
                        parts.append(np.zeros((t1 - t0, B) + ex[a].shape, dtype))
                if not parts:
                    raise ValueError(f"node {name!r} ({k}): has no input")
                x = parts[0]
                for p in parts[1:]:
                    x = x + p
                r = {"out": x} if ex[name] is None else ex[name](x)
            cur[name] = r["out"]
            out[name] = r
        return out

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
        r, k = res[name], _kind(nodes[name])
        if k in SPIKING or k in ("LI", "CubaLI"):
            for key in ("spikes", "v", "h", "i"):
                if key in r:
                    result[f"{key}/{name}"] = r[key]
        else:
            result[f"out/{name}"] = r["out"]
    return result
