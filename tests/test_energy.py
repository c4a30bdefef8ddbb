"""refsnn.snn.energy: spike / SOP / MAC counts on hand-checkable networks, energy, noise robustness."""
from __future__ import annotations

import numpy as np
import pytest

from refsnn.snn.energy import (
    E_AC_PJ,
    E_MAC_PJ,
    conv_fanout_map,
    count_operations,
    energy_estimate,
    evaluate_with_noise,
    noisy_hits,
)
from refsnn.snn.layers import LIF, AvgPool2d, Conv2d, GlobalAvgPool, Linear
from refsnn.snn.network import Network


def _always_on(T=2):
    """conv1 (1->1, 1x1, w=0, bias=10): current 10 everywhere, so LIF1 (v_th 0.5) fires at every step."""
    rng = np.random.default_rng(0)
    net = Network(timesteps=T)
    net.add("conv1", Conv2d(1, 1, 1, bias=True, rng=rng), "input")
    net["conv1"].params["w"][...] = 0
    net["conv1"].params["b"][...] = 10
    net.add("lif1", LIF(), "conv1")
    return net, rng


def test_fanout_map():
    assert conv_fanout_map(3, 3, 3, 1, 1).tolist() == [[4, 6, 4], [6, 9, 6], [4, 6, 4]]
    assert conv_fanout_map(4, 4, 1, 1, 0).tolist() == np.ones((4, 4)).tolist()
    # stride 2, k 3, pad 1 on 5: outputs at -1..1, 1..3, 3..5 -> rows 0:1, 1:1, 2:1... covered counts
    assert conv_fanout_map(5, 1, 3, 2, 1)[:, 0].tolist() == [1, 2, 1, 2, 1]


def test_counts_by_hand():
    T, B = 2, 3
    net, rng = _always_on(T)
    net.add("conv2", Conv2d(1, 2, 3, padding=1, rng=rng), "lif1")      # spikes in: SOPs
    net.add("lif2", LIF(), "conv2")
    net.add("gap", GlobalAvgPool(), "lif2")
    net.add("fc", Linear(2, 5, rng=rng), "gap")                         # GAP of spikes: SOPs
    x = np.zeros((T, B, 1, 3, 3), np.float32)
    c = count_operations(net, x)
    # conv1: real-valued input -> MACs = 3*3 outputs * 1 * 1 * 1x1 per step, T steps
    assert c.per_layer["conv1"] == {"kind": "mac", "ops": 9.0 * T}
    # conv2: all 9 pixels spike at every step; fan-out sum (2+3+2)^2 = 49 positions x 2 channels
    assert c.per_layer["conv2"] == {"kind": "sop", "ops": 49.0 * 2 * T}
    s2 = net["lif2"].last_spikes
    assert c.per_layer["fc"]["kind"] == "sop"
    assert c.per_layer["fc"]["ops"] == pytest.approx(s2.sum() * 5 / B)
    assert c.spikes == pytest.approx((9 * T * B + s2.sum()) / B)
    assert c.macs == 9.0 * T and c.sops == pytest.approx(98.0 * T + s2.sum() * 5 / B)
    assert c.energy_pj == pytest.approx(c.sops * 0.9 + c.macs * 4.6)
    # static_once counts the stem once
    assert count_operations(net, x, static_once=True).macs == 9.0


def test_pooled_spikes_and_floor():
    T, B = 2, 1
    net, rng = _always_on(T)
    net.add("pool", AvgPool2d(2), "lif1")            # 3x3 -> 1x1: the last row/column is dropped
    net.add("conv2", Conv2d(1, 4, 1, rng=rng), "pool")
    x = np.zeros((T, B, 1, 3, 3), np.float32)
    c = count_operations(net, x)
    # 4 spikes per step under the pooled window, each with fan-out 4 (1x1 conv, 4 channels)
    assert c.per_layer["conv2"] == {"kind": "sop", "ops": 4.0 * 4 * T}


def test_input_is_spikes_and_oracle():
    rng = np.random.default_rng(1)
    T, B = 3, 2
    net = Network(timesteps=T)
    net.add("conv", Conv2d(2, 3, 3, padding=1, stride=2, rng=rng), "input")
    x = (rng.random((T, B, 2, 5, 4)) < 0.3).astype(np.float32)
    c = count_operations(net, x, input_is_spikes=True)
    # oracle: enumerate every (output position, input tap) pair hit by a spike
    ops = 0
    for o_y in range(3):
        for o_x in range(2):
            for i in range(3):
                for j in range(3):
                    yy, xx = o_y * 2 - 1 + i, o_x * 2 - 1 + j
                    if 0 <= yy < 5 and 0 <= xx < 4:
                        ops += x[:, :, :, yy, xx].sum() * 3
    assert c.sops == pytest.approx(ops / B) and c.macs == 0


def test_energy_constants():
    assert (E_AC_PJ, E_MAC_PJ) == (0.9, 4.6)
    assert energy_estimate(10, 2) == pytest.approx(9.0 + 9.2)


def test_csnn_counts_and_noise():
    from refsnn.datasets import load
    from refsnn.snn.archs import build_arch
    from refsnn.snn.trainer import evaluate

    ds = load("mnist5k", timesteps=2).take(16, 40)
    net = build_arch("csnn-small", input_shape=ds.input_shape, num_classes=10, timesteps=2,
                     rng=np.random.default_rng(0))
    net.eval()
    x = np.broadcast_to(ds.x_test[:8], (2, 8, 1, 28, 28))
    c = count_operations(net, x)
    net.forward(x)
    assert c.spikes == pytest.approx(net.spikes_per_sample())
    assert c.per_layer["conv1"]["kind"] == "mac" and c.per_layer["conv2"]["kind"] == "sop"
    assert c.per_layer["conv1"]["ops"] == 28 * 28 * 16 * 9 * 2
    from refsnn.snn.energy import energy_report
    rep = energy_report(net, ds, batch_size=16)
    assert rep["spikes_per_sample"] == pytest.approx(evaluate(net, ds, "test", 16)[1])
    assert rep["energy_per_sample_nj"] == pytest.approx(
        (0.9 * rep["sops_per_sample"] + 4.6 * rep["macs_per_sample"]) / 1e3)
    acc0 = evaluate_with_noise(net, ds, 0.0, batch_size=16)
    assert acc0 == pytest.approx(evaluate(net, ds, "test", 16)[0])
    a = evaluate_with_noise(net, ds, 0.5, seed=3, batch_size=16)
    assert a == evaluate_with_noise(net, ds, 0.5, seed=3, batch_size=7)   # batch-size independent
    assert 0.0 <= a <= 1.0
    with pytest.raises(ValueError, match="sigma"):
        evaluate_with_noise(net, ds, -1.0)
    # per image: sigma 0 is the plain per-sample evaluation, the accuracy is the hits' mean, and the
    # same seed gives the same noisy images (so two networks can be paired image by image)
    from refsnn.snn.trainer import evaluate_per_sample
    assert np.array_equal(noisy_hits(net, ds, 0.0, batch_size=16), evaluate_per_sample(net, ds, "test", 16)[0])
    h = noisy_hits(net, ds, 0.5, seed=3, batch_size=5)
    assert h.dtype == bool and h.shape == (len(ds.y_test),) and h.mean() == a
    assert np.array_equal(h, noisy_hits(net, ds, 0.5, seed=3, batch_size=16))
    h_big = noisy_hits(net, ds, 3.0, seed=3, batch_size=16)
    assert not np.array_equal(h_big, noisy_hits(net, ds, 0.0, batch_size=16))  # heavy noise changes answers
    with pytest.raises(ValueError, match="seed"):
        noisy_hits(net, ds, 0.1, seed=-1)
