"""The EC paper's deep-RNN baselines (ES-GRU, ES-LSTM): cells against their oracles and PyTorch,
the member family, the command (resume, workers, play), the deployed format."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import dtypes, seeds

from refsnn.commands import play as play_cmd
from refsnn.commands.ec import ECConfig, run
from refsnn.commands.play import PlayConfig
from refsnn.ec.deploy import deployed_arrays, from_deployed_arrays
from refsnn.ec.policy import RNNFamily, make_family, rnn_shapes
from refsnn.ec.strategy import RNNStrategy, make_strategy
from refsnn.io import load_npz
from refsnn.kernels import rnn
from refsnn.vectors.tolerances import KERNEL_TOL


def _cell_args(rng, B, I, H, G, dtype, scale=1.0):
    return (rng.normal(0, scale, (B, I)).astype(dtype), rng.normal(0, 1, (B, H)).astype(dtype),
            rng.normal(0, scale, (B, G * H, I)).astype(dtype), rng.normal(0, scale, (B, G * H, H)).astype(dtype),
            rng.normal(0, scale, (B, G * H)).astype(dtype), rng.normal(0, scale, (B, G * H)).astype(dtype))


@settings(max_examples=30, deadline=None)
@given(seed=seeds, dtype=dtypes, B=st.integers(1, 4), I=st.integers(1, 7), H=st.integers(1, 9),
       scale=st.sampled_from([0.1, 1.0, 30.0]))
def test_gru_and_lstm_cells_match_their_oracles(seed, dtype, B, I, H, scale):
    """Batched cells == the one-member-one-gate oracles, large pre-activations (saturated gates,
    exp overflow) included."""
    rng = np.random.default_rng(seed)
    x, h, w_ih, w_hh, b_ih, b_hh = _cell_args(rng, B, I, H, 3, dtype, scale)
    out = rnn.gru_cell(x, h, w_ih, w_hh, b_ih, b_hh)
    assert out.dtype == dtype and out.shape == (B, H)
    np.testing.assert_allclose(out, rnn.gru_cell_ref(x, h, w_ih, w_hh, b_ih, b_hh), **KERNEL_TOL[dtype])
    # h' = (1 - z) n + z h is a convex combination of n in (-1, 1) and h
    assert np.all(np.abs(out) <= np.maximum(1, np.abs(h)) + 1e-6)
    x, h, w_ih, w_hh, b_ih, b_hh = _cell_args(rng, B, I, H, 4, dtype, scale)
    c = rng.normal(0, 1, (B, H)).astype(dtype)
    h2, c2 = rnn.lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh)
    h2r, c2r = rnn.lstm_cell_ref(x, h, c, w_ih, w_hh, b_ih, b_hh)
    np.testing.assert_allclose(h2, h2r, **KERNEL_TOL[dtype])
    np.testing.assert_allclose(c2, c2r, **KERNEL_TOL[dtype])
    assert np.all(np.abs(h2) <= 1)          # o tanh(c') with o in (0, 1)


def test_cells_by_hand_and_bad_input():
    """A 1-unit GRU/LSTM with one input, computed by hand; wrong shapes or dtypes are refused naming
    the argument."""
    s = rnn.sigmoid
    x, h = np.array([[0.5]]), np.array([[0.2]])
    w_ih, w_hh = np.array([[[1.0], [2.0], [3.0]]]), np.array([[[-1.0], [0.5], [2.0]]])
    b_ih, b_hh = np.array([[0.1, 0.2, 0.3]]), np.array([[0.0, -0.1, 0.4]])
    r = s(1.0 * 0.5 + 0.1 - 0.2 + 0.0)
    z = s(2.0 * 0.5 + 0.2 + 0.5 * 0.2 - 0.1)
    n = np.tanh(3.0 * 0.5 + 0.3 + r * (2.0 * 0.2 + 0.4))
    assert rnn.gru_cell(x, h, w_ih, w_hh, b_ih, b_hh)[0, 0] == pytest.approx((1 - z) * n + z * 0.2, rel=1e-15)
    w4, u4 = np.array([[[0.3], [-0.2], [1.0], [0.7]]]), np.array([[[0.1], [0.4], [-0.5], [0.2]]])
    b4 = np.zeros((1, 4))
    c = np.array([[-0.3]])
    pre = [0.3 * 0.5 + 0.1 * 0.2, -0.2 * 0.5 + 0.4 * 0.2, 1.0 * 0.5 - 0.5 * 0.2, 0.7 * 0.5 + 0.2 * 0.2]
    c_new = s(pre[1]) * -0.3 + s(pre[0]) * np.tanh(pre[2])
    h_new, c_out = rnn.lstm_cell(x, h, c, w4, u4, b4, b4)
    assert c_out[0, 0] == pytest.approx(c_new, rel=1e-15)
    assert h_new[0, 0] == pytest.approx(s(pre[3]) * np.tanh(c_new), rel=1e-15)
    assert rnn.sigmoid(np.array([-1e4], np.float32))[0] == 0.0     # exp overflow: the limit, no warning
    with pytest.raises(ValueError, match="^w_hh"):
        rnn.gru_cell(x, h, w_ih, w_hh[:, :2], b_ih, b_hh)
    with pytest.raises(TypeError, match="^b_ih"):
        rnn.gru_cell(x, h, w_ih, w_hh, b_ih.astype(np.float32), b_hh)
    with pytest.raises(ValueError, match="^c"):
        rnn.lstm_cell(x, h, c[:, :0], w4, u4, b4, b4)
    with pytest.raises(ValueError, match="^x"):
        rnn.gru_cell(x[0], h, w_ih, w_hh, b_ih, b_hh)


@pytest.mark.torch
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_cells_match_pytorch(cell):
    """With PyTorch's weight layouts, nn.GRUCell / nn.LSTMCell give the same h (and c), per member."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    B, I, H = 3, 5, 7
    G = 3 if cell == "gru" else 4
    x, h, w_ih, w_hh, b_ih, b_hh = _cell_args(rng, B, I, H, G, np.float64)
    c = rng.normal(0, 1, (B, H))
    ours = rnn.gru_cell(x, h, w_ih, w_hh, b_ih, b_hh) if cell == "gru" else rnn.lstm_cell(x, h, c, w_ih, w_hh,
                                                                                         b_ih, b_hh)
    for m in range(B):
        mod = (torch.nn.GRUCell if cell == "gru" else torch.nn.LSTMCell)(I, H).double()
        with torch.no_grad():
            for name, a in (("weight_ih", w_ih), ("weight_hh", w_hh), ("bias_ih", b_ih), ("bias_hh", b_hh)):
                getattr(mod, name).copy_(torch.from_numpy(a[m]))
            xt, ht, ct = (torch.from_numpy(v[m:m + 1]) for v in (x, h, c))
            if cell == "gru":
                np.testing.assert_allclose(ours[m], mod(xt, ht)[0].numpy(), rtol=1e-13, atol=1e-14)
            else:
                th, tc = mod(xt, (ht, ct))
                np.testing.assert_allclose(ours[0][m], th[0].numpy(), rtol=1e-13, atol=1e-14)
                np.testing.assert_allclose(ours[1][m], tc[0].numpy(), rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("method", ["es-gru", "es-lstm"])
def test_rnn_family_members_and_state(method):
    fam = make_family(method, {"n_neurons": 6}, 4, 2, sigma=0.02)
    assert isinstance(fam, RNNFamily) and fam.shapes() == rnn_shapes(method, 4, 6, 2)
    G = 3 if method == "es-gru" else 4
    assert fam.shapes()["w_ih"] == (G * 6, 4) and fam.shapes()["w_out"] == (2, 6)
    c = fam.init_params(3)
    assert all(np.abs(v).max() <= 1 / np.sqrt(6) for v in c.values())
    np.testing.assert_array_equal(c["w_hh"], fam.init_params(3)["w_hh"])          # from the seed only
    eps = fam.noise(3, 5, 1)
    m2, m3, det = (fam.member(c, 3, 5, i, 4)[2] for i in (2, 3, 4))                # pair 1, then deterministic
    for k in c:
        np.testing.assert_allclose(m2[k], c[k] + 0.02 * eps[k], rtol=0, atol=1e-15)
        np.testing.assert_allclose(m3[k], c[k] - 0.02 * eps[k], rtol=0, atol=1e-15)
        np.testing.assert_array_equal(det[k], c[k])
    b = fam.build(c, 3, 5, [0, 1, 4], 4)
    x = np.random.default_rng(0).normal(size=(3, 4))
    act, spikes = fam.step(b, x, np.array([True, True, True]))
    assert act.shape == (3, 2) and np.all(np.abs(act) <= 1) and not spikes.any()
    h1 = b.state[0].copy()
    fam.step(b, x, np.array([True, False, True]))                    # a finished member keeps its state
    np.testing.assert_array_equal(b.state[0][1], h1[1])
    assert not np.array_equal(b.state[0][0], h1[0])
    with pytest.raises(ValueError, match="params"):
        fam.build({**c, "w_hh": np.full_like(c["w_hh"], np.nan)}, 3, 5, [4], 4)


def _tiny(tmp_path, name, **kw):
    base = dict(method="es-gru", neurons=8, generations=3, population=6, eval_members=2, max_steps=40, workers=0,
                out=str(tmp_path / name))
    base.update(kw)
    return ECConfig(**base)


def _quiet(cfg, **kw):
    return run(cfg, log=lambda *a: None, **kw)


@pytest.mark.parametrize("method", ["es-gru", "es-lstm"])
def test_command_runs_resumes_exactly_and_plays(tmp_path, method):
    full = _quiet(_tiny(tmp_path, "full", method=method))
    _quiet(_tiny(tmp_path, "part", method=method, generations=1))
    part = _quiet(_tiny(tmp_path, "part", method=method, resume=True))
    a, b = load_npz(tmp_path / "full" / "checkpoint.npz"), load_npz(tmp_path / "part" / "checkpoint.npz")
    for k in a:
        if k.startswith(("param.", "opt.")):
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert full["final_deterministic_return"] == part["final_deterministic_return"]
    rep = play_cmd.run(PlayConfig(str(tmp_path / "full"), replay=True))
    assert rep["mean_return"] == rep["recorded_det_return"] == full["final_deterministic_return"]
    conf = json.loads((tmp_path / "full" / "config.json").read_text())
    assert (conf["method"], conf["lr"], conf["sigma"], conf["weight_decay"]) == (method, 0.01, 0.02, 0.1)


def test_results_do_not_depend_on_workers(tmp_path):
    _quiet(_tiny(tmp_path, "w0", generations=2))
    _quiet(_tiny(tmp_path, "w2", generations=2, workers=2))
    a, b = load_npz(tmp_path / "w0" / "checkpoint.npz"), load_npz(tmp_path / "w2" / "checkpoint.npz")
    for k in a:
        if k.startswith(("param.", "opt.", "norm.")):
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_config_defaults_per_method_and_errors():
    """The reference code's defaults per method (es_dense.py: sigma 0.02, lr 0.01; hidden 256 GRU,
    128 LSTM); the RSNN methods keep theirs, so existing run directories resume."""
    assert (ECConfig().lr, ECConfig().sigma, ECConfig().neurons) == (0.15, 0.3, 256)
    assert (ECConfig(method="es").lr, ECConfig(method="es").sigma) == (0.15, 0.3)
    g, lstm = ECConfig(method="es-gru"), ECConfig(method="es-lstm")
    assert (g.lr, g.sigma, g.neurons, lstm.neurons) == (0.01, 0.02, 256, 128)
    assert ECConfig(method="es-lstm", neurons=64, lr=0.02).neurons == 64
    with pytest.raises(ValueError, match="^population"):
        ECConfig(method="es-gru", population=7)
    with pytest.raises(ValueError, match="^method"):
        ECConfig(method="es-rnn")
    s = make_strategy("es-lstm", 3, 2, population=4, eval_members=1, lr=0.01, sigma=0.02, weight_decay=0.1,
                      fitness_shift=0.0, seed=0, eps=1e-3, gradient="natural", kl_max=0.0, neurons=None)
    assert isinstance(s, RNNStrategy) and s.neurons == 128 and s.family.shapes()["w_hh"] == (512, 128)


def test_deployed_rnn_round_trip_and_corruption():
    fam = make_family("es-lstm", {"n_neurons": 5}, 3, 2, sigma=0.02)
    params = fam.init_params(0)
    conf = dict(method="es-lstm", env="Hopper-v5", neurons=5, max_steps=10, sigma=0.02, seed=1, population=4,
                eval_members=1)
    d = deployed_arrays(conf, params, np.zeros(3), np.ones(3), generation=2, det_return=1.5)
    conf2, p2 = from_deployed_arrays(d)
    assert conf2["method"] == "es-lstm" and conf2["generation"] == 2
    for k in params:
        np.testing.assert_array_equal(p2[k], params[k].astype(np.float32).astype(np.float64))
    bad = dict(d)
    bad["w.w_hh"] = bad["w.w_hh"][:, :4]
    with pytest.raises(ValueError, match=r"^w\.w_hh"):
        from_deployed_arrays(bad)
    bad = {k: v for k, v in d.items() if k != "w.b_out"}
    with pytest.raises(ValueError, match=r"^w\.\*"):
        from_deployed_arrays(bad)
    bad = dict(d)
    bad["w.w_out"] = np.zeros((0, 5), np.float32)
    with pytest.raises(ValueError, match=r"^w\.w_out"):
        from_deployed_arrays(bad)
