"""refsnn networks -> NIR graphs (``nir`` 1.0), as NIR's own dict form and as ``nir.NIRGraph``.

Two sources (``refsnn nir export``):

**A trained Conv-LIF network** (a ``refsnn train`` run: fixed ``csnn``-style architectures; MSE-NAS
genotype networks only as far as NIR expresses them, below). :func:`fold_batchnorm` first folds every
eval-mode BatchNorm into the convolution before it (float64, rounded once)::

    s = gamma / sqrt(running_var + eps),   W' = W s[o],   b' = beta + (b - running_mean) s

then :func:`network_to_nir` maps node by node (NIR node names = refsnn node names, ``/`` -> ``.``):

=====================================  =====================================================================
refsnn layer                           NIR node
=====================================  =====================================================================
``Conv2d`` (+ folded ``BatchNorm2d``)  ``Conv2d(input_shape=(H, W), weight, stride, padding, dilation 1,
                                       groups 1, bias)``
``LIF`` (:mod:`refsnn.kernels.lif`)    ``LIF(tau, r, v_leak, v_threshold, v_reset)``, every parameter an
                                       array of the population's shape (mapping: :mod:`refsnn.nir.mapping`)
``AvgPool2d(k)``                       ``AvgPool2d(kernel_size=(k, k), stride=(k, k), padding=(0, 0))``
``GlobalAvgPool``                      ``AvgPool2d(kernel_size=(H, W), ...)`` named ``<node>.pool`` ->
                                       ``Flatten`` named ``<node>``
``Flatten``                            ``Flatten(input_type=(C, H, W), start_dim=0, end_dim=-1)`` (the
                                       types exclude batch and time)
``Linear``                             ``Affine(weight, bias)`` (``Linear(weight)`` without bias)
``Add``                                no node: NIR sums the edges that enter a node
``Rectify(sign, relu=False)``          ``Scale(sign)``
``Rectify(relu=True)``, ``Concat``     **not expressible** in NIR 1.0 (no rectifier, no concatenation
                                       node): ``ValueError`` naming the refsnn node
=====================================  =====================================================================

plus ``Input`` (shape ``(C, H, W)``: the input current of one step; a direct-encoded image is the same
array at every step) and ``Output`` (the logits of one step). The graph's metadata records
``dt``, the discretisation (``euler``: refsnn's LIF is exactly forward Euler of NIR's LIF), ``reset``
(``hard``; ``subtract`` / ``subtract_after_decay`` for soft-reset presets, which NIR's LIF -- always a
hard reset to ``v_reset`` -- cannot state), ``threshold`` (``>``; ``>=`` for SpikingJelly-style
presets), the initial state and the neuron preset as JSON.

**An EC run's deployed 1-bit RSNN** (:mod:`refsnn.ec.deploy`; :func:`ec_to_nir`). The CubaLIF RSNN of
:mod:`refsnn.kernels.cuba` becomes, with ``sign_i = +1`` (excitatory ``i < n_exc``) / ``-1``
(Dale's law; all +1 for ES-RSNN) and ``K = round(sim_time/dt)`` substeps per environment step::

    input (d)  -> split  Linear [[I], [-I]]            u = [x, -x]          (EC only)
               -> w_in   Linear C_in^T (0/1)           u @ C_in
               -> g_in   Scale R_in                    i_in = R_in (u @ C_in)
    syn        -> neurons   (first)                    \\ NIR sums a node's inputs:
    g_in       -> neurons   (second)                   /  I = i_syn + i_in
    neurons    LIF(tau_m, r=1, v_leak=v_reset, v_threshold=v_th, v_reset)
    neurons    -> w_rec  Linear (sign_i C_h[i, j])_ji  Dale-signed count of last substep's spikes
    w_rec      -> syn    LI(tau_syn, r=R/(1-alpha_syn), v_leak=0)   i_syn = alpha_syn i_syn + R count
    neurons    -> rate   LI(tau_out, r=1/dt, v_leak=0)              rate = alpha_out rate + g_out s
    rate       -> w_out  Linear (sign_n C_out[n, o])_on
    w_out      -> g_out  Scale R_out  -> output (act)

under the ``exact`` discretisation (EC's own: ``alpha = exp(-dt/tau)``), time unit ms, ``dt = 0.5``.
The recurrent edge ``neurons -> w_rec`` carries the one-step delay (the spikes of the previous
substep). This is **not** a NIR ``CubaLIF`` node: EC's input current enters the *membrane* directly
(reference code, :mod:`refsnn.kernels.cuba`), whereas a ``CubaLIF`` feeds every input through its
synaptic filter; ``LI`` (synapse) + ``LIF`` (membrane) is the exact form. Outside the graph (recorded
in the metadata): the observation normaliser ``x = (obs - norm_mean) / norm_std`` held for ``K``
substeps, and ``action = clip(output at substeps K-1, 2K-1, ..., -1, 1)``.

Everything here works on NIR's documented dict form (``NIRGraph.to_dict()``); :func:`to_nir_graph`
and :func:`write_nir` are the only functions that import ``nir`` (optional extra ``refsnn[nir]``).
"""
from __future__ import annotations

import copy
import io
import json
import math
from pathlib import Path

import numpy as np

from refsnn.ec.deploy import FORMAT as EC_FORMAT
from refsnn.io import atomic_write_bytes
from refsnn.kernels.cuba import CubaConfig
from refsnn.kernels.cuba_bptt import effective_recurrent
from refsnn.kernels.lif import LIFParams
from refsnn.nir import mapping
from refsnn.snn.layers import LIF, Add, AvgPool2d, BatchNorm2d, Concat, Conv2d, Flatten, GlobalAvgPool, Linear, Rectify
from refsnn.snn.network import INPUT, Network

__all__ = ["FORMAT", "NIR_EXTRA", "fold_batchnorm", "network_to_nir", "ec_to_nir", "to_nir_graph",
           "write_nir", "require_nir", "node_name"]

#: marker in the graph metadata of every graph refsnn writes
FORMAT = "refsnn.nir/1"
NIR_EXTRA = "the NIR exchange needs the optional package nir: pip install 'refsnn[nir]' (or pip install nir)"


def require_nir():
    """``import nir``, or a ``ValueError`` naming the extra (a bad-input error: exit status 2)."""
    try:
        import nir
    except ImportError:
        raise ValueError(NIR_EXTRA) from None
    return nir


def node_name(name: str) -> str:
    """NIR node name of a refsnn node (HDF5 would turn ``/`` into nested groups)."""
    return name.replace("/", ".")


# ---------------------------------------------------------------------------------------------
# Conv-LIF networks
# ---------------------------------------------------------------------------------------------
def _consumers(net: Network) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for n in net.nodes.values():
        for i in n.inputs:
            out.setdefault(i, []).append(n.name)
    return out


def fold_batchnorm(net: Network) -> Network:
    """A copy of ``net`` (eval mode) with every ``BatchNorm2d`` that is the only consumer of a
    ``Conv2d`` folded into that convolution (module docstring); the folded conv keeps its name and
    takes the BN node's consumers. Other layers are deep copies. A BatchNorm whose ``running_var + eps``
    is not finite and positive (a corrupt checkpoint) is a ``ValueError`` naming it; :func:`network_to_nir`
    and :func:`ec_to_nir` refuse any non-finite parameter, so no graph with NaN weights is written."""
    if not isinstance(net, Network):
        raise TypeError(f"net: expected a refsnn.snn.network.Network, got {type(net).__name__}")
    cons = _consumers(net)
    folded = Network(timesteps=net.T, dtype=net.dtype)
    rename: dict[str, str] = {}
    skip = set()
    for n in net.nodes.values():
        if n.name in skip:
            continue
        ins = [rename.get(i, i) for i in n.inputs]
        layer = n.layer
        nxt = cons.get(n.name, [])
        if isinstance(layer, Conv2d) and len(nxt) == 1 and isinstance(net[nxt[0]], BatchNorm2d):
            bn = net[nxt[0]]
            w = layer.params["w"].astype(np.float64)
            b0 = layer.params["b"].astype(np.float64) if "b" in layer.params else np.zeros(layer.cout)
            var = bn.buffers["running_var"].astype(np.float64)
            if not (np.isfinite(var).all() and (var + bn.eps > 0).all()):
                raise ValueError(f"node {nxt[0]!r} (BatchNorm2d): running_var must be finite with running_var + eps "
                                 f"> 0, got min {var.min()!r} (a corrupt checkpoint)")
            s = bn.params["gamma"].astype(np.float64) / np.sqrt(var + bn.eps)
            conv = Conv2d(layer.cin, layer.cout, layer.k, stride=layer.stride, padding=layer.padding, bias=True,
                          rng=np.random.default_rng(0), dtype=net.dtype)
            conv.params["w"][...] = w * s[:, None, None, None]
            conv.params["b"][...] = bn.params["beta"].astype(np.float64) + (b0 - bn.buffers["running_mean"]) * s
            folded.add(n.name, conv, ins)
            rename[nxt[0]] = n.name
            skip.add(nxt[0])
            continue
        folded.add(n.name, copy.deepcopy(layer), ins)
    folded.set_output(rename.get(net.output, net.output))
    return folded.eval()


def _check_expressible(net: Network, *, folded: bool = True) -> None:
    for n in net.nodes.values():
        layer = n.layer
        if isinstance(layer, Rectify) and layer.relu:
            raise ValueError(f"node {n.name!r} (Rectify sign={layer.sign:+d}, relu=True): NIR 1.0 has no "
                             "rectifier (ReLU) node, so this E/I rectifier cannot be exported")
        if isinstance(layer, Concat):
            raise ValueError(f"node {n.name!r} (Concat): NIR 1.0 has no concatenation node (a node's inputs "
                             "are summed), so this network cannot be exported")
        if isinstance(layer, BatchNorm2d) and folded:
            raise ValueError(f"node {n.name!r} (BatchNorm2d): only a BatchNorm that directly follows a Conv2d "
                             "(its only consumer) is folded into it; NIR has no BatchNorm node")
        if not isinstance(layer, (Conv2d, LIF, AvgPool2d, GlobalAvgPool, Flatten, Linear, Add, Rectify, BatchNorm2d)):
            raise ValueError(f"node {n.name!r} ({type(layer).__name__}): no NIR mapping")


def _lif_semantics(p: LIFParams) -> tuple[str, str]:
    reset = "hard" if p.v_reset is not None else ("subtract_after_decay" if p.subtract_after_decay else "subtract")
    return reset, p.threshold


def _full(shape, v) -> np.ndarray:
    return np.full(tuple(int(s) for s in shape), float(v), dtype=np.float64)


def network_to_nir(net: Network, input_shape, *, dt: float = 1e-3, method: str = "euler",
                   extra_metadata: dict | None = None) -> dict:
    """NIR dict form (``NIRGraph.to_dict()`` layout) of a Conv-LIF network (module docstring).

    ``net`` is folded first (:func:`fold_batchnorm`); ``input_shape`` is one step's ``(C, H, W)``;
    ``dt`` the time step (seconds by convention); ``method`` the discretisation the NIR time constants
    are written for (``euler``: refsnn's LIF exactly; ``exact``: the same decay per step for
    simulators that integrate exactly). ``ValueError`` naming the first node NIR cannot express.
    """
    if method not in mapping.METHODS:
        raise ValueError(f"discretisation: expected one of {mapping.METHODS}, got {method!r}")
    if not (isinstance(dt, (int, float)) and math.isfinite(dt) and dt > 0):
        raise ValueError(f"dt: expected a positive time step, got {dt!r}")
    if not isinstance(input_shape, (tuple, list)) or len(input_shape) != 3:
        raise ValueError(f"input_shape: expected (C, H, W), got {input_shape!r}")
    _check_expressible(net, folded=False)
    net = fold_batchnorm(net)
    _check_expressible(net)
    nodes: dict[str, dict] = {"input": {"type": "Input", "shape": np.array(input_shape, dtype=np.int64)}}
    edges: list[list[str]] = []
    src: dict[str, list[str]] = {INPUT: ["input"]}      # refsnn node -> NIR nodes whose sum it is
    shape: dict[str, tuple] = {INPUT: tuple(int(s) for s in input_shape)}
    sem = None
    lif_info = None
    for n in net.nodes.values():
        layer, name = n.layer, node_name(n.name)
        ins = [s for i in n.inputs for s in src[i]]
        shp = shape[n.inputs[0]]
        if isinstance(layer, Add):
            src[n.name], shape[n.name] = ins, shp
            continue
        if isinstance(layer, Conv2d):
            k, st, pd = layer.k, layer.stride, layer.padding
            w = layer.params["w"]
            b = layer.params.get("b", np.zeros(layer.cout, w.dtype))
            nodes[name] = {"type": "Conv2d", "input_shape": np.array(shp[1:], dtype=np.int64),
                           "weight": w.copy(), "stride": np.array([st, st]), "padding": np.array([pd, pd]),
                           "dilation": np.array([1, 1]), "groups": 1, "bias": b.copy()}
            out = (layer.cout, (shp[1] + 2 * pd - k) // st + 1, (shp[2] + 2 * pd - k) // st + 1)
        elif isinstance(layer, LIF):
            p = layer.lif
            s = _lif_semantics(p)
            if sem is not None and s != sem:
                raise ValueError(f"node {n.name!r} (LIF): reset/threshold {s} differ from another LIF's {sem}; "
                                 "a graph records one convention")
            sem, lif_info = s, p
            v_r = 0.0 if p.v_reset is None else p.v_reset
            tau = mapping.nir_tau_for_lif(float(p.tau), float(dt), method)
            nodes[name] = {"type": "LIF", "tau": _full(shp, tau),
                           "r": _full(shp, mapping.nir_r_for_lif(float(p.tau), bool(p.decay_input))),
                           "v_leak": _full(shp, v_r), "v_threshold": _full(shp, p.v_th),
                           "v_reset": _full(shp, v_r)}
            out = shp
        elif isinstance(layer, AvgPool2d):
            k = layer.k
            nodes[name] = {"type": "AvgPool2d", "kernel_size": np.array([k, k]), "stride": np.array([k, k]),
                           "padding": np.array([0, 0])}
            out = (shp[0], shp[1] // k, shp[2] // k)
        elif isinstance(layer, GlobalAvgPool):
            pool = f"{name}.pool"
            nodes[pool] = {"type": "AvgPool2d", "kernel_size": np.array(shp[1:]), "stride": np.array(shp[1:]),
                           "padding": np.array([0, 0])}
            edges += [[i, pool] for i in ins]
            ins = [pool]
            nodes[name] = {"type": "Flatten", "input_type": np.array([shp[0], 1, 1]), "start_dim": 0, "end_dim": -1}
            out = (shp[0],)
        elif isinstance(layer, Flatten):
            nodes[name] = {"type": "Flatten", "input_type": np.array(shp), "start_dim": 0, "end_dim": -1}
            out = (int(np.prod(shp)),)
        elif isinstance(layer, Linear):
            w = layer.params["w"].copy()
            if "b" in layer.params:
                nodes[name] = {"type": "Affine", "weight": w, "bias": layer.params["b"].copy()}
            else:
                nodes[name] = {"type": "Linear", "weight": w}
            out = (layer.fout,)
        else:  # Rectify without relu (checked above)
            nodes[name] = {"type": "Scale", "scale": _full(shp, layer.sign)}
            out = shp
        edges += [[i, name] for i in ins]
        src[n.name], shape[n.name] = [name], out
    nodes["output"] = {"type": "Output", "shape": np.array(shape[net.output], dtype=np.int64)}
    edges += [[i, "output"] for i in src[net.output]]
    reset, threshold = sem if sem is not None else ("hard", ">")
    neuron = {} if lif_info is None else lif_info.to_dict()
    meta = {
        "format": FORMAT, "source": "refsnn Conv-LIF network (STBP)", "dt": float(dt), "time_unit": "s",
        "discretisation": method, "reset": reset, "threshold": threshold,
        "initial_state": "v = v_leak (0) for every LIF population before step 0",
        "input_semantics": "input: the input current of one step, shape (C, H, W) per sample; a direct-encoded "
                           "image is the same array at every step",
        "output_semantics": "output: the logits of one step; refsnn classifies by the mean over T steps",
        "mapping": "LIF: refsnn H = V + (X - (V - v_r))/tau (decay_input) or V - (V - v_r)/tau + X in steps; NIR "
                   "tau = tau_steps dt (euler) or -dt/ln(1 - 1/tau_steps) (exact), r = 1 (decay_input) or "
                   "tau_steps, v_leak = v_reset (hard reset) or 0 (soft); BatchNorm folded into Conv2d",
        "refsnn_neuron_json": json.dumps(neuron, sort_keys=True),
    }
    meta.update(extra_metadata or {})
    return _finite({"type": "NIRGraph", "nodes": nodes, "edges": edges, "metadata": meta})


def _finite(desc: dict) -> dict:
    """``desc`` if every parameter of every node is finite, else a ``ValueError`` naming the node (a
    graph with NaN weights is never written)."""
    for name, node in desc["nodes"].items():
        for k, v in node.items():
            a = np.asarray(v)
            if a.dtype.kind == "f" and not np.isfinite(a).all():
                raise ValueError(f"node {name!r} ({node['type']}): parameter {k} holds non-finite values "
                                 "(NaN or infinity); nothing written")
    return desc


# ---------------------------------------------------------------------------------------------
# EC deployed RSNN
# ---------------------------------------------------------------------------------------------
def ec_to_nir(config: dict, params: dict, *, extra_metadata: dict | None = None) -> dict:
    """NIR dict form of a deployed EC (or ES-RSNN) network: ``(config, params)`` as returned by
    :func:`refsnn.ec.deploy.from_deployed_arrays` (module docstring). The network constants are
    those ``refsnn play`` uses: ``CubaConfig(n_neurons=neurons)`` (``dale=False, sparsity=1`` for ES and for
    the SG-RSNN, whose Dale signs are in its effective recurrent weights)."""
    method = config.get("method")
    if method not in ("ec", "es", "sg-ppo"):
        raise ValueError(f"method: only EC ('ec'), ES-RSNN ('es') and SG-RSNN ('sg-ppo') deployed networks are "
                         f"spiking networks; got {method!r}")
    N = int(config["neurons"])
    source_method = method
    if method == "sg-ppo":
        # the SG-RSNN is ES-RSNN's dense float network with Dale's signs inside the recurrent weights
        # (refsnn.ec.policy.SGFamily): unsigned spikes, W = sign_j |W_h|, the same gains (sparsity 1)
        W = effective_recurrent(CubaConfig(n_neurons=N, sparsity=1.0, dale=True), np.asarray(params["W_h"]))
        params, method = {"in": params["W_in"], "h": W, "out": params["W_out"]}, "es"
    kw = {"n_neurons": N} if method == "ec" else {"n_neurons": N, "dale": False, "sparsity": 1.0}
    cfg = CubaConfig(**kw)
    obs = int(np.asarray(config["norm_mean"]).size)
    c_in, c_h, c_out = (np.asarray(params[k], dtype=np.float64) for k in ("in", "h", "out"))
    act = c_out.shape[1]
    r_in, r_h, r_out = cfg.gains(obs)
    dt = float(cfg.dt)
    a_syn, a_out = math.exp(-dt / cfg.tau_syn), math.exp(-dt / cfg.tau_out)
    g_out = (1.0 - a_out) / dt
    # the NIR r whose exact discretisation (1 - alpha) r reproduces refsnn's gain bit for bit
    r_syn = mapping.solve(lambda r: mapping.gain("exact", dt, cfg.tau_syn, r), r_h, r_h / (1.0 - a_syn))
    r_rate = mapping.solve(lambda r: mapping.gain("exact", dt, cfg.tau_out, r), g_out, 1.0 / dt)
    sign = np.ones(N)
    sign[cfg.n_exc:] = -1.0
    nodes: dict[str, dict] = {"input": {"type": "Input", "shape": np.array([obs], dtype=np.int64)}}
    edges = []
    prev = "input"
    if method == "ec":
        nodes["split"] = {"type": "Linear", "weight": np.concatenate([np.eye(obs), -np.eye(obs)])}
        edges.append(["input", "split"])
        prev = "split"
    nodes["w_in"] = {"type": "Linear", "weight": c_in.T.copy()}
    nodes["g_in"] = {"type": "Scale", "scale": _full((N,), r_in)}
    nodes["syn"] = {"type": "LI", "tau": _full((N,), cfg.tau_syn), "r": _full((N,), r_syn),
                    "v_leak": _full((N,), 0.0)}
    nodes["neurons"] = {"type": "LIF", "tau": _full((N,), cfg.tau_m), "r": _full((N,), 1.0),
                        "v_leak": _full((N,), cfg.v_reset), "v_threshold": _full((N,), cfg.v_th),
                        "v_reset": _full((N,), cfg.v_reset)}
    nodes["w_rec"] = {"type": "Linear", "weight": (sign[:, None] * c_h).T.copy()}
    nodes["rate"] = {"type": "LI", "tau": _full((N,), cfg.tau_out), "r": _full((N,), r_rate),
                     "v_leak": _full((N,), 0.0)}
    nodes["w_out"] = {"type": "Linear", "weight": (sign[:, None] * c_out).T.copy()}
    nodes["g_out"] = {"type": "Scale", "scale": _full((act,), r_out)}
    nodes["output"] = {"type": "Output", "shape": np.array([act], dtype=np.int64)}
    edges += [[prev, "w_in"], ["w_in", "g_in"], ["syn", "neurons"], ["g_in", "neurons"], ["neurons", "w_rec"],
              ["w_rec", "syn"], ["neurons", "rate"], ["rate", "w_out"], ["w_out", "g_out"], ["g_out", "output"]]
    K = cfg.n_substeps
    meta = {
        "format": FORMAT, "source": f"refsnn ec deployed network ({EC_FORMAT}, method {source_method})",
        "dt": dt, "time_unit": "ms", "discretisation": "exact", "reset": "hard", "threshold": ">",
        "substeps": K, "n_exc": cfg.n_exc if method == "ec" else N,
        "initial_state": "neurons: v ~ U[v_reset, v_th) per episode (refsnn: from the member's generator); "
                         "syn, rate: 0; no spikes before step 0",
        "input_semantics": f"input: the normalised observation x = (obs - norm_mean) / norm_std, held for "
                           f"{K} substeps per environment step",
        "output_semantics": f"output: R_out (rate @ C_out); action = clip(output at substeps {K - 1}, "
                            f"{2 * K - 1}, ..., -1, 1)",
        "recurrence": "the edge neurons -> w_rec carries a one-step delay (spikes of the previous substep)",
        "norm_mean": np.asarray(config["norm_mean"], dtype=np.float64),
        "norm_std": np.asarray(config["norm_std"], dtype=np.float64),
        "refsnn_config_json": json.dumps({k: v for k, v in config.items() if k not in ("norm_mean", "norm_std")},
                                         sort_keys=True, default=float),
        "cuba_json": json.dumps(cfg.__dict__, sort_keys=True),
    }
    meta.update(extra_metadata or {})
    return _finite({"type": "NIRGraph", "nodes": nodes, "edges": edges, "metadata": meta})


# ---------------------------------------------------------------------------------------------
# nir objects and files
# ---------------------------------------------------------------------------------------------
def to_nir_graph(desc: dict, *, type_check: bool = True):
    """``nir.NIRGraph`` of a dict form (NIR's own ``from_dict``, with its type check unless
    ``type_check=False``)."""
    nir = require_nir()
    d = copy.deepcopy(desc)
    d["type"] = "NIRGraph"
    d["type_check"] = bool(type_check)
    return nir.dict2NIRNode(d)


def write_nir(path, graph) -> Path:
    """Write a ``nir.NIRGraph`` (or a dict form) to ``path`` with ``nir.write``, atomically."""
    nir = require_nir()
    if isinstance(graph, dict):
        graph = to_nir_graph(graph)
    buf = io.BytesIO()
    nir.write(buf, graph)
    return atomic_write_bytes(path, buf.getvalue())
