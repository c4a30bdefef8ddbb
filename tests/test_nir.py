"""The NIR exchange (refsnn.nir). Export refsnn networks to NIR's dict form, simulate NIR graphs
with refsnn's kernels, and (with the optional nir package, marker ``nir``) the round trip
export -> nir.write -> nir.read -> run through the command line, bit for bit."""
from __future__ import annotations

import math
import sys

import numpy as np
import pytest

from refsnn.kernels.cuba import CubaConfig, cuba_env_step_ref, float_env_step_ref, initial_state
from refsnn.kernels.cuba_bptt import effective_recurrent
from refsnn.kernels.lif import PRESETS, LIFParams, lif_preset
from refsnn.nir import mapping
from refsnn.nir.export import NIR_EXTRA, ec_to_nir, fold_batchnorm, network_to_nir
from refsnn.nir.simulate import simulate
from refsnn.snn.archs import build_arch
from refsnn.snn.layers import LIF, Concat, Conv2d, Flatten, Linear, Rectify
from refsnn.snn.network import Network


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def _net(arch="c4-p", neuron=PRESETS["msenas"], dtype=np.float32, shape=(2, 8, 8), seed=0, T=4):
    rng = np.random.default_rng(seed)
    net = build_arch(arch, input_shape=shape, num_classes=3, timesteps=T, rng=rng, neuron=neuron, dtype=dtype)
    for n in net.nodes.values():   # non-trivial BN statistics and affine parameters
        if "running_mean" in n.layer.buffers:
            c = n.layer.c
            n.layer.buffers["running_mean"][:] = rng.normal(0, 0.2, c)
            n.layer.buffers["running_var"][:] = rng.uniform(0.3, 2.0, c)
            n.layer.params["gamma"][:] = rng.uniform(0.5, 2.0, c)
            n.layer.params["beta"][:] = rng.normal(0, 0.3, c)
    return net.eval()


def _x(net_shape, T=4, B=3, dtype=np.float32, seed=1, scale=3.0):
    return (np.random.default_rng(seed).uniform(0, scale, (T, B) + net_shape)).astype(dtype)


def _assert_matches_network(res, folded, x):
    logits = folded.forward(x)
    np.testing.assert_array_equal(res["out/output"], logits)
    for name in folded.lif_nodes():
        layer = folded[name]
        np.testing.assert_array_equal(res[f"spikes/{name}"], layer.last_spikes, err_msg=name)
        np.testing.assert_array_equal(res[f"h/{name}"], layer._c_h, err_msg=name)
    return logits


def _ec_reference(method, params, X, v0, dtype):
    """Per environment step: actions and (v, i_syn, |rate|) after K substeps, from refsnn's EC oracle."""
    N = v0.shape[1]
    cfg = CubaConfig(n_neurons=N) if method == "ec" else CubaConfig(n_neurons=N, dale=False, sparsity=1.0)
    E, B, d = X.shape
    st = initial_state(cfg, np.zeros((B, N)), dtype)
    st = (v0.astype(dtype),) + st[1:]
    acts, states = [], []
    for e in range(E):
        if method == "ec":
            C = {k: np.broadcast_to(params[k] > 0.5, (B,) + params[k].shape) for k in ("in", "h", "out")}
            st, act, _ = cuba_env_step_ref(cfg, np.concatenate([X[e], -X[e]], 1), C["in"], C["h"], C["out"], st,
                                           d_in=d)
        else:
            W = {k: np.ascontiguousarray(np.broadcast_to(params[k].astype(dtype), (B,) + params[k].shape))
                 for k in ("in", "h", "out")}
            st, act, _ = float_env_step_ref(cfg, X[e], W["in"], W["h"], W["out"], st)
        acts.append(act)
        states.append(tuple(a.copy() for a in st[:3]))
    return cfg, np.stack(acts), states


def _ec_params(method, rng, d=4, N=32, A=2):
    if method == "ec":
        return {"in": (rng.random((2 * d, N)) < 0.5) * 1.0, "h": (rng.random((N, N)) < 0.5) * 1.0,
                "out": (rng.random((N, A)) < 0.5) * 1.0}
    return {"in": rng.normal(size=(d, N)), "h": rng.normal(size=(N, N)), "out": rng.normal(size=(N, A))}


def _check_ec(res, cfg, acts, states, E):
    K = cfg.n_substeps
    idx = np.arange(E) * K + K - 1
    np.testing.assert_array_equal(np.clip(res["out/output"][idx], -1, 1), acts)
    np.testing.assert_array_equal(res["v/neurons"][idx], np.stack([s[0] for s in states]))
    np.testing.assert_array_equal(res["v/syn"][idx], np.stack([s[1] for s in states]))
    # the graph's rate integrates unsigned spikes; Dale's sign sits in w_out (exactly -rate for I neurons)
    np.testing.assert_array_equal(np.abs(res["v/rate"][idx]), np.abs(np.stack([s[2] for s in states])))
    assert res["spikes/neurons"].sum() > 0


# ---------------------------------------------------------------------------------------------
# mapping
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dt", [1e-3, 0.5, 1.0, 1e-4, 5e-4, 1e-2, 0.1])
@pytest.mark.parametrize("tau", [1.0, 1.5, 2.0, 3.0, 10.0, 1 / (1 - 0.9), 1 / (1 - 0.95)])
def test_euler_tau_maps_back_exactly(tau, dt):
    t = mapping.nir_tau_for_lif(tau, dt, "euler")
    back = mapping.tau_steps_euler(dt, t)
    if dt == 0.1 and tau in (1.5, 3.0):   # no float64 t has t / 0.1 == tau: one ulp off (module docstring)
        assert abs(back - tau) == np.spacing(tau)
    else:
        assert back == tau
    assert math.isclose(t, tau * dt, rel_tol=1e-14)
    assert mapping.decay("euler", dt, t) == pytest.approx(1 - 1 / tau, rel=1e-14, abs=1e-15)


@pytest.mark.parametrize("tau", [1.5, 2.0, 3.0, 10.0])
def test_exact_tau_gives_refsnn_decay(tau):
    t = mapping.nir_tau_for_lif(tau, 1e-3, "exact")
    assert mapping.decay("exact", 1e-3, t) == 1.0 - 1.0 / tau
    # the same r under both discretisations: input gain 1/tau (decay_input) or 1
    assert mapping.gain("exact", 1e-3, t, mapping.nir_r_for_lif(tau, True)) == pytest.approx(1 / tau, rel=1e-14)
    assert mapping.gain("exact", 1e-3, t, mapping.nir_r_for_lif(tau, False)) == pytest.approx(1.0, rel=1e-14)
    with pytest.raises(ValueError, match="tau"):
        mapping.nir_tau_for_lif(1.0, 1e-3, "exact")


def test_solve_finds_an_exact_preimage():
    x = mapping.solve(lambda r: (1 - math.exp(-0.1)) * r, 0.3, 0.3 / (1 - math.exp(-0.1)))
    assert (1 - math.exp(-0.1)) * x == 0.3


# ---------------------------------------------------------------------------------------------
# Conv-LIF networks: export to NIR's dict form, simulate, compare with refsnn's own network
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("neuron", ["msenas", "spikingjelly", "seed", "snntorch_subtract", "soft"])
def test_conv_lif_export_simulates_exactly_like_the_folded_network(neuron, dtype):
    p = LIFParams(v_reset=None) if neuron == "soft" else (
        lif_preset(neuron, beta=0.9) if neuron.startswith("snntorch") else PRESETS[neuron])
    net = _net("c4-p-f6", neuron=p, dtype=dtype)
    desc = network_to_nir(net, (2, 8, 8), dt=1e-3)
    types = {k: v["type"] for k, v in desc["nodes"].items()}
    assert types == {"input": "Input", "conv1": "Conv2d", "lif1": "LIF", "pool1": "AvgPool2d", "flatten": "Flatten",
                     "fc1": "Affine", "lif_fc1": "LIF", "fc": "Affine", "output": "Output"}
    meta = desc["metadata"]
    want_reset = {"soft": "subtract", "snntorch_subtract": "subtract_after_decay"}.get(neuron, "hard")
    assert (meta["reset"], meta["threshold"], meta["dt"], meta["discretisation"]) == (want_reset, p.threshold,
                                                                                     1e-3, "euler")
    lif = desc["nodes"]["lif1"]
    assert lif["tau"].shape == (4, 8, 8) and lif["v_threshold"].shape == (4, 8, 8)   # array-valued
    assert (lif["r"] == (1.0 if p.decay_input else p.tau)).all() and (lif["v_threshold"] == p.v_th).all()
    x = _x((2, 8, 8), dtype=dtype, scale=6.0)
    res = simulate(desc, {"input": x})
    _assert_matches_network(res, fold_batchnorm(net), x)
    assert res["spikes/lif1"].any() and not res["spikes/lif1"].all()


def test_folding_batchnorm_changes_only_rounding():
    net = _net("c4-p", dtype=np.float64)
    x = _x((2, 8, 8), dtype=np.float64)
    a, b = net.forward(x).copy(), fold_batchnorm(net).forward(x)
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_exact_discretisation_export_is_close_and_euler_run_of_it_differs():
    net = _net("c4-p", neuron=PRESETS["msenas"])
    desc = network_to_nir(net, (2, 8, 8), dt=1e-3, method="exact")
    assert desc["metadata"]["discretisation"] == "exact"
    x = _x((2, 8, 8))
    folded = fold_batchnorm(net)
    logits = folded.forward(x)
    res = simulate(desc, {"input": x})          # exact, from the metadata: the same decay per step
    np.testing.assert_allclose(res["out/output"], logits, rtol=1e-4, atol=1e-5)
    wrong = simulate(desc, {"input": x}, method="euler")   # forward Euler of the exact time constants
    assert (wrong["spikes/lif1"] != folded["lif1"].last_spikes).any()


def test_run_options_override_the_metadata():
    net = _net("c4-p", neuron=PRESETS["msenas"])
    desc = network_to_nir(net, (2, 8, 8))
    x = _x((2, 8, 8), scale=6.0)
    base = simulate(desc, {"input": x})
    soft = simulate(desc, {"input": x}, reset="subtract")
    assert (soft["spikes/lif1"] != base["spikes/lif1"]).any()
    ge = simulate(desc, {"input": x}, threshold=">=")
    assert (ge["spikes/lif1"] >= base["spikes/lif1"]).all()
    # the same network under a refsnn preset with those conventions
    q = fold_batchnorm(_net("c4-p", neuron=LIFParams(v_reset=None)))
    _assert_matches_network(soft, q, x)


def test_unexpressible_refsnn_nodes_are_named():
    rng = np.random.default_rng(0)
    net = Network(timesteps=2)
    net.add("conv", Conv2d(1, 2, 3, padding=1, rng=rng))
    net.add("e0/act", Rectify(-1, relu=True), "conv")
    net.add("lif", LIF(), "e0/act")
    with pytest.raises(ValueError, match=r"node 'e0/act' \(Rectify sign=-1, relu=True\).*no rectifier"):
        network_to_nir(net, (1, 4, 4))
    net = Network(timesteps=2)
    net.add("a", LIF())
    net.add("b", LIF())
    net.add("cat", Concat(), ["a", "b"])
    with pytest.raises(ValueError, match="node 'cat' \\(Concat\\)"):
        network_to_nir(net, (1, 4, 4))
    # an inhibitory edge without relu is a Scale(-1) node
    net = Network(timesteps=2)
    net.add("conv", Conv2d(1, 2, 3, padding=1, rng=rng))
    net.add("e0/act", Rectify(-1, relu=False), "conv")
    net.add("lif", LIF(), "e0/act")
    net.add("flat", Flatten(), "lif")
    net.add("fc", Linear(32, 2, rng=rng), "flat")
    desc = network_to_nir(net, (1, 4, 4))
    assert desc["nodes"]["e0.act"]["type"] == "Scale" and (desc["nodes"]["e0.act"]["scale"] == -1).all()
    x = _x((1, 4, 4), T=2)
    _assert_matches_network(simulate(desc, {"input": x}), net.eval(), x)


# ---------------------------------------------------------------------------------------------
# NIR graphs refsnn cannot run, bad inputs
# ---------------------------------------------------------------------------------------------
def _tiny_desc(node_type="LIF", **over):
    shp = (3,)
    neuron = {"type": node_type, "tau": np.full(shp, 2e-3), "r": np.ones(shp), "v_leak": np.zeros(shp),
              "v_threshold": np.ones(shp), "v_reset": np.zeros(shp)}
    neuron.update(over)
    return {"nodes": {"input": {"type": "Input", "shape": np.array([3])}, "n": neuron,
                      "output": {"type": "Output", "shape": np.array([3])}},
            "edges": [["input", "n"], ["n", "output"]], "metadata": {"dt": 1e-3}}


def test_unsupported_nir_nodes_and_parameters_are_named():
    x = np.ones((2, 1, 3), np.float32)
    with pytest.raises(ValueError, match=r"node 'n' \(IF\): not supported"):
        simulate(_tiny_desc("IF"), {"input": x})
    with pytest.raises(ValueError, match=r"node 'n' \(LIF\): parameter tau is not uniform"):
        simulate(_tiny_desc(tau=np.array([2e-3, 3e-3, 2e-3])), {"input": x})
    with pytest.raises(ValueError, match=r"node 'n' \(LIF\): v_leak=0.5 != v_reset=0.0"):
        simulate(_tiny_desc(v_leak=np.full(3, 0.5)), {"input": x})
    with pytest.raises(ValueError, match=r"node 'n' \(LIF\): tau/dt = 0.5 < 1"):
        simulate(_tiny_desc(tau=np.full(3, 5e-4)), {"input": x})
    d = _tiny_desc()
    d["metadata"] = {}
    with pytest.raises(ValueError, match="^dt: the graph's metadata has no dt"):
        simulate(d, {"input": x})
    assert simulate(d, {"input": x}, dt=1e-3)["spikes/n"].shape == (2, 1, 3)
    with pytest.raises(ValueError, match=r"inputs\['input'\]: expected shape \[T, B, 3\]"):
        simulate(_tiny_desc(), {"input": np.ones((2, 1, 4), np.float32)})
    with pytest.raises(ValueError, match="^discretisation: expected one of"):
        simulate(_tiny_desc(), {"input": x}, method="rk4")
    loop = _tiny_desc("LI", v_threshold=None)
    loop["nodes"]["w"] = {"type": "Linear", "weight": np.eye(3)}
    loop["edges"] += [["n", "w"], ["w", "n"]]
    with pytest.raises(ValueError, match="cycle .* has no spiking node"):
        simulate(loop, {"input": x})


def test_generic_neurons_follow_the_stated_equations():
    """LI, CubaLIF under both discretisations against the equations written out by hand (float64)."""
    dt, T = 1e-3, 12
    x = np.random.default_rng(3).uniform(0, 3, (T, 2, 3))
    for method in mapping.METHODS:
        a, g = mapping.decay(method, dt, 4e-3), mapping.gain(method, dt, 4e-3, 2.0)
        a_s, g_s = mapping.decay(method, dt, 2e-3), mapping.gain(method, dt, 2e-3, 0.5)
        d = _tiny_desc("CubaLIF", tau_mem=np.full(3, 4e-3), tau_syn=np.full(3, 2e-3), r=np.full(3, 2.0),
                       w_in=np.full(3, 0.5), v_threshold=np.full(3, 0.4))
        del d["nodes"]["n"]["tau"]
        res = simulate(d, {"input": x}, method=method)
        i = v = np.zeros((2, 3))
        for t in range(T):
            i = a_s * i + g_s * x[t]
            h = a * v + g * i
            s = h > 0.4
            v = np.where(s, 0.0, h)
            np.testing.assert_array_equal(res["i/n"][t], i)
            np.testing.assert_array_equal(res["h/n"][t], h)
            np.testing.assert_array_equal(res["spikes/n"][t], s)
        li = simulate(_tiny_desc("LI", tau=np.full(3, 4e-3), r=np.full(3, 2.0), v_leak=np.full(3, 0.25)),
                      {"input": x}, method=method)
        v, c = np.zeros((2, 3)) + 0.25, mapping.gain(method, dt, 4e-3, 0.25)
        for t in range(T):
            v = a * v + g * x[t] + c
            np.testing.assert_array_equal(li["v/n"][t], v)


# ---------------------------------------------------------------------------------------------
# EC / ES-RSNN deployed networks
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("method", ["ec", "es", "sg-ppo"])
def test_ec_export_simulates_exactly_like_the_ec_kernels(method, dtype):
    rng = np.random.default_rng(7)
    d, N, E, B = 4, 32, 5, 3
    params = _ec_params("ec" if method == "ec" else "es", rng, d, N)
    stored = params
    if method == "sg-ppo":   # its deployed keys; the reference is ES's step with the Dale-signed weights
        stored = {"W_in": params["in"], "W_h": params["h"], "W_out": params["out"]}
        params = {"in": params["in"], "h": effective_recurrent(CubaConfig(n_neurons=N, sparsity=1.0), params["h"]),
                  "out": params["out"]}
        method = "es"
    desc = ec_to_nir({"method": "sg-ppo" if stored is not params else method, "neurons": N,
                      "norm_mean": np.zeros(d), "norm_std": np.ones(d)}, stored)
    types = {k: v["type"] for k, v in desc["nodes"].items()}
    assert types["neurons"] == "LIF" and types["syn"] == "LI" and types["rate"] == "LI"
    assert ("split" in types) == (method == "ec")
    w_rec = desc["nodes"]["w_rec"]["weight"]
    if method == "ec":   # Dale's law: presynaptic column i carries sign_i
        n_exc = desc["metadata"]["n_exc"]
        assert (w_rec[:, :n_exc] >= 0).all() and (w_rec[:, n_exc:] <= 0).all()
        assert set(np.unique(w_rec)) <= {-1.0, 0.0, 1.0}
    X = (rng.normal(size=(E, B, d)) * 2).astype(dtype)
    v0 = rng.random((B, N)).astype(dtype)
    cfg, acts, states = _ec_reference(method, params, X, v0, dtype)
    K = cfg.n_substeps
    assert desc["metadata"]["substeps"] == K
    res = simulate(desc, {"input": np.repeat(X, K, axis=0)}, initial_state={"v/neurons": v0})
    _check_ec(res, cfg, acts, states, E)


def test_ec_rejects_non_spiking_methods():
    with pytest.raises(ValueError, match="method: only EC .* SG-RSNN"):
        ec_to_nir({"method": "es-gru", "neurons": 4, "norm_mean": np.zeros(2), "norm_std": np.ones(2)}, {})


def test_command_without_nir_names_the_extra(tmp_path, monkeypatch, capsys):
    from refsnn.cli import main

    monkeypatch.setitem(sys.modules, "nir", None)     # import nir -> ImportError
    assert main(["nir", "export", str(tmp_path), str(tmp_path / "g.nir")]) == 2
    err = capsys.readouterr().err
    assert NIR_EXTRA in err and err.count("\n") == 1
    assert main(["nir", "run", str(tmp_path / "g.nir"), str(tmp_path / "in.npz"), str(tmp_path / "o.npz")]) == 2
    assert "refsnn[nir]" in capsys.readouterr().err


def test_command_checks_its_positionals(tmp_path, capsys):
    from refsnn.cli import main

    assert main(["nir", "run", "g.nir", "in.npz"]) == 2
    assert "output: 'refsnn nir run' needs" in capsys.readouterr().err
    assert main(["nir", "export", "RUN", "o.nir", "extra.npz"]) == 2
    assert "output: 'refsnn nir export' takes" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# with nir installed: the round trip through files and the command line
# ---------------------------------------------------------------------------------------------
@pytest.mark.nir
def test_train_run_round_trip_through_nir_files_is_exact(tmp_path):
    nir = pytest.importorskip("nir")
    from refsnn.cli import main
    from refsnn.commands.train import TrainConfig, load_run, train
    from refsnn.io import atomic_savez, load_npz

    run_dir = tmp_path / "run"
    train(TrainConfig(arch="c4-p", timesteps=3, batch_size=16, n_train=48, n_test=20, eval_batch_size=10,
                      epochs=1, quiet=True, out=str(run_dir)))
    assert main(["nir", "export", str(run_dir), str(tmp_path / "net.nir")]) == 0
    g = nir.read(str(tmp_path / "net.nir"))
    assert isinstance(g, nir.NIRGraph)
    assert {k: type(v).__name__ for k, v in g.nodes.items()} == {
        "input": "Input", "conv1": "Conv2d", "lif1": "LIF", "pool1": "AvgPool2d", "flatten": "Flatten",
        "fc": "Affine", "output": "Output"}
    assert list(g.nodes["input"].input_type["input"]) == [1, 28, 28]
    assert list(g.nodes["output"].output_type["output"]) == [10]
    assert (float(g.metadata["dt"]), g.metadata["reset"], g.metadata["threshold"],
            g.metadata["discretisation"]) == (1e-3, "hard", ">", "euler")
    assert g.nodes["lif1"].tau.shape == (4, 28, 28)
    net, ds, cfg = load_run(run_dir)
    x = np.ascontiguousarray(np.broadcast_to(ds.x_test[:6], (3,) + ds.x_test[:6].shape)).astype(np.float32)
    atomic_savez(tmp_path / "in.npz", {"input": x})
    assert main(["nir", "run", str(tmp_path / "net.nir"), str(tmp_path / "in.npz"), str(tmp_path / "out.npz")]) == 0
    out = load_npz(tmp_path / "out.npz")
    assert str(out["discretisation"]) == "euler" and float(out["dt"]) == 1e-3
    logits = _assert_matches_network(out, fold_batchnorm(net), x)
    assert out["spikes/lif1"].any()
    np.testing.assert_allclose(logits, net.forward(x), rtol=1e-4, atol=1e-4)   # BN folding: rounding only


@pytest.mark.nir
def test_ec_run_round_trip_through_nir_files_is_exact(tmp_path):
    nir = pytest.importorskip("nir")
    from refsnn.cli import main
    from refsnn.commands.ec import ECConfig
    from refsnn.commands.ec import run as ec_run
    from refsnn.ec.deploy import from_deployed_arrays
    from refsnn.io import atomic_savez, load_npz

    run_dir = tmp_path / "ec"
    ec_run(ECConfig(generations=2, population=8, eval_members=1, max_steps=10, neurons=24, workers=0,
                    out=str(run_dir)), log=lambda *a: None)
    assert main(["nir", "export", str(run_dir), str(tmp_path / "ec.nir")]) == 0
    g = nir.read(str(tmp_path / "ec.nir"))
    assert type(g.nodes["neurons"]).__name__ == "LIF" and g.metadata["discretisation"] == "exact"
    conf, params = from_deployed_arrays(load_npz(run_dir / "deployed.npz"))
    np.testing.assert_array_equal(g.metadata["norm_mean"], conf["norm_mean"])
    rng = np.random.default_rng(0)
    d, E, B = conf["norm_mean"].size, 4, 2
    X = (5 * rng.normal(size=(E, B, d))).astype(np.float32)
    v0 = rng.random((B, 24)).astype(np.float32)
    cfg, acts, states = _ec_reference("ec", params, X, v0, np.float32)
    atomic_savez(tmp_path / "in.npz", {"input": np.repeat(X, cfg.n_substeps, axis=0), "v/neurons": v0})
    assert main(["nir", "run", str(tmp_path / "ec.nir"), str(tmp_path / "in.npz"), str(tmp_path / "out.npz")]) == 0
    _check_ec(load_npz(tmp_path / "out.npz"), cfg, acts, states, E)


@pytest.mark.nir
def test_nir_file_with_an_unsupported_node_is_refused_naming_it(tmp_path, capsys):
    nir = pytest.importorskip("nir")
    from refsnn.cli import main
    from refsnn.io import atomic_savez

    g = nir.NIRGraph.from_list(nir.Affine(weight=np.eye(3), bias=np.zeros(3)),
                               nir.IF(r=np.ones(3), v_threshold=np.ones(3)))
    g.metadata = {"dt": 1e-3}
    nir.write(str(tmp_path / "if.nir"), g)
    atomic_savez(tmp_path / "in.npz", {"input": np.ones((2, 1, 3), np.float32)})
    assert main(["nir", "run", str(tmp_path / "if.nir"), str(tmp_path / "in.npz"), str(tmp_path / "o.npz")]) == 2
    err = capsys.readouterr().err
    assert "node 'if' (IF): not supported" in err
    assert not (tmp_path / "o.npz").exists()
