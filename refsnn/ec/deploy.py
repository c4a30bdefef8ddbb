"""The deployed-network format of ``refsnn ec`` (``refsnn-ec-deployed-v1``): arrays <-> config + parameters.

``deployed.npz`` / ``best_deployed.npz`` of an EC run hold the network that the run's deterministic
members evaluated in one generation, ready for ``refsnn play`` or another backend:

* ``format`` = ``"refsnn-ec-deployed-v1"``, ``method`` (``"ec"`` / ``"es"``), ``env`` (Gymnasium id),
  ``config_json`` (the run's whole config as sorted JSON: ``neurons``, ``max_steps``, ``seed``,
  ``population``, ``eval_members``, ``sigma``, ...);
* ``norm.mean``, ``norm.std``: the observation normaliser frozen for that generation
  (``x_n = (x - mean) / std``);
* ``generation`` (int64: generations completed when it was evaluated, the metrics row's
  ``generation``) and ``det_return`` (the mean return of the deterministic members);
* EC: per matrix ``k`` in ``in``, ``h``, ``out``: ``bits.<k>``, the 1-bit connectivity
  ``theta = rho > 0.5`` flattened in C order and packed with ``numpy.packbits(..., bitorder="little")``,
  and ``shape.<k>`` (int64) its shape; ES-RSNN: ``w.<k>``, the centre weights as float32; ES-GRU /
  ES-LSTM (``method`` ``"es-gru"`` / ``"es-lstm"``): ``w.<k>`` for ``k`` in ``w_ih, w_hh, b_ih, b_hh,
  w_out, b_out`` (PyTorch's ``GRUCell`` / ``LSTMCell`` + ``Linear`` layouts, float32); SG-PPO
  (``"sg-ppo"``): ``w.<k>`` for ``k`` in ``W_in, W_h, W_out`` (``W_h`` as trained: Dale's signs are
  applied when it is used) and the PPO heads ``log_std, w_v, b_v``.

This module only converts between that dict of arrays and Python values; the commands read and
write the file (:func:`refsnn.io.atomic_savez`, :func:`refsnn.io.load_npz`).

Reading checks everything before allocating: the config's sizes (``neurons`` at most
:data:`MAX_NEURONS`), the normaliser (1-D, finite, ``std > 0``), exactly the matrices ``in``, ``h``,
``out`` with the shapes the config and the normaliser imply (``in``: ``(2 obs, N)`` for EC, ``(obs, N)``
for ES; ``h``: ``(N, N)``; ``out``: ``(N, act)``, ``act`` at most :data:`MAX_ACTIONS`), and for EC
exactly ``ceil(n / 8)`` packed bytes per matrix with zero padding bits -- a file whose bit arrays were
cut short (or padded) is refused, never played as a different network.
"""
from __future__ import annotations

import json
import math
from typing import Mapping

import numpy as np

from refsnn._checks import check_float, check_int
from refsnn.ec import nes
from refsnn.ec.policy import METHODS, RNN_GATES, rnn_shapes, sg_shapes
from refsnn.io import parse_json

__all__ = ["FORMAT", "deployed_arrays", "from_deployed_arrays"]

FORMAT = "refsnn-ec-deployed-v1"

# config keys a deployed file must carry for its network to be rebuilt and replayed
CONFIG_KEYS = ("method", "env", "neurons", "max_steps", "sigma", "seed", "population", "eval_members")
#: sanity bounds of a deployed file's sizes (checked before anything is allocated)
MAX_NEURONS = 1 << 16
MAX_ACTIONS = 1 << 12
MAX_OBS = 1 << 16


def deployed_arrays(config: Mapping, params: Mapping[str, np.ndarray], norm_mean, norm_std, *,
                    generation: int, det_return: float) -> dict[str, np.ndarray]:
    """The arrays of a deployed file (module docstring) for the run ``config`` (a JSON-ready dict
    holding at least :data:`CONFIG_KEYS`) and the evaluated ``params`` (EC: ``rho``, stored as
    ``rho > 0.5``; ES: the centre weights)."""
    missing = [k for k in CONFIG_KEYS if k not in config]
    if missing:
        raise ValueError(f"config: missing {missing}")
    method = config["method"]
    if method not in METHODS:
        raise ValueError(f"config: method must be one of {METHODS}, got {method!r}")
    d = {"format": np.array(FORMAT), "method": np.array(method), "env": np.array(config["env"]),
         "config_json": np.array(json.dumps(dict(config), sort_keys=True)),
         "norm.mean": np.asarray(norm_mean), "norm.std": np.asarray(norm_std),
         "generation": np.array(generation, np.int64), "det_return": np.array(det_return)}
    if method == "ec":
        for k, th in nes.deterministic_connectivity(params).items():
            d[f"bits.{k}"] = np.packbits(th.ravel(), bitorder="little")   # 1-bit connectivity
            d[f"shape.{k}"] = np.array(th.shape, np.int64)
    else:
        for k, w in params.items():
            d[f"w.{k}"] = np.asarray(w).astype(np.float32)
    return d


def from_deployed_arrays(arrays: Mapping[str, np.ndarray]) -> tuple[dict, dict[str, np.ndarray]]:
    """``(config, params)`` of a deployed file's arrays. ``config`` is the stored config plus
    ``norm_mean``, ``norm_std`` and (when stored) ``generation``, ``det_return``; EC ``params`` are the
    0/1 connectivity as float64 (so ``params > 0.5`` reproduces it), ES ``params`` the weights as
    float64. ``ValueError``/``TypeError`` naming the array that is missing or inconsistent (module
    docstring: every size is checked before anything is allocated)."""
    for k in ("format", "method", "config_json", "norm.mean", "norm.std"):
        if k not in arrays:
            raise ValueError(f"{k}: missing; not a refsnn EC deployed-network file")
    if _text(arrays, "format") != FORMAT:
        raise ValueError(f"format: not a refsnn EC deployed-network file (format {arrays['format']!s:.60}, "
                         f"expected {FORMAT})")
    conf = parse_json(_text(arrays, "config_json"), name="config_json")
    if not isinstance(conf, dict):
        raise ValueError("config_json: expected a JSON object")
    missing = [k for k in CONFIG_KEYS if k not in conf]
    if missing:
        raise ValueError(f"config_json: missing {missing}")
    method = conf["method"]
    if method not in METHODS:
        raise ValueError(f"config_json: method must be one of {METHODS}, got {method!r:.60}")
    if not isinstance(conf["env"], str) or not conf["env"]:
        raise ValueError(f"config_json: env must be a Gymnasium id, got {conf['env']!r:.60}")
    N = check_int("config_json: neurons", conf["neurons"], lo=2, hi=MAX_NEURONS)
    check_int("config_json: max_steps", conf["max_steps"], lo=1)
    check_int("config_json: seed", conf["seed"], lo=0)
    check_int("config_json: population", conf["population"], lo=2)
    check_int("config_json: eval_members", conf["eval_members"], lo=0)
    check_float("config_json: sigma", conf["sigma"], lo=0.0, lo_open=True)
    mean, std = arrays["norm.mean"], arrays["norm.std"]
    for k, a in (("norm.mean", mean), ("norm.std", std)):
        if not isinstance(a, np.ndarray) or a.dtype.kind != "f" or a.ndim != 1 or not 1 <= a.size <= MAX_OBS:
            raise ValueError(f"{k}: expected a 1-D float array of 1..{MAX_OBS} values, got "
                             f"{getattr(a, 'dtype', type(a).__name__)} {np.shape(a)}")
        if not np.isfinite(a).all():
            raise ValueError(f"{k}: contains NaN or infinity")
    if std.shape != mean.shape:
        raise ValueError(f"norm.std: expected the shape of norm.mean {mean.shape}, got {std.shape}")
    if (std <= 0).any():
        raise ValueError("norm.std: expected positive values")
    obs = mean.size
    if method in RNN_GATES or method == "sg-ppo":
        params = _named_params(arrays, method, obs, N)
    else:
        params = _rsnn_params(arrays, method, obs, N)
    conf["norm_mean"], conf["norm_std"] = mean, std
    if "generation" in arrays:
        g, d = arrays["generation"], arrays.get("det_return")
        if g.shape != () or g.dtype.kind not in "iu" or d is None or d.shape != () or d.dtype.kind != "f":
            raise ValueError("generation, det_return: expected an integer and a float scalar")
        conf["generation"], conf["det_return"] = check_int("generation", int(g), lo=0), float(d)
    return conf, params


def _float_weights(arrays, name: str) -> np.ndarray:
    w = arrays[name]
    if w.dtype.kind != "f":
        raise TypeError(f"{name}: expected float weights, got {w.dtype}")
    if not np.isfinite(w).all():
        raise ValueError(f"{name}: contains NaN or infinity")
    return w.astype(np.float64)


def _named_params(arrays, method: str, obs: int, H: int) -> dict[str, np.ndarray]:
    """ES-GRU / ES-LSTM / SG-PPO weights: exactly the keys of :func:`refsnn.ec.policy.rnn_shapes` /
    :func:`refsnn.ec.policy.sg_shapes`, with the shapes that the observations, the hidden units
    (neurons) and the readout's action count imply."""
    keys = sorted(k[2:] for k in arrays if k.startswith("w."))
    name, axis = ("w.W_out", 1) if method == "sg-ppo" else ("w.w_out", 0)
    out = arrays.get(name)
    act = int(np.shape(out)[axis]) if out is not None and np.ndim(out) == 2 else 0
    if not 1 <= act <= MAX_ACTIONS:
        raise ValueError(f"{name}: expected {act} actions (1..{MAX_ACTIONS}) with {H} hidden units, got "
                         f"{None if out is None else np.shape(out)}")
    want = sg_shapes(obs, H, act) if method == "sg-ppo" else rnn_shapes(method, obs, H, act)
    if keys != sorted(want):
        raise ValueError(f"w.*: expected {['w.' + k for k in sorted(want)]} for method {method!r}, got "
                         f"{['w.' + k for k in keys]}")
    for k, shape in want.items():
        if np.shape(arrays[f"w.{k}"]) != shape:
            raise ValueError(f"w.{k}: expected {shape} (observations {obs}, hidden {H}, actions {act}), got "
                             f"{np.shape(arrays[f'w.{k}'])}")
    return {k: _float_weights(arrays, f"w.{k}") for k in want}


def _rsnn_params(arrays, method: str, obs: int, N: int) -> dict[str, np.ndarray]:
    """EC (1-bit) or ES-RSNN (float) matrices ``in``, ``h``, ``out``, every size checked."""
    prefix = "bits." if method == "ec" else "w."
    keys = sorted(k[len(prefix):] for k in arrays if k.startswith(prefix))
    if keys != ["h", "in", "out"]:
        raise ValueError(f"{prefix}*: expected the matrices {prefix}in, {prefix}h, {prefix}out for method "
                         f"{method!r}, got {[prefix + k for k in keys]}")
    shapes = _stored_shapes(arrays, method, keys)
    want_in = (2 * obs if method == "ec" else obs, N)
    if shapes["in"] != want_in:
        raise ValueError(f"{_shape_key(method, 'in')}: expected {want_in} (observations {obs} of norm.mean, "
                         f"neurons {N}), got {shapes['in']}")
    if shapes["h"] != (N, N):
        raise ValueError(f"{_shape_key(method, 'h')}: expected {(N, N)} (neurons {N}), got {shapes['h']}")
    if len(shapes["out"]) != 2 or shapes["out"][0] != N or not 1 <= shapes["out"][1] <= MAX_ACTIONS:
        raise ValueError(f"{_shape_key(method, 'out')}: expected ({N}, act) with 1 <= act <= {MAX_ACTIONS}, "
                         f"got {shapes['out']}")
    params = {}
    for key in keys:
        shape = shapes[key]
        n = math.prod(shape)
        if method == "ec":
            packed = arrays[f"bits.{key}"]
            nbytes = (n + 7) // 8
            if packed.dtype != np.uint8 or packed.ndim != 1 or packed.size != nbytes:
                raise ValueError(f"bits.{key}: expected {nbytes} packed bytes (uint8) for shape {shape}, got "
                                 f"{packed.size} {packed.dtype} values of shape {packed.shape} (cut short, padded "
                                 f"or foreign)")
            bits = np.unpackbits(packed, bitorder="little")
            if bits[n:].any():
                raise ValueError(f"bits.{key}: the padding bits past {n} are not zero (corrupt or foreign)")
            params[key] = bits[:n].reshape(shape).astype(np.float64)
        else:
            params[key] = _float_weights(arrays, f"w.{key}")
    return params


def _text(arrays, key: str) -> str:
    a = arrays[key]
    if not isinstance(a, np.ndarray) or a.shape != () or a.dtype.kind not in "US":
        raise ValueError(f"{key}: expected a string, got {getattr(a, 'dtype', type(a).__name__)} "
                         f"{np.shape(a)}")
    return str(a)


def _shape_key(method: str, key: str) -> str:
    return f"shape.{key}" if method == "ec" else f"w.{key}"


def _stored_shapes(arrays, method: str, keys) -> dict[str, tuple[int, ...]]:
    """The matrices' shapes as stored (EC: the ``shape.*`` arrays; ES: the weights' own shapes)."""
    out = {}
    for key in keys:
        if method == "es":
            out[key] = tuple(int(s) for s in np.shape(arrays[f"w.{key}"]))
            continue
        name = f"shape.{key}"
        s = arrays.get(name)
        if s is None:
            raise ValueError(f"{name}: missing")
        if not isinstance(s, np.ndarray) or s.dtype.kind not in "iu" or s.shape != (2,):
            raise ValueError(f"{name}: expected two integers, got {getattr(s, 'dtype', type(s).__name__)} "
                             f"{np.shape(s)}")
        out[key] = tuple(int(v) for v in s)
    return out
