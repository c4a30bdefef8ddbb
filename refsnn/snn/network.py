"""A small DAG container of multi-step layers, with STBP backward (SPEC §4.1).

A :class:`Network` holds named nodes, each a :class:`~refsnn.snn.layers.Layer` applied to the
outputs of earlier nodes (or to the network input, named ``"input"``). Nodes are evaluated in the
order they were added, which must be a topological order (every input name must exist already), so
``forward`` is one pass over the list and ``backward`` one pass in reverse. Where a node feeds
several consumers, the gradients those consumers return are summed (gradient accumulation).

The backward of the whole network is spatial backprop across layers plus BPTT inside every LIF
layer: STBP (Wu et al. 2018; SPEC §4.1).

>>> rng = np.random.default_rng(np.random.SeedSequence(0))
>>> net = Network(timesteps=4)
>>> net.add("conv1", Conv2d(1, 8, 3, padding=1, rng=rng), "input")
>>> net.add("bn1", BatchNorm2d(8), "conv1")
>>> net.add("lif1", LIF(), "bn1")
>>> net.add("gap", GlobalAvgPool(), "lif1")
>>> net.add("fc", Linear(8, 10, rng=rng), "gap")          # the last node added is the output
>>> logits = net.forward(x)                               # x [T, B, 1, H, W] -> [T, B, 10]
>>> dx = net.backward(dlogits)                            # fills every layer's .grads

Static input: if ``x`` is a read-only broadcast view along T (stride 0, as ``iterate_batches``
returns for direct-encoded images), the network computes the stateless layers before the first LIF
once (leading length 1) instead of T times; see :mod:`refsnn.snn.layers`. The logits are then
still returned with T steps.

Modes: ``net.train()`` / ``net.eval()`` (BN batch or running statistics), ``net.relaxed = True``
(every LIF uses the surrogate primitive: the whole network is a smooth function, for gradient
checks). ``net.spikes_per_sample()`` counts the spikes of the last forward.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from refsnn._checks import FLOAT_DTYPES, check_array, check_int
from refsnn.snn.layers import LIF, Layer

__all__ = ["Network", "INPUT"]

INPUT = "input"


class _Node:
    __slots__ = ("name", "layer", "inputs")

    def __init__(self, name, layer, inputs):
        self.name, self.layer, self.inputs = name, layer, inputs


class Network:
    """Named DAG of multi-step layers (module docstring).

    Parameters
    ----------
    timesteps : int
        T, the number of simulation steps.
    dtype : float32 (default) or float64; every layer added must have this dtype.
    """

    def __init__(self, *, timesteps: int, dtype=np.float32):
        self.T = check_int("timesteps", timesteps, lo=1)
        self.dtype = np.dtype(dtype)
        if self.dtype not in FLOAT_DTYPES:
            raise TypeError(f"dtype: expected float32 or float64, got {self.dtype}")
        self.nodes: "OrderedDict[str, _Node]" = OrderedDict()
        self.output: str | None = None
        self.training = True
        self._relaxed = False
        self._consumers: dict[str, int] = {}
        self._outs: dict = {}
        self._out_static = False
        self._in_shape = None

    # ---- construction -------------------------------------------------------------------------
    def add(self, name: str, layer: Layer, inputs="input") -> str:
        """Append node ``name`` computing ``layer(*[outputs of inputs])``; returns ``name``.

        ``inputs`` is a node name or a list of names (``"input"`` is the network input); all must
        exist already. The last node added becomes the output unless :meth:`set_output` is called.
        """
        if not isinstance(name, str) or not name:
            raise TypeError(f"name: expected a non-empty string, got {name!r}")
        if name == INPUT or name in self.nodes:
            raise ValueError(f"name: {name!r} is {'reserved' if name == INPUT else 'already used'}")
        if not isinstance(layer, Layer):
            raise TypeError(f"layer: expected a refsnn.snn.layers.Layer, got {type(layer).__name__}")
        if layer.dtype != self.dtype:
            raise TypeError(f"layer: expected dtype {self.dtype} (the network's), got {layer.dtype}")
        ins = [inputs] if isinstance(inputs, str) else list(inputs)
        if not ins:
            raise ValueError(f"inputs: node {name!r} needs at least one input")
        for i in ins:
            if i != INPUT and i not in self.nodes:
                raise ValueError(f"inputs: node {name!r} reads {i!r}, which is not an earlier node "
                                 f"(known: {[INPUT] + list(self.nodes)})")
        if layer.n_inputs is not None and len(ins) != layer.n_inputs:
            raise ValueError(f"inputs: {type(layer).__name__} takes {layer.n_inputs} input(s), got {ins}")
        if any(n.layer is layer for n in self.nodes.values()):
            raise ValueError(f"layer: this layer object is already node {name!r}'s; create a new one")
        layer.training = self.training
        layer.relaxed = self._relaxed
        self.nodes[name] = _Node(name, layer, ins)
        for i in ins:
            self._consumers[i] = self._consumers.get(i, 0) + 1
        self.output = name
        return name

    def set_output(self, name: str) -> None:
        if name not in self.nodes:
            raise ValueError(f"name: unknown node {name!r}")
        self.output = name

    def __getitem__(self, name) -> Layer:
        return self.nodes[name].layer

    def __repr__(self):
        lines = [f"Network(T={self.T}, dtype={self.dtype}, output={self.output!r})"]
        for n in self.nodes.values():
            lines.append(f"  {n.name:<14} = {n.layer!r} <- {', '.join(n.inputs)}")
        return "\n".join(lines)

    # ---- modes --------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> "Network":
        self.training = bool(mode)
        for n in self.nodes.values():
            n.layer.training = self.training
        return self

    def eval(self) -> "Network":
        return self.train(False)

    @property
    def relaxed(self) -> bool:
        return self._relaxed

    @relaxed.setter
    def relaxed(self, v: bool) -> None:
        self._relaxed = bool(v)
        for n in self.nodes.values():
            n.layer.relaxed = self._relaxed

    # ---- parameters ---------------------------------------------------------------------------
    def parameters(self) -> list[tuple[str, np.ndarray]]:
        """``[("node.param", array), ...]`` in node order (the arrays themselves, updated in place)."""
        return [(f"{n.name}.{k}", v) for n in self.nodes.values() for k, v in n.layer.params.items()]

    def gradients(self) -> list[tuple[str, np.ndarray]]:
        """Gradients of the last backward, aligned with :meth:`parameters`."""
        out = []
        for n in self.nodes.values():
            for k in n.layer.params:
                g = n.layer.grads.get(k)
                if g is None:
                    raise RuntimeError(f"{n.name}.{k}: no gradient yet; call forward and backward first")
                out.append((f"{n.name}.{k}", g))
        return out

    def buffers(self) -> list[tuple[str, np.ndarray]]:
        return [(f"{n.name}.{k}", v) for n in self.nodes.values() for k, v in n.layer.buffers.items()]

    def n_params(self) -> int:
        return int(sum(v.size for _, v in self.parameters()))

    # ---- forward / backward -------------------------------------------------------------------
    def forward(self, x: np.ndarray) -> np.ndarray:
        """Evaluate every node over the whole sequence.

        Parameters
        ----------
        x : ndarray ``[T, B, ...]`` of the network's dtype (for conv nets ``[T, B, C, H, W]``).
            A stride-0 broadcast along T marks a static (direct-encoded) input; ``[1, B, ...]`` is
            also accepted as static.

        Returns
        -------
        ndarray ``[T, B, ...]`` — the output node's value at every step (logits per step). It may
        be a read-only broadcast view when the output does not depend on time.
        """
        if self.output is None:
            raise RuntimeError("Network.forward: the network has no nodes")
        x = check_array("x", x, ndim_min=2, dtypes=(self.dtype,))
        if x.shape[0] not in (1, self.T):
            raise ValueError(f"x: expected {self.T} time steps (axis 0) or 1 (static), got shape {x.shape}")
        self._in_shape = x.shape
        if x.shape[0] > 1 and x.strides[0] == 0:
            x = x[:1]
        outs = {INPUT: x}
        for n in self.nodes.values():
            outs[n.name] = n.layer.forward(*[outs[i] for i in n.inputs], T=self.T)
        y = outs[self.output]
        self._outs = {k: v.shape for k, v in outs.items()}
        self._out_static = y.shape[0] != self.T
        if self._out_static:
            y = np.broadcast_to(y, (self.T,) + y.shape[1:])
        return y

    def backward(self, dy: np.ndarray, *, input_grad: bool = False):
        """STBP: back-propagate ``dy`` (gradient of the loss w.r.t. the output of the last forward,
        ``[T, B, ...]``) through every node; writes each layer's ``grads``.

        Returns the gradient w.r.t. the input if ``input_grad`` (shape of the forward's ``x``; for a
        static input, the gradient w.r.t. the shared image, ``[1, B, ...]``), else None.
        """
        if not self._outs:
            raise RuntimeError("Network.backward: call forward first")
        dy = check_array("dy", dy, shape=(self.T,) + self._outs[self.output][1:], dtypes=(self.dtype,))
        if self._out_static:
            dy = dy.sum(axis=0, keepdims=True)
        grads = {self.output: dy}
        for n in reversed(self.nodes.values()):
            g = grads.pop(n.name, None)
            if g is None:
                # not on a path to the output: no gradient flows; parameters get zero gradients
                for k, v in n.layer.params.items():
                    n.layer.grads[k] = np.zeros_like(v)
                n.layer.clear()
                g_ins = (None,) * len(n.inputs)
            else:
                need = tuple(i != INPUT or input_grad for i in n.inputs)
                g_ins = n.layer.backward(g, need)
                n.layer.clear()
            for i, gi in zip(n.inputs, g_ins):
                if gi is None:
                    continue
                if i in grads:
                    grads[i] = grads[i] + gi  # accumulate: several consumers
                else:
                    grads[i] = gi
        self._outs = {}
        return grads.get(INPUT) if input_grad else None

    # ---- spikes -------------------------------------------------------------------------------
    def lif_nodes(self) -> list[str]:
        return [n.name for n in self.nodes.values() if isinstance(n.layer, LIF)]

    def spikes_per_sample(self) -> float:
        """Total spikes of all LIF layers over all T steps in the last forward, per sample."""
        total, B = 0.0, None
        for name in self.lif_nodes():
            s = self.nodes[name].layer.last_spikes
            if s is None:
                continue
            B = s.shape[1]
            total += float(np.count_nonzero(s)) if not self._relaxed else float(s.sum())
        return total / B if B else 0.0

    # ---- state --------------------------------------------------------------------------------
    def state_arrays(self) -> dict[str, np.ndarray]:
        """Parameters (``param/<node>.<name>``) and buffers (``buffer/<node>.<name>``), as copies."""
        out = {f"param/{k}": v.copy() for k, v in self.parameters()}
        out.update({f"buffer/{k}": v.copy() for k, v in self.buffers()})
        return out

    def load_state_arrays(self, arrays: dict, *, source: str = "arrays") -> None:
        """Copy parameters and buffers from :meth:`state_arrays`-style keys into the network,
        checking that every key is present with the right shape (clear ``ValueError`` otherwise)."""
        want = dict((f"param/{k}", v) for k, v in self.parameters())
        want.update((f"buffer/{k}", v) for k, v in self.buffers())
        missing = [k for k in want if k not in arrays]
        if missing:
            raise ValueError(f"{source}: missing {missing[:5]}{'...' if len(missing) > 5 else ''}; "
                             "was it saved from a network of this architecture?")
        for k, dst in want.items():
            src = np.asarray(arrays[k])
            if src.shape != dst.shape:
                raise ValueError(f"{source}: {k} has shape {src.shape}, the network expects {dst.shape}")
            if src.dtype.kind != "f":
                raise ValueError(f"{source}: {k} has dtype {src.dtype}, expected a float array")
            if not np.isfinite(src).all():
                raise ValueError(f"{source}: {k} contains NaN or infinity")
            dst[...] = src
