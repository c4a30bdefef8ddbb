"""Spike counts, synaptic operations and an energy estimate of one forward pass; accuracy under input
noise. (SPEC is silent on all of this; the conventions below are refsnn's and are tested on
hand-checkable networks in ``tests/test_energy.py``.)

Operation counts (:func:`count_operations`)
-------------------------------------------
One forward pass of a :class:`~refsnn.snn.network.Network` over a batch is walked node by node
(the same layer calls, in the same order, as ``Network.forward``), and for every ``Conv2d`` and
``Linear`` node the operations its input triggers are counted, summed over all ``T`` steps and
divided by the batch size (figures are *per sample*):

* **Spike-driven layer (SOPs).** If the layer's input is made of spikes -- the output of a ``LIF``
  node, possibly passed through the linear, spike-preserving ops ``AvgPool2d``, ``GlobalAvgPool``,
  ``Flatten`` and ``Concat`` -- one synaptic operation (SOP) is one accumulate triggered by one input
  spike at one synapse: ``SOPs = sum over input spikes of the spike's fan-out``. Pooling is folded
  into the synapses (``conv(avgpool_k(S)) = conv'(S)`` with weights ``w/k^2``), so a spike under a
  pooled position contributes the fan-out of that position, and spikes in rows/columns dropped by
  the floor of the pooling contribute nothing. Equivalently, with the *spike mass* ``m`` of a
  pooled input (``value * k^2`` per pooling, ``value * H*W`` after a global average pool, i.e. the
  number of spikes it stands for): ``SOPs = sum_x m(x) * fanout(x)``.

  - Conv2d ``(C_out, C_in, k, k)``, stride ``s``, zero padding ``p``: the fan-out of input pixel
    ``(h, w)`` (any channel) is ``C_out * n_y(h) * n_x(w)``, where ``n_y(h)`` is the number of
    output rows whose window covers input row ``h`` (``k`` in the interior for ``s = 1``, fewer at a
    border: synapses onto zero padding do not exist).
  - Linear ``(out, in)``: every input feature has fan-out ``out``.

* **Real-valued input (MACs).** A conv/linear whose input is not spike-valued (the network input:
  pixels; or anything after BN/rectifiers/sums) performs dense multiply-accumulates:
  ``MACs = H_out * W_out * C_out * C_in * k * k`` per step (linear: ``in * out``), counted for all
  ``T`` steps. (With direct encoding refsnn evaluates a stem conv on a static image once and reuses
  it at every step; the count follows the literature's convention of one evaluation per step --
  ``static_once=True`` counts it once.) Bias additions and BN are not counted (BN folds into the
  conv weights at inference).

* **Spikes per sample**: all spikes of all LIF nodes over the T steps (as ``Network.spikes_per_sample``).

Pass ``input_is_spikes=True`` for event data whose input frames are spike *counts*: the first layer
then counts SOPs with the counts as spike mass (each event is one spike).

Energy (:func:`energy_estimate`)
--------------------------------
``E = SOPs * E_AC + MACs * E_MAC`` with the 45 nm CMOS figures of Horowitz (ISSCC 2014) for 32-bit
floating point: ``E_AC = 0.9 pJ`` per accumulate (add), ``E_MAC = 4.6 pJ`` per multiply-accumulate
(3.7 pJ multiply + 0.9 pJ add). Memory access, neuron updates and data movement are not included,
as in the SNN papers that use this estimate; it is a comparison figure, not a power measurement.

Noise robustness (:func:`evaluate_with_noise`)
----------------------------------------------
Accuracy on a split with additive Gaussian noise ``x + sigma * n``, ``n ~ N(0, 1)`` i.i.d. per pixel
(in the dataset's normalised units; for mnist5k that is pixel units in ``[0, 1]``), no clipping. For
static images the noise is drawn once per image and the noisy image is direct-encoded (the same at
every step: the noise models a corrupted image, not sensor noise per step); for event frames each
frame gets its own noise. Noise comes from ``default_rng(SeedSequence(seed))``, drawn for the whole
split at once in sample order, so the result does not depend on ``batch_size``. BN in eval mode.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refsnn._checks import check_array, check_float, check_int
from refsnn.datasets import iterate_batches
from refsnn.snn.layers import LIF, AvgPool2d, Concat, Conv2d, Flatten, GlobalAvgPool, Linear
from refsnn.snn.network import INPUT

__all__ = ["E_AC_PJ", "E_MAC_PJ", "OpCounts", "count_operations", "energy_estimate", "conv_fanout_map",
           "evaluate_with_noise", "noisy_hits", "energy_report"]

#: pJ per 32-bit floating-point accumulate (add), 45 nm (Horowitz 2014).
E_AC_PJ = 0.9
#: pJ per 32-bit floating-point multiply-accumulate (3.7 pJ mult + 0.9 pJ add), 45 nm (Horowitz 2014).
E_MAC_PJ = 4.6


@dataclass
class OpCounts:
    """Per-sample operation counts of one forward pass (module docstring).

    ``per_layer``: ``{node name: {"kind": "sop"|"mac", "ops": float}}`` per conv/linear node.
    """

    spikes: float
    sops: float
    macs: float
    per_layer: dict
    batch_size: int
    timesteps: int

    @property
    def energy_pj(self) -> float:
        return energy_estimate(self.sops, self.macs)

    def as_dict(self) -> dict:
        return {"spikes_per_sample": self.spikes, "sops_per_sample": self.sops,
                "macs_per_sample": self.macs, "energy_per_sample_nj": self.energy_pj / 1e3}


def energy_estimate(sops: float, macs: float, *, e_ac_pj: float = E_AC_PJ, e_mac_pj: float = E_MAC_PJ) -> float:
    """``sops * e_ac_pj + macs * e_mac_pj`` in picojoules."""
    return float(sops) * e_ac_pj + float(macs) * e_mac_pj


def _cover(n_in: int, k: int, stride: int, pad: int) -> np.ndarray:
    """``c[i]`` = number of output positions (along one axis) whose window covers input index ``i``."""
    n_out = (n_in + 2 * pad - k) // stride + 1
    c = np.zeros(n_in, np.int64)
    for o in range(n_out):
        lo = o * stride - pad
        a, b = max(lo, 0), min(lo + k, n_in)
        if b > a:
            c[a:b] += 1
    return c


def conv_fanout_map(h: int, w: int, k: int, stride: int, padding: int) -> np.ndarray:
    """int64 ``(h, w)``: for each input pixel, the number of output positions it feeds (multiply
    by ``C_out`` for its fan-out)."""
    return np.outer(_cover(h, k, stride, padding), _cover(w, k, stride, padding))


def count_operations(net, x: np.ndarray, *, input_is_spikes: bool = False,
                     static_once: bool = False) -> OpCounts:
    """Run ``net`` on ``x`` (``[T, B, ...]``, as for ``Network.forward``; the network's current
    train/eval mode is used) and count spikes, SOPs and MACs per sample (module docstring).

    The walk calls each node's ``layer.forward`` exactly as ``Network.forward`` does, so the LIF
    layers' ``last_spikes`` afterwards are those of this pass.
    """
    x = check_array("x", x, ndim_min=2, dtypes=(net.dtype,))
    T = net.T
    if x.shape[0] not in (1, T):
        raise ValueError(f"x: expected {T} time steps (axis 0) or 1 (static), got shape {x.shape}")
    B = x.shape[1]
    if x.shape[0] > 1 and x.strides[0] == 0:
        x = x[:1]
    outs = {INPUT: x}
    # mass[name]: None (real-valued) or the factor turning the node's values into spike counts
    mass = {INPUT: 1.0 if input_is_spikes else None}
    spikes = sops = macs = 0.0
    per_layer = {}
    left = {}
    for n in net.nodes.values():
        for i in n.inputs:
            left[i] = left.get(i, 0) + 1
    for n in net.nodes.values():
        ins = [outs[i] for i in n.inputs]
        layer = n.layer
        y = layer.forward(*ins, T=T)
        m_in = [mass[i] for i in n.inputs]
        if isinstance(layer, (Conv2d, Linear)):
            xin, m = ins[0], m_in[0]
            steps = xin.shape[0]
            if m is not None:
                if isinstance(layer, Conv2d):
                    # spike mass per input pixel, summed over steps, batch and channels
                    pix = xin.sum(axis=(0, 1, 2), dtype=np.float64) * m
                    cov = conv_fanout_map(xin.shape[3], xin.shape[4], layer.k, layer.stride, layer.padding)
                    ops = float((pix * cov).sum()) * layer.cout
                    if steps == 1 and T > 1:
                        ops *= T  # a static spike input stands for T identical steps
                else:
                    ops = float(xin.sum(dtype=np.float64)) * m * layer.fout
                    if steps == 1 and T > 1:
                        ops *= T
                sops += ops
                per_layer[n.name] = {"kind": "sop", "ops": ops / B}
            else:
                if isinstance(layer, Conv2d):
                    per_step = y.shape[2] * y.shape[3] * y.shape[4] * layer.cin * layer.k * layer.k
                else:
                    per_step = layer.fin * layer.fout
                n_steps = 1 if static_once else T
                ops = float(per_step) * B * n_steps
                macs += ops
                per_layer[n.name] = {"kind": "mac", "ops": ops / B}
            mass[n.name] = None
        elif isinstance(layer, LIF):
            spikes += float(np.count_nonzero(y))
            mass[n.name] = 1.0
        elif isinstance(layer, AvgPool2d):
            mass[n.name] = None if m_in[0] is None else m_in[0] * layer.k * layer.k
        elif isinstance(layer, GlobalAvgPool):
            hw = ins[0].shape[3] * ins[0].shape[4]
            mass[n.name] = None if m_in[0] is None else m_in[0] * hw
        elif isinstance(layer, Flatten):
            mass[n.name] = m_in[0]
        elif isinstance(layer, Concat):
            mass[n.name] = m_in[0] if all(v is not None and v == m_in[0] for v in m_in) else None
        else:
            mass[n.name] = None
        outs[n.name] = y
        for i in n.inputs:  # free what no later node reads
            left[i] -= 1
            if left[i] == 0:
                outs.pop(i, None)
    return OpCounts(spikes=spikes / B, sops=sops / B, macs=macs / B, per_layer=per_layer,
                    batch_size=B, timesteps=T)


def energy_report(net, ds, *, split: str = "test", batch_size: int = 250, n_samples: int | None = None,
                  input_is_spikes: bool | None = None) -> dict:
    """Average per-sample counts over (the first ``n_samples`` of) a split, BN in eval mode:
    ``{"spikes_per_sample", "sops_per_sample", "macs_per_sample", "energy_per_sample_nj"}``.
    ``input_is_spikes`` defaults to ``ds.is_event``."""
    batch_size = check_int("batch_size", batch_size, lo=1)
    if input_is_spikes is None:
        input_is_spikes = bool(ds.is_event)
    was_training = net.training
    net.eval()
    tot = {"spikes": 0.0, "sops": 0.0, "macs": 0.0}
    n = 0
    try:
        for x, y in iterate_batches(ds, split, batch_size):
            if n_samples is not None and n >= n_samples:
                break
            if n_samples is not None and n + len(y) > n_samples:
                x, y = x[:, :n_samples - n], y[:n_samples - n]
            if x.dtype != net.dtype:
                x = x.astype(net.dtype)
            c = count_operations(net, x, input_is_spikes=input_is_spikes)
            for k in tot:
                tot[k] += getattr(c, k) * len(y)
            n += len(y)
    finally:
        net.train(was_training)
    n = max(n, 1)
    sops, macs = tot["sops"] / n, tot["macs"] / n
    return {"spikes_per_sample": tot["spikes"] / n, "sops_per_sample": sops, "macs_per_sample": macs,
            "energy_per_sample_nj": energy_estimate(sops, macs) / 1e3}


def noisy_hits(net, ds, sigma: float, *, seed: int = 0, batch_size: int = 250, split: str = "test") -> np.ndarray:
    """bool ``[N]``: per sample of ``split`` (in split order), whether ``net`` classifies it correctly
    with additive Gaussian input noise of standard deviation ``sigma`` (module docstring). Two
    networks evaluated with the same ``seed`` on the same dataset see the same noisy images, so their
    hit vectors can be compared image by image. ``sigma = 0`` gives the plain per-sample hits."""
    sigma = check_float("sigma", sigma, lo=0.0)
    seed = check_int("seed", seed, lo=0)
    batch_size = check_int("batch_size", batch_size, lo=1)
    xs, ys = ds.split(split)
    dt = net.dtype
    noise = np.random.default_rng(np.random.SeedSequence(seed)).standard_normal(xs.shape, dtype=np.float32)
    was_training = net.training
    net.eval()
    hits = np.zeros(len(ys), dtype=bool)
    try:
        for start in range(0, len(ys), batch_size):
            xb = xs[start:start + batch_size].astype(np.float32, copy=True)
            xb += np.float32(sigma) * noise[start:start + batch_size]
            xb = xb.astype(dt, copy=False)
            if ds.is_event:   # (B, T, C, H, W) -> time-major
                x = np.ascontiguousarray(xb.transpose(1, 0, 2, 3, 4))
            else:
                x = np.broadcast_to(xb, (net.T,) + xb.shape)
            out = net.forward(x).mean(axis=0)
            hits[start:start + len(xb)] = out.argmax(axis=1) == ys[start:start + batch_size]
    finally:
        net.train(was_training)
    return hits


def evaluate_with_noise(net, ds, sigma: float, *, seed: int = 0, batch_size: int = 250,
                        split: str = "test") -> float:
    """Accuracy (0-1) of ``net`` on ``split`` with additive Gaussian input noise of standard
    deviation ``sigma`` (module docstring): the mean of :func:`noisy_hits`. ``sigma = 0`` is the
    plain accuracy."""
    hits = noisy_hits(net, ds, sigma, seed=seed, batch_size=batch_size, split=split)
    return int(hits.sum()) / max(len(hits), 1)
