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
  and ``shape.<k>`` (int64) its shape; ES-RSNN: ``w.<k>``, the centre weights as float32.

This module only converts between that dict of arrays and Python values; the commands read and
write the file (:func:`refsnn.io.atomic_savez`, :func:`refsnn.io.load_npz`).
"""
from __future__ import annotations

import json
from typing import Mapping

import numpy as np

from refsnn.ec import nes

__all__ = ["FORMAT", "deployed_arrays", "from_deployed_arrays"]

FORMAT = "refsnn-ec-deployed-v1"

# config keys a deployed file must carry for its network to be rebuilt and replayed
CONFIG_KEYS = ("method", "env", "neurons", "max_steps", "sigma", "seed", "population", "eval_members")


def deployed_arrays(config: Mapping, params: Mapping[str, np.ndarray], norm_mean, norm_std, *,
                    generation: int, det_return: float) -> dict[str, np.ndarray]:
    """The arrays of a deployed file (module docstring) for the run ``config`` (a JSON-ready dict
    holding at least :data:`CONFIG_KEYS`) and the evaluated ``params`` (EC: ``rho``, stored as
    ``rho > 0.5``; ES: the centre weights)."""
    missing = [k for k in CONFIG_KEYS if k not in config]
    if missing:
        raise ValueError(f"config: missing {missing}")
    method = config["method"]
    if method not in ("ec", "es"):
        raise ValueError(f"config: method must be 'ec' or 'es', got {method!r}")
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
    float64. ``ValueError`` naming the array that is missing or inconsistent."""
    for k in ("format", "method", "config_json", "norm.mean", "norm.std"):
        if k not in arrays:
            raise ValueError(f"{k}: missing; not a refsnn EC deployed-network file")
    if str(arrays["format"]) != FORMAT:
        raise ValueError(f"format: not a refsnn EC deployed-network file (format {arrays['format']}, "
                         f"expected {FORMAT})")
    try:
        conf = json.loads(str(arrays["config_json"]))
    except ValueError:
        raise ValueError("config_json: not valid JSON") from None
    missing = [k for k in CONFIG_KEYS if k not in conf]
    if missing:
        raise ValueError(f"config_json: missing {missing}")
    method = conf["method"]
    prefix = "bits." if method == "ec" else "w."
    keys = sorted(k[len(prefix):] for k in arrays if k.startswith(prefix))
    if not keys:
        raise ValueError(f"{prefix}*: no parameters stored for method {method!r}")
    params = {}
    for key in keys:
        if method == "ec":
            if f"shape.{key}" not in arrays:
                raise ValueError(f"shape.{key}: missing")
            shape = tuple(int(s) for s in arrays[f"shape.{key}"])
            n = int(np.prod(shape))
            packed = arrays[f"bits.{key}"]
            if packed.dtype != np.uint8 or packed.size * 8 < n:
                raise ValueError(f"bits.{key}: expected at least {n} packed bits (uint8), got {packed.size} "
                                 f"{packed.dtype} bytes")
            bits = np.unpackbits(packed, count=n, bitorder="little")
            params[key] = bits.reshape(shape).astype(np.float64)
        else:
            params[key] = np.asarray(arrays[f"w.{key}"]).astype(np.float64)
    conf["norm_mean"], conf["norm_std"] = arrays["norm.mean"], arrays["norm.std"]
    if "generation" in arrays:
        conf["generation"], conf["det_return"] = int(arrays["generation"]), float(arrays["det_return"])
    return conf, params
