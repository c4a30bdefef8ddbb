"""SPEC §4.1: in spiking mode, one STBP step of refsnn equals PyTorch autograd on the same network.

The PyTorch side is written independently from the layer list of a refsnn :class:`Network` (same
weights): ``F.conv2d``, ``F.batch_norm`` over ``(T*B, H, W)``, a Python loop over T for the LIF with
a custom ``autograd.Function`` for the spike (Heaviside forward, the same surrogate backward),
``F.avg_pool2d``, ``F.linear``, ``F.cross_entropy(label_smoothing=...)``, ``torch.optim.AdamW``.
Skipped when torch is not importable.
"""
from __future__ import annotations

import numpy as np
import pytest

from refsnn.kernels.lif import LIFParams, lif_preset
from refsnn.snn import (
    LIF,
    AdamW,
    Add,
    AvgPool2d,
    BatchNorm2d,
    Concat,
    Conv2d,
    Flatten,
    GlobalAvgPool,
    Linear,
    Rectify,
    loss_and_grad,
)
from refsnn.snn.archs import build_arch
from tests.strategies import rng_from
from tests.test_stbp import _scale_up, every_layer_net

torch = pytest.importorskip("torch")
F = torch.nn.functional

pytestmark = pytest.mark.torch


def _surrogate_grad(name, z, a):
    if name == "triangle":
        return torch.clamp(a - a * a * z.abs(), min=0.0)
    if name == "sigmoid":
        s = torch.sigmoid(a * z)
        return a * s * (1 - s)
    if name == "atan":
        return (a / 2) / (1 + (np.pi / 2 * a * z) ** 2)
    raise NotImplementedError(name)


class _Spike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, name, a, ge):
        ctx.save_for_backward(z)
        ctx.name, ctx.a = name, a
        return ((z >= 0) if ge else (z > 0)).to(z.dtype)

    @staticmethod
    def backward(ctx, g):
        (z,) = ctx.saved_tensors
        return g * _surrogate_grad(ctx.name, z, ctx.a), None, None, None


def _torch_lif(x, p: LIFParams):
    vr = 0.0 if p.v_reset is None else p.v_reset
    v = torch.full_like(x[0], vr)
    out = []
    for t in range(x.shape[0]):
        if p.decay_input:
            h = v + (x[t] - (v - vr)) / p.tau
        else:
            h = v - (v - vr) / p.tau + x[t]
        s = _Spike.apply(h - p.v_th, p.surrogate, p.surrogate_alpha, p.threshold == ">=")
        sr = s.detach() if p.detach_reset else s
        v = h * (1 - sr) + vr * sr if p.v_reset is not None else h - p.v_th * sr
        out.append(s)
    return torch.stack(out)


def _torch_forward(net, x, params):
    """Evaluate a refsnn Network's node list with torch ops; ``params`` maps 'node.name' -> leaf."""
    vals = {"input": x}
    for name, node in net.nodes.items():
        L = node.layer
        ins = [vals[i] for i in node.inputs]
        P = lambda k, name=name: params.get(f"{name}.{k}")
        if isinstance(L, Conv2d):
            a = ins[0]
            y = F.conv2d(a.reshape((-1,) + a.shape[2:]), P("w"), P("b"), stride=L.stride, padding=L.padding)
            y = y.reshape(a.shape[:2] + y.shape[1:])
        elif isinstance(L, BatchNorm2d):
            a = ins[0]
            rm = torch.zeros(L.c, dtype=a.dtype)
            rv = torch.ones(L.c, dtype=a.dtype)
            y = F.batch_norm(a.reshape((-1,) + a.shape[2:]), rm, rv, P("gamma"), P("beta"),
                             training=True, momentum=L.momentum, eps=L.eps).reshape(a.shape)
        elif isinstance(L, LIF):
            y = _torch_lif(ins[0], L.lif)
        elif isinstance(L, Rectify):
            y = L.sign * (F.relu(ins[0]) if L.relu else ins[0])
        elif isinstance(L, AvgPool2d):
            a = ins[0]
            y = F.avg_pool2d(a.reshape((-1,) + a.shape[2:]), L.k)
            y = y.reshape(a.shape[:2] + y.shape[1:])
        elif isinstance(L, GlobalAvgPool):
            y = ins[0].mean(dim=(3, 4))
        elif isinstance(L, Flatten):
            y = ins[0].reshape(ins[0].shape[:2] + (-1,))
        elif isinstance(L, Linear):
            y = F.linear(ins[0], P("w"), P("b"))
        elif isinstance(L, Add):
            y = sum(ins[1:], ins[0])
        elif isinstance(L, Concat):
            y = torch.cat(ins, dim=2)
        else:
            raise NotImplementedError(type(L))
        vals[name] = y
    return vals[net.output]


def _torch_loss(z, y, kind, ls):
    if kind == "ce":
        return F.cross_entropy(z.mean(0), y, label_smoothing=ls)
    return torch.stack([F.cross_entropy(z[t], y, label_smoothing=ls) for t in range(z.shape[0])]).mean()


def _compare(net, x, y, kind, ls, *, lr=1e-2, rtol=1e-9, atol=1e-11):
    params = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in net.parameters()}
    xt = torch.tensor(np.ascontiguousarray(x), requires_grad=True)
    zt = _torch_forward(net, xt, params)
    lt = _torch_loss(zt, torch.tensor(y), kind, ls)
    lt.backward()

    z = net.forward(x)
    np.testing.assert_allclose(z, zt.detach().numpy(), rtol=rtol, atol=atol)
    value, d, _ = loss_and_grad(z, y, loss=kind, label_smoothing=ls)
    assert value == pytest.approx(lt.item(), rel=1e-10)
    gx = net.backward(d, input_grad=True)
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=rtol, atol=atol, err_msg="input")
    for k, g in net.gradients():
        np.testing.assert_allclose(g, params[k].grad.numpy(), rtol=rtol, atol=atol, err_msg=k)
    n_spikes = sum(int(net[n].last_spikes.sum()) for n in net.lif_nodes())
    assert n_spikes > 0  # the comparison exercises spiking, not a silent network

    # one optimiser step
    opt = AdamW(net.parameters(), weight_decay=0.01)
    opt.step(net.gradients(), lr)
    topt = torch.optim.AdamW(list(params.values()), lr=lr, weight_decay=0.01)
    topt.step()
    for k, v in net.parameters():
        if np.abs(params[k].grad.numpy()).max() < 1e-12:
            continue  # a bias before BN: its gradient is rounding noise, which Adam normalises
        np.testing.assert_allclose(v, params[k].detach().numpy(), rtol=1e-12, atol=1e-14, err_msg=k)


@pytest.mark.parametrize("neuron", [
    LIFParams(),                                   # msenas: triangle, ">", detach_reset
    LIFParams(detach_reset=False),
    lif_preset("spikingjelly"),                    # sigmoid(4), ">=", v_th 1
    lif_preset("seed", v_reset=None),              # soft reset, decay_input=False
])
@pytest.mark.parametrize("kind,ls", [("ce", 0.0), ("tet", 0.1)])
def test_every_layer_network_matches_torch(neuron, kind, ls):
    T, B = 4, 3
    net = every_layer_net(np.float64, T=T, seed=11, neuron=neuron)
    _scale_up(net, 2.0)
    x = rng_from(12).normal(0.3, 1.0, size=(T, B, 2, 7, 7))
    _compare(net, x, np.array([0, 2, 3]), kind, ls)


def test_default_arch_step_matches_torch():
    T, B = 4, 4
    net = build_arch("csnn-small", input_shape=(1, 12, 12), num_classes=10, timesteps=T,
                     rng=rng_from(0), dtype=np.float64)
    img = rng_from(1).random((B, 1, 12, 12))
    x = np.ascontiguousarray(np.broadcast_to(img, (T,) + img.shape))
    _compare(net, x, np.array([1, 2, 3, 4]), "ce", 0.0)
