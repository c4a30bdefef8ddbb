"""SPEC §2.1: refsnn's MSE-NAS neuron equals BrainCog's ``LIFNode`` as the released MSE-NAS code
builds it, bit for bit in float32 (spikes, membrane, ``dL/dx``).

How the released code builds its neuron (BrainCog repository, ``examples/Structure_Evolution/MSE-NAS``):
``evolution.py``'s options default to ``--node-type LIFNode``, ``--act-fun QGateGrad`` (a string),
``--threshold 0.5``, ``--tau 2.0``, ``--n_groups 1``, ``--step 10``, with ``--layer-by-layer``,
``--requires-thres-grad``, ``--sigmoid-thres`` and ``--temporal-flatten`` off. ``tm.py``
(``train_motifs``) and ``obj.py`` pass them to timm's ``create_model("NetworkCIFAR", ...,
node_type=eval(args.node_type), threshold=..., tau=..., act_fun=args.act_fun,
layer_by_layer=..., n_groups=..., ...)``. ``NetworkCIFAR`` (``cellmodel.py``) keeps ``step`` and
``node_type`` as its own arguments and makes ``partial(node_type, **kwargs)`` of the remaining
keywords; every cell operation, the global pooling and the head call it with no arguments. Each
neuron is therefore ``LIFNode(threshold=0.5, tau=2.0, act_fun="QGateGrad", layer_by_layer=False,
n_groups=1, requires_thres_grad=False, sigmoid_thres=False, ...)`` plus model keywords
(``dataset``, ``encode_type``, ``spike_output``, ``temporal_flatten``) that ``BaseNode`` absorbs in
``**kwargs``; ``step`` is not passed, so the node keeps ``BaseNode``'s default 8 (unused in step
mode). :data:`MSENAS_NODE_KWARGS` and :func:`msenas_node` repeat that call.

BrainCog 0.2.7.19's ``LIFNode`` (``braincog/base/node/node.py``, the same class as in the
repository): ``act_fun`` given as a string is ``eval``-ed to ``QGateGrad(alpha=2.,
requires_grad=False)``; per call ``mem = mem + (x - mem) / tau``; ``spike = act_fun(mem -
threshold)`` with ``threshold`` a float32 parameter; ``mem = mem * (1 - spike.detach())``.
``QGateGrad``'s forward is ``(z > 0).float()``; its backward ``grad * (alpha - alpha^2 |z|)``, 0
where ``|z| > 1/alpha``, saved only when ``z`` requires grad.

BrainCog's layer-state conventions, as this module drives them:

* State lives in the node between calls (``node.mem``, ``node.spike``). ``node.n_reset()`` sets
  ``mem = v_reset = 0.0`` (a Python float) and ``spike = 0``; ``NetworkCIFAR.forward`` resets every
  node once per batch, then runs the whole network once per time step (step mode, the MSE-NAS
  default), so the node sees ``[B, C, H, W]`` per call. refsnn's LIF takes ``[T, B, ...]`` at once
  and starts from ``V[-1] = v0 = 0``. Without ``n_reset`` a node continues from its last membrane
  (refsnn's ``v0``).
* In step mode a ``[T, B, ...]`` tensor given in one call is one step over ``T*B*...`` neurons, not
  ``T`` steps.
* ``layer_by_layer=True``: the input is ``[(T*B), ...]``, time-major, split with ``node.step``
  (which must then equal ``T``; these tests set it) and returned in the same layout.
* ``node.mem`` after a call is the membrane after the reset, refsnn's ``V[t]``. The membrane before
  the reset, refsnn's ``H[t]``, is not kept; it is read here as the input of ``node.act_fun``
  (``H[t] - v_th``), compared with refsnn's ``h - v_th`` in float32.

Loading BrainCog: the package's ``braincog/base/__init__.py`` imports the whole toolbox (brain
areas, encoders, datasets: matplotlib, scikit-learn, seaborn, torchvision, ...), and the PyPI
torchvision wheels are linked against CUDA torch, so with the CPU torch it cannot be imported at
all. :func:`load_braincog_node` registers ``braincog.base``, ``braincog.base.strategy`` and
``braincog.base.node`` as bare packages over the installed directories (their ``__init__`` files
are not run) and imports the installed, unmodified ``node.py``; it imports ``surrogate.py`` itself.
Those two files need only torch, numpy and einops.

Bit equality: with ``v_reset = 0`` and ``tau = 2`` both sides do the same float32 operations in the
same order (``V - 0`` and ``x / 2`` are exact; ``-a*a*|z| + a`` and refsnn's ``max(0, a - a*a*|z|)``
are the same rounded sum), so spikes, ``H - v_th`` and ``V`` agree bit for bit. ``dL/dx`` agrees
bit for bit except for the sign of zero: where the true gradient is zero the two sides add
different sets of exact zeros (autograd has no term for a path that does not exist, e.g. the reset
path out of the last step, where refsnn adds ``gV (1 - S) = 0``; ``-0 + 0 = +0``), so a zero may be
``+0.0`` on one side and ``-0.0`` on the other. Non-zero gradients are compared bitwise, zeros as
IEEE values (``+0 == -0``). No tolerance is used anywhere.

Skipped when torch, einops or braincog is missing, unless ``REFSNN_REQUIRE_BRAINCOG=1`` (then the
module fails to import). ``.ci/braincog.sh`` builds the environment and runs these tests.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
import json
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import rng_from, seeds

from refsnn.kernels.lif import (
    PRESETS,
    LIFParams,
    lif_backward,
    lif_backward_ref,
    lif_forward,
    lif_forward_ref,
)
from refsnn.nas.genotype import random_genotype
from refsnn.nas.graph import DEFAULT_NEURON
from refsnn.nas.network import build_genotype_network
from refsnn.snn.archs import lif_params_from_dict

pytestmark = pytest.mark.braincog

#: The keyword arguments the released MSE-NAS code gives ``LIFNode`` (module docstring).
MSENAS_NODE_KWARGS = {
    "dataset": "dvsg", "encode_type": "direct", "threshold": 0.5, "tau": 2.0, "sigmoid_thres": False,
    "requires_thres_grad": False, "spike_output": False, "act_fun": "QGateGrad",
    "temporal_flatten": False, "layer_by_layer": False, "n_groups": 1,
}


def load_braincog_node():
    """The installed ``braincog.base.node.node`` module, without running the package ``__init__``
    files below ``braincog`` (module docstring). ``ImportError`` when braincog, torch or einops is
    missing."""
    spec = importlib.util.find_spec("braincog")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("No module named 'braincog'")
    root = Path(next(iter(spec.submodule_search_locations)))
    importlib.import_module("braincog")  # 0.2.7.19's braincog/__init__.py imports nothing
    for sub in ("base", "base.strategy", "base.node"):
        name = f"braincog.{sub}"
        if name not in sys.modules:
            pkg = types.ModuleType(name)
            pkg.__path__ = [str(root.joinpath(*sub.split(".")))]
            pkg.__package__ = name
            sys.modules[name] = pkg
    return importlib.import_module("braincog.base.node.node")


try:
    torch = importlib.import_module("torch")
    bc_node = load_braincog_node()
except ImportError as e:
    _msg = f"needs torch, einops and braincog (refsnn[braincog], .ci/braincog.sh): {e}"
    if os.environ.get("REFSNN_REQUIRE_BRAINCOG") == "1":
        pytest.fail(f"REFSNN_REQUIRE_BRAINCOG=1 but BrainCog cannot be loaded: {_msg}", pytrace=False)
    pytest.skip(_msg, allow_module_level=True)

MSENAS = PRESETS["msenas"]


def msenas_node(**overrides):
    """A BrainCog neuron built as ``NetworkCIFAR`` builds it: ``partial(LIFNode, **kwargs)()``."""
    return functools.partial(bc_node.LIFNode, **MSENAS_NODE_KWARGS)(**overrides)


# ---- the two sides ------------------------------------------------------------------------------

def braincog_step_mode(x: np.ndarray, grad_s: np.ndarray, node=None) -> dict[str, np.ndarray]:
    """Step mode (the MSE-NAS default): ``n_reset()``, then one call per step on ``x[t]``.

    Returns float32 arrays ``[T, ...]``: ``s`` spikes, ``z`` = ``H - v_th`` (the surrogate's input),
    ``v`` = ``node.mem`` after each call (after the reset), ``gx`` = ``dL/dx`` by autograd through
    the T calls for the upstream gradient ``grad_s`` on the spikes."""
    node = msenas_node() if node is None else node
    node.n_reset()
    zs = []
    hook = node.act_fun.register_forward_pre_hook(lambda _m, args: zs.append(args[0].detach().clone()))
    try:
        xs = [torch.tensor(x[t], requires_grad=True) for t in range(x.shape[0])]
        s, v = [], []
        for xt in xs:
            s.append(node(xt))
            v.append(node.mem.detach().clone())
        gx = torch.autograd.grad(torch.stack(s), xs, grad_outputs=torch.from_numpy(grad_s))
    finally:
        hook.remove()
    return {"s": torch.stack(s).detach().numpy(), "z": torch.stack(zs).numpy(),
            "v": torch.stack(v).numpy(), "gx": torch.stack(gx).numpy()}


def braincog_layer_by_layer(x: np.ndarray, grad_s: np.ndarray) -> dict[str, np.ndarray]:
    """``layer_by_layer=True`` (``step = T``): one call on ``[(T*B), ...]``; same results as
    :func:`braincog_step_mode`, reshaped back to ``[T, B, ...]``."""
    T, shape = x.shape[0], x.shape
    node = msenas_node(layer_by_layer=True, step=T, requires_mem=True)
    node.n_reset()
    zs = []
    node.act_fun.register_forward_pre_hook(lambda _m, args: zs.append(args[0].detach().clone()))
    leaf = torch.tensor(x.reshape((T * shape[1],) + shape[2:]), requires_grad=True)
    out = node(leaf)
    assert out.shape == leaf.shape
    (gx,) = torch.autograd.grad(out, leaf, grad_outputs=torch.from_numpy(grad_s.reshape(out.shape)))
    return {"s": out.detach().numpy().reshape(shape), "z": torch.stack(zs).numpy(),
            "v": torch.stack(node.mem_collect).detach().numpy(), "gx": gx.numpy().reshape(shape)}


def refsnn_side(x, grad_s, params: LIFParams = MSENAS, *, oracle: bool = False) -> dict[str, np.ndarray]:
    """refsnn's kernels (or oracles): ``s``, ``z = h - v_th``, ``v`` = the reset equation
    ``h (1 - s) + v_reset s``, ``gx`` from :func:`lif_backward`."""
    fwd, bwd = (lif_forward_ref, lif_backward_ref) if oracle else (lif_forward, lif_backward)
    s, h = fwd(x, params)
    f = np.float32
    return {"s": s, "z": h - f(params.v_th), "v": h * (f(1) - s) + f(params.v_reset) * s,
            "gx": bwd(grad_s, h, params)}


def assert_bitwise(name: str, got: np.ndarray, want: np.ndarray, *, zero_sign_free: bool = False):
    """``got`` (refsnn) equals ``want`` (BrainCog) bit for bit; with ``zero_sign_free``, +0 and -0
    count as equal (module docstring)."""
    assert got.dtype == np.float32 and want.dtype == np.float32, (name, got.dtype, want.dtype)
    assert got.shape == want.shape, (name, got.shape, want.shape)
    same = got.view(np.uint32) == want.view(np.uint32)
    if zero_sign_free:
        same |= (got == 0) & (want == 0)
    if not same.all():
        idx = tuple(int(i) for i in np.argwhere(~same)[0])
        raise AssertionError(f"{name}: {int((~same).sum())} of {same.size} elements differ; first at "
                             f"{idx}: refsnn {got[idx]!r} vs BrainCog {want[idx]!r}")


def assert_same_as_braincog(ours: dict, theirs: dict) -> None:
    for key in ("s", "z", "v"):
        assert_bitwise(key, ours[key], theirs[key])
    assert_bitwise("gx", ours["gx"], theirs["gx"], zero_sign_free=True)


# ---- inputs -------------------------------------------------------------------------------------

def make_case(seed: int, T: int, shape: tuple, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """``x [T, *shape]`` and ``grad_s``, float32. ``normal``: ``offset + scale N(0, 1)`` with offset and
    scale drawn so firing ranges over 0 % .. 100 %; ``grid``: multiples of 1/16 in [-1, 3), which hit
    ``H = v_th`` (``z = 0``) and the surrogate's corners ``|z| = 1/2`` exactly."""
    rng = rng_from(seed)
    full = (T,) + tuple(shape)
    if kind == "grid":
        x = rng.integers(-16, 48, size=full) / 16
        g = rng.integers(-8, 9, size=full) / 4
    else:
        x = rng.uniform(-1.0, 3.0) + rng.uniform(0.0, 2.0) * rng.standard_normal(full)
        g = rng.standard_normal(full)
    return x.astype(np.float32), g.astype(np.float32)


cases = st.tuples(seeds, st.integers(1, 8),
                  st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 5), st.integers(1, 5)),
                  st.sampled_from(["normal", "grid"]))


# ---- the neuron -----------------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(cases)
def test_msenas_preset_equals_braincog_lifnode_step_mode(case):
    x, g = make_case(*case)
    theirs = braincog_step_mode(x, g)
    assert_same_as_braincog(refsnn_side(x, g), theirs)
    assert_same_as_braincog(refsnn_side(x, g, oracle=True), theirs)


@settings(max_examples=15, deadline=None)
@given(cases)
def test_msenas_preset_equals_braincog_lifnode_layer_by_layer(case):
    x, g = make_case(*case)
    assert_same_as_braincog(refsnn_side(x, g), braincog_layer_by_layer(x, g))


@pytest.mark.parametrize("offset, scale, rate", [
    (0.0, 0.0, "none"), (-1.0, 0.7, "none"), (0.8, 0.6, "some"), (1.0, 0.0, "some"),
    (2.0, 0.0, "all"), (3.0, 0.3, "all"),
])
def test_firing_from_none_to_all_equals_braincog(offset, scale, rate):
    """The extremes hypothesis may miss: silent, constant (``x = 1``: ``z = 0`` at the first step,
    then firing every other step), saturated."""
    rng = rng_from(int(offset * 10 + scale * 100))
    shape = (6, 2, 3, 4, 4)
    x = (offset + scale * rng.standard_normal(shape)).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)
    ours = refsnn_side(x, g)
    assert_same_as_braincog(ours, braincog_step_mode(x, g))
    fired = float(ours["s"].mean())
    assert {"none": fired == 0.0, "some": 0.0 < fired < 1.0, "all": fired == 1.0}[rate], fired


def test_braincog_node_state_conventions():
    """``n_reset`` restarts from 0; without it the node continues from its last membrane, which is
    refsnn's ``v0``; a ``[T, B, ...]`` tensor in step mode is a single step."""
    x1, g1 = make_case(1, 5, (2, 3, 4, 4), "normal")
    x2, _ = make_case(2, 4, (2, 3, 4, 4), "normal")
    node = msenas_node()
    first = braincog_step_mode(x1, g1, node)
    assert_bitwise("s (fresh)", lif_forward(x1, MSENAS)[0], first["s"])
    # go on without n_reset: refsnn with v0 = BrainCog's last membrane
    mem = node.mem.detach().numpy().copy()
    with torch.no_grad():
        s_cont = np.stack([node(torch.from_numpy(x2[t])).numpy() for t in range(x2.shape[0])])
    s, _ = lif_forward(x2, MSENAS, v0=mem)
    assert_bitwise("s (continued)", s, s_cont)
    assert not np.array_equal(s, lif_forward(x2, MSENAS)[0]), "the carried-over state made no difference"
    # after n_reset (braincog_step_mode calls it): the same as the first run, a fresh start
    assert_bitwise("s (after n_reset)", first["s"], braincog_step_mode(x1, g1, node)["s"])
    # a whole [T, B, ...] tensor in step mode is one step over T*B*... neurons
    node.n_reset()
    with torch.no_grad():
        one_call = node(torch.from_numpy(x1)).numpy()
    assert_bitwise("s (one call)", lif_forward(x1[None], MSENAS)[0][0], one_call)
    assert not np.array_equal(one_call, first["s"])


def test_braincog_node_is_the_msenas_configuration():
    """The node the MSE-NAS keywords build has the values the preset encodes."""
    node = msenas_node()
    assert isinstance(node.act_fun, bc_node.QGateGrad)
    assert float(node.act_fun.alpha) == MSENAS.surrogate_alpha == 2.0
    assert not node.act_fun.alpha.requires_grad and not node.threshold.requires_grad
    assert node.threshold.dtype == torch.float32 and float(node.threshold) == MSENAS.v_th
    assert node.tau == MSENAS.tau and node.v_reset == MSENAS.v_reset
    assert (node.layer_by_layer, node.groups, node.sigmoid_thres, node.mem_detach) == (False, 1, False, False)
    assert (MSENAS.decay_input, MSENAS.threshold, MSENAS.surrogate, MSENAS.detach_reset) == (
        True, ">", "triangle", True)


def test_reset_not_detached_differs_from_braincog():
    """Negative checks: ``detach_reset=False`` keeps the spikes but changes ``dL/dx``; ``>=`` changes
    the spikes at ``z = 0`` (the grid inputs hit it) — the comparison can fail."""
    x, g = make_case(3, 6, (2, 3, 4, 4), "grid")
    theirs = braincog_step_mode(x, g)
    undetached = refsnn_side(x, g, dataclasses.replace(MSENAS, detach_reset=False))
    assert_bitwise("s", undetached["s"], theirs["s"])
    with pytest.raises(AssertionError, match="gx"):
        assert_bitwise("gx", undetached["gx"], theirs["gx"], zero_sign_free=True)
    ge = refsnn_side(x, g, dataclasses.replace(MSENAS, threshold=">="))
    with pytest.raises(AssertionError, match="s:"):
        assert_bitwise("s", ge["s"], theirs["s"])


# ---- the LIF layers of networks built from genotypes ---------------------------------------------

def _record_lif_layers(net) -> dict[str, dict]:
    """Wrap each LIF layer's forward/backward (on the instance) to record its input, spikes, upstream
    gradient and input gradient."""
    rec: dict[str, dict] = {}
    for name in net.lif_nodes():
        layer = net[name]
        r = rec[name] = {}

        def forward(x, *, T, _orig=layer.forward, _r=r):
            _r["x"] = np.array(x, copy=True)
            s = _orig(x, T=T)
            _r["s"] = np.array(s, copy=True)
            return s

        def backward(dy, need_dx=(True,), _orig=layer.backward, _r=r):
            gx = _orig(dy, need_dx)
            _r["dy"], _r["gx"] = np.array(dy, copy=True), np.array(gx[0], copy=True)
            return gx

        layer.forward, layer.backward = forward, backward
    return rec


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_genotype_network_lif_layers_equal_braincog(seed):
    """A network built from a random genotype without an explicit neuron: every LIF layer's params
    come from ``graph["neuron"]`` (which round-trips), and each layer, run inside the network on
    the inputs the network gives it, reproduces BrainCog's spikes and ``dL/dx``."""
    rng = rng_from(seed)
    T, B = 3, 2
    genotype = random_genotype(rng, int(rng.integers(1, 4)))
    net = build_genotype_network(genotype, input_shape=(2, 8, 8), num_classes=3, timesteps=T,
                                 rng=rng, channels=4)
    graph = net.graph
    # the params the layers use, and graph["neuron"]
    assert graph["neuron"] == DEFAULT_NEURON
    used = {net[name].lif for name in net.lif_nodes()}
    assert len(used) == 1, used
    (p,) = used
    assert p == lif_params_from_dict(graph["neuron"])
    assert p == lif_params_from_dict(json.loads(json.dumps(graph))["neuron"])
    assert p == lif_params_from_dict({"model": "lif", **p.to_dict()})
    assert dataclasses.replace(p, alpha=None) == MSENAS and p.surrogate_alpha == MSENAS.surrogate_alpha
    # run the network, then feed each layer's recorded input to BrainCog
    rec = _record_lif_layers(net)
    x = rng.standard_normal((T, B, 2, 8, 8)).astype(np.float32)
    y = net.forward(x)
    net.backward(rng.standard_normal(y.shape).astype(np.float32))
    n_grad, n_spikes = 0, 0.0
    for name, r in rec.items():
        assert r["x"].shape[0] == T, (name, r["x"].shape)
        dy = r.get("dy", np.zeros_like(r["s"]))
        theirs = braincog_step_mode(r["x"], dy)
        assert_bitwise(f"{name} s", r["s"], theirs["s"])
        n_spikes += float(r["s"].sum())
        if "gx" in r:
            assert_bitwise(f"{name} gx", r["gx"], theirs["gx"], zero_sign_free=True)
            n_grad += int(np.count_nonzero(r["gx"]))
    assert n_spikes > 0 and n_grad > 0, (n_spikes, n_grad)
