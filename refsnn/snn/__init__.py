"""Deep SNN training by STBP (SPEC §4.1): multi-step layers, a DAG container, losses, optimisers.

Modules: :mod:`.layers` (Conv2d, BatchNorm2d, LIF, Rectify, AvgPool2d, GlobalAvgPool, Flatten,
Linear, Add, Concat), :mod:`.network` (:class:`Network`), :mod:`.loss` (CE of the mean / TET,
label smoothing), :mod:`.optim` (SGD, AdamW, cosine schedule), :mod:`.archs` (fixed Conv-LIF
networks and the MSE-NAS graph builder :func:`from_graph`), :mod:`.checkpoint` (``.npz``).
The ``refsnn train`` command is :mod:`refsnn.commands.train`. See docs/stbp.md.
"""
from refsnn.snn.archs import ARCHS, build_arch, from_graph  # noqa: E402  (uses the above)
from refsnn.snn.checkpoint import checkpoint_arrays, restore_checkpoint
from refsnn.snn.layers import (
                               LIF,
                               Add,
                               AvgPool2d,
                               BatchNorm2d,
                               Concat,
                               Conv2d,
                               Flatten,
                               GlobalAvgPool,
                               Layer,
                               Linear,
                               Rectify,
                               kaiming_uniform,
)
from refsnn.snn.loss import loss_and_grad, readout
from refsnn.snn.network import INPUT, Network
from refsnn.snn.optim import SGD, AdamW, cosine_lr, make_optimizer

__all__ = [
    "Layer", "Conv2d", "BatchNorm2d", "LIF", "Rectify", "AvgPool2d", "GlobalAvgPool", "Flatten",
    "Linear", "Add", "Concat", "kaiming_uniform", "Network", "INPUT", "loss_and_grad", "readout",
    "SGD", "AdamW", "cosine_lr", "make_optimizer", "ARCHS", "build_arch", "from_graph",
    "checkpoint_arrays", "restore_checkpoint",
]
