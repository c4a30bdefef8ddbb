"""Datasets (SPEC §4.2–4.3): one API for the embedded sets and the user-supplied paper datasets.

>>> from refsnn.datasets import load, iterate_batches
>>> ds = load("mnist5k", timesteps=4)
>>> rng = np.random.default_rng(0)
>>> for x_tb, y in iterate_batches(ds, "train", 64, rng=rng, shuffle=True, augment=True):
...     ...   # x_tb float32 [T, B, C, H, W], y int64 (B,)

Modules: ``core`` (``load``, ``Dataset``, ``iterate_batches``), ``paths`` (``data_dir``),
``mnist`` (the embedded mnist5k), ``cifar`` (restricted unpickler for CIFAR python batches),
``events`` (event arrays, ``events_to_frames``, the ``events:DIR`` loader), ``saccades``
(``mnist5k-events``). Nothing here downloads anything.
"""
from refsnn.datasets.core import Dataset, augment_batch, fold_assignment, iterate_batches, load
from refsnn.datasets.events import EVENT_DTYPE, events_to_frames, events_to_frames_ref, make_events, save_event_dir
from refsnn.datasets.paths import data_dir, data_file

__all__ = [
    "Dataset", "load", "iterate_batches", "augment_batch", "fold_assignment",
    "EVENT_DTYPE", "make_events", "events_to_frames", "events_to_frames_ref", "save_event_dir",
    "data_dir", "data_file",
]
