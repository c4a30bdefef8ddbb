"""Peer benchmarks (``refsnn[bench]``: torch, spikingjelly, snntorch, norse): refsnn against another
framework on the same workload, timed side by side in one process.

Every peer figure is ``peer_seconds / refsnn_seconds`` (above 1: refsnn is faster) and is measured
at a stated thread count on both sides: NumPy's BLAS through ``threadpoolctl.threadpool_limits``,
Numba through ``numba.set_num_threads`` and PyTorch through ``torch.set_num_threads``, restored
afterwards. A benchmark whose peer is not installed raises :class:`BenchSkipped`; ``refsnn bench``
then leaves its keys out.

* ``conv_fwd_bwd_speedup_vs_torch`` — conv2d forward + backward (``dx`` and ``dw``) on the four
  shapes of the STBP networks (``[128,32,28,28]x[64,32,3,3]``, ``[64,64,16,16]x[64,64,3,3]``,
  ``[128,1,28,28]x[32,1,3,3]``, ``[256,64,8,8]x[128,64,3,3]``, padding 1, float32), inputs 0/1 spikes
  at 10 % density (the input of a conv after a LIF layer), against ``torch.nn.functional.conv2d`` and
  autograd, one thread each; the key is the ratio of the summed times, with one key per shape.
* ``stbp_epoch_speedup_vs_spikingjelly`` — one epoch of STBP training on mnist5k's training split with
  ``refsnn train``'s default recipe (``csnn`` = conv3x3(32, no bias)-BN-LIF-avgpool2-conv3x3(64)-BN-LIF-
  avgpool2-linear(10), the ``msenas`` neuron, T = 2 with the image at every step, batch 64,
  cross-entropy of the mean logits, AdamW lr 4e-3 weight decay 0.01, same batches) against the same
  network in SpikingJelly 2.0 (multi-step ``layer.*`` modules, ``LIFNode(tau=2, v_threshold=0.5,
  detach_reset=True, surrogate PiecewiseQuadratic(2))``, PyTorch AdamW). Measured at 1 and 2 threads
  (``..._1t``, ``..._2t`` keys, seconds per epoch of each side); the key itself compares each side at
  its best thread count.
* ``onb_<peer>_<n>_speedup`` — the Open Neuromorphic SNN-library benchmark's workload: ``Linear(n, n)``
  then a LIF layer, ``T = 500`` steps, batch 16, forward and backward (loss = the sum of the output
  spikes), float32, for ``n`` in 512, 4096, 16384, against every installed peer: SpikingJelly
  (``layer.Linear`` + ``neuron.LIFNode``, multi-step), snnTorch (``nn.Linear`` on the
  whole sequence + ``Leaky(beta=0.5)`` stepped over time), Norse (``nn.Linear`` + ``norse.torch.LIF``
  over the sequence). refsnn runs :class:`refsnn.snn.layers.Linear` + :class:`refsnn.snn.layers.LIF`
  with the ``spikingjelly`` preset (the same equations as ``LIFNode``'s defaults). Both sides use the
  same thread count (default: all of the machine's cores, ``os.cpu_count()``). The registered key
  ``onb_min_speedup`` is the smallest of these ratios (above 1: refsnn ahead of every peer at every size).
"""
from __future__ import annotations

import contextlib
import importlib.util
import os

import numba
import numpy as np

from refsnn.bench.timing import time_side_by_side
from refsnn.datasets import iterate_batches, load
from refsnn.kernels.conv import Conv2dWorkspace, conv2d_backward, conv2d_forward
from refsnn.kernels.lif import PRESETS
from refsnn.snn.archs import build_arch
from refsnn.snn.layers import LIF, Linear
from refsnn.snn.optim import make_optimizer
from refsnn.snn.trainer import train_epoch
from refsnn.tuning import prefer_sleeping_threads

__all__ = ["BenchSkipped", "threads", "bench_conv_vs_torch", "bench_onb", "bench_stbp_vs_spikingjelly",
           "CONV_SHAPES", "ONB_SIZES"]

#: the Open Neuromorphic benchmark's layer sizes
ONB_SIZES = (512, 4096, 16384)

#: (N, C, H, W, O) of the STBP convolutions, 3x3, padding 1
CONV_SHAPES = ((128, 32, 28, 28, 64), (64, 64, 16, 16, 64), (128, 1, 28, 28, 32), (256, 64, 8, 8, 128))


class BenchSkipped(Exception):
    """A benchmark's peer framework is not installed (the reason is the message)."""


def _torch():
    try:
        import torch  # optional: refsnn[bench]
    except ImportError:
        raise BenchSkipped("torch is not installed (pip install refsnn[bench])") from None
    return torch


@contextlib.contextmanager
def threads(n: int, torch=None):
    """NumPy's BLAS, Numba and (if given) PyTorch limited to ``n`` threads inside the block."""
    try:
        from threadpoolctl import threadpool_limits  # optional: the test and bench extras
    except ImportError:
        raise BenchSkipped("threadpoolctl is not installed (pip install refsnn[bench])") from None
    if n > 1:
        prefer_sleeping_threads()            # as refsnn train --threads n does
    old_nb = numba.get_num_threads()
    old_torch = torch.get_num_threads() if torch is not None else None
    with threadpool_limits(limits=n, user_api="blas"):
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
        if torch is not None:
            torch.set_num_threads(n)
        try:
            yield
        finally:
            numba.set_num_threads(old_nb)
            if torch is not None:
                torch.set_num_threads(old_torch)


def bench_conv_vs_torch(n_threads: int = 1) -> dict:
    """``conv_fwd_bwd_speedup_vs_torch`` (module docstring), plus ``conv_vs_torch_<N>x<C>x<H>x<W>_<O>``
    per shape and the summed milliseconds of each side."""
    torch = _torch()
    rng = np.random.default_rng(np.random.SeedSequence(25))
    total_t = total_r = 0.0
    out = {}
    with threads(n_threads, torch):
        for (N, C, H, W, O) in CONV_SHAPES:
            x = (rng.random((N, C, H, W)) < 0.1).astype(np.float32)
            w = (rng.standard_normal((O, C, 3, 3)) * 0.1).astype(np.float32)
            dy = rng.standard_normal((N, O, H, W)).astype(np.float32)
            peer, refsnn_side = _conv_pair(torch, x, w, dy)
            for name, a, b in zip(("y", "dx", "dw"), peer(), refsnn_side()):
                a = a.detach().numpy()
                if float(np.abs(a - b).max()) > 1e-4 * max(1.0, float(np.abs(a).max())):
                    raise AssertionError(f"bench_conv_vs_torch: {name} of refsnn and torch disagree, "
                                         f"shape {(N, C, H, W, O)}")
            t_s, r_s = time_side_by_side(peer, refsnn_side, repeats=5)
            out[f"conv_vs_torch_{N}x{C}x{H}x{W}_{O}"] = t_s / r_s
            total_t += t_s
            total_r += r_s
    out.update({"conv_fwd_bwd_speedup_vs_torch": total_t / total_r, "conv_torch_ms": total_t * 1e3,
                "conv_refsnn_ms": total_r * 1e3})
    return out


def _conv_pair(torch, x, w, dy):
    """``(torch forward+backward, refsnn forward+backward)`` of one conv shape; each returns ``(y, dx, dw)``."""
    tx, tw, tdy = (torch.from_numpy(a) for a in (x, w, dy))
    tx.requires_grad_(True)
    tw.requires_grad_(True)
    ws = Conv2dWorkspace()     # as a Conv2d layer does: work arrays reused call after call

    def peer():
        y = torch.nn.functional.conv2d(tx, tw, padding=1)
        dx, dw = torch.autograd.grad(y, (tx, tw), tdy)
        return y, dx, dw

    def refsnn_side():
        y, ctx = conv2d_forward(x, w, padding=1, workspace=ws)
        dx, dw, _ = conv2d_backward(dy, ctx, workspace=ws)
        return y, dx, dw
    return peer, refsnn_side


def _onb_peers(torch, n: int, T: int, B: int):
    """``{name: fn}`` of the installed peers, each running forward + backward of the ONB workload on
    one fixed input and returning the number of output spikes."""
    rng = np.random.default_rng(np.random.SeedSequence([516, n]))
    x = torch.from_numpy(rng.normal(0.0, 1.0, (T, B, n)).astype(np.float32))
    out = {}
    if importlib.util.find_spec("spikingjelly") is not None:
        from spikingjelly.activation_based import functional, layer, neuron
        sj = torch.nn.Sequential(layer.Linear(n, n, step_mode="m"), neuron.LIFNode(step_mode="m"))

        def run_sj():
            functional.reset_net(sj)
            s = sj(x)
            s.sum().backward()
            return float(s.detach().sum())
        out["spikingjelly"] = run_sj
    if importlib.util.find_spec("snntorch") is not None:
        import snntorch
        lin_st, leaky = torch.nn.Linear(n, n), snntorch.Leaky(beta=0.5)

        def run_st():
            cur = lin_st(x)
            mem = leaky.init_leaky()
            spikes = []
            for t in range(T):
                spk, mem = leaky(cur[t], mem)
                spikes.append(spk)
            s = torch.stack(spikes)
            s.sum().backward()
            return float(s.detach().sum())
        out["snntorch"] = run_st
    if importlib.util.find_spec("norse") is not None:
        import norse.torch as nt
        lin_no, lif_no = torch.nn.Linear(n, n), nt.LIF()

        def run_no():
            s, _ = lif_no(lin_no(x))
            s.sum().backward()
            return float(s.detach().sum())
        out["norse"] = run_no
    return out


def bench_onb(sizes=ONB_SIZES, *, T: int = 500, B: int = 16, n_threads: int | None = None) -> dict:
    """The Open Neuromorphic CPU column (module docstring): ``onb_<peer>_<n>_speedup`` per installed
    peer and size, ``onb_refsnn_<n>_ms``, and ``onb_min_speedup``."""
    torch = _torch()
    n_threads = n_threads or os.cpu_count() or 1
    out = {}
    with threads(n_threads, torch):
        for n in sizes:
            peers = _onb_peers(torch, n, T, B)
            if not peers:
                raise BenchSkipped("none of spikingjelly, snntorch, norse is installed (pip install refsnn[bench])")
            run_refsnn = _onb_refsnn(n, T, B)
            repeats = 3 if n <= 4096 else 1
            r_s = None
            for name, fn in peers.items():
                p_s, rs = time_side_by_side(fn, run_refsnn, repeats=repeats)
                r_s = rs if r_s is None else min(r_s, rs)
                out[f"onb_{name}_{n}_speedup"] = p_s / rs
                out[f"onb_{name}_{n}_ms"] = p_s * 1e3
            out[f"onb_refsnn_{n}_ms"] = r_s * 1e3
    ratios = [v for k, v in out.items() if k.endswith("_speedup")]
    out["onb_min_speedup"] = min(ratios)
    out["onb_threads"] = float(n_threads)
    return out


def _onb_refsnn(n: int, T: int, B: int):
    """refsnn's side of the ONB workload (the same input as the peers'); returns the spike count."""
    rng = np.random.default_rng(np.random.SeedSequence([516, n]))
    x = rng.normal(0.0, 1.0, (T, B, n)).astype(np.float32)
    lin, lif = Linear(n, n, rng=np.random.default_rng(0)), LIF(PRESETS["spikingjelly"])

    def run_refsnn():
        s = lif.forward(lin.forward(x, T=T), T=T)
        (g,) = lif.backward(np.ones_like(s))
        lin.backward(g, need_dx=(False,))      # like the peers: their input needs no gradient
        return float(s.sum())
    return run_refsnn


def _sj_csnn(torch, T: int):
    """``csnn`` in SpikingJelly 2.0 (module docstring), multi-step."""
    from spikingjelly.activation_based import layer, neuron, surrogate
    nn = torch.nn

    def lif():
        return neuron.LIFNode(tau=2.0, v_threshold=0.5, v_reset=0.0, detach_reset=True,
                              surrogate_function=surrogate.PiecewiseQuadratic(alpha=2.0), step_mode="m")
    return nn.Sequential(
        layer.Conv2d(1, 32, 3, padding=1, bias=False, step_mode="m"), layer.BatchNorm2d(32, step_mode="m"), lif(),
        layer.AvgPool2d(2, step_mode="m"),
        layer.Conv2d(32, 64, 3, padding=1, bias=False, step_mode="m"), layer.BatchNorm2d(64, step_mode="m"), lif(),
        layer.AvgPool2d(2, step_mode="m"), layer.Flatten(step_mode="m"), layer.Linear(64 * 7 * 7, 10, step_mode="m"))


def bench_stbp_vs_spikingjelly(thread_counts=(1, 2), *, n_train: int | None = None) -> dict:
    """``stbp_epoch_speedup_vs_spikingjelly`` (module docstring); ``n_train`` limits the epoch (tests)."""
    torch = _torch()
    if importlib.util.find_spec("spikingjelly") is None:
        raise BenchSkipped("spikingjelly is not installed (pip install refsnn[bench])")
    from spikingjelly.activation_based import functional
    T, B, lr, wd = 2, 64, 4e-3, 0.01
    ds = load("mnist5k", timesteps=T, seed=0)
    if n_train is not None:
        ds = ds.take(n_train, None)
    batches = list(iterate_batches(ds, "train", B, rng=np.random.default_rng(0), shuffle=True, contiguous=True))
    tb = [(torch.from_numpy(np.ascontiguousarray(np.broadcast_to(x, (T,) + x.shape[1:]))), torch.from_numpy(y))
          for x, y in batches]
    out, best_sj, best_r = {}, float("inf"), float("inf")
    for n in thread_counts:
        with threads(n, torch):
            net = build_arch("csnn", input_shape=ds.input_shape, num_classes=ds.num_classes, timesteps=T,
                             rng=np.random.default_rng(0), neuron=PRESETS["msenas"], dtype=np.float32)
            opt = make_optimizer("adamw", net.parameters(), weight_decay=wd)
            sj = _sj_csnn(torch, T)
            sj_opt = torch.optim.AdamW(sj.parameters(), lr=lr, weight_decay=wd)

            def refsnn_epoch(net=net, opt=opt):
                net.train()
                return train_epoch(net, opt, batches, lr_at=lambda step: lr)["loss"]

            def sj_epoch(sj=sj, sj_opt=sj_opt):
                sj.train()
                for x, y in tb:
                    sj_opt.zero_grad()
                    loss = torch.nn.functional.cross_entropy(sj(x).mean(0), y.long())
                    loss.backward()
                    sj_opt.step()
                    functional.reset_net(sj)
                return float(loss.detach())
            sj_s, r_s = time_side_by_side(sj_epoch, refsnn_epoch, repeats=2, min_seconds=0.0)
        out[f"stbp_epoch_spikingjelly_s_{n}t"], out[f"stbp_epoch_refsnn_s_{n}t"] = sj_s, r_s
        out[f"stbp_epoch_speedup_vs_spikingjelly_{n}t"] = sj_s / r_s
        best_sj, best_r = min(best_sj, sj_s), min(best_r, r_s)
    out["stbp_epoch_speedup_vs_spikingjelly"] = best_sj / best_r
    return out
