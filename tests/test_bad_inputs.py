"""The bad-input corpus: malformed inputs across the command line (options) and the public API.

Every row is one malformed input and the clean error it must give:

* API rows: ``(id, call, exception type, regex)``; ``call(fx)`` gets the fixture files of
  :func:`fx` (corrupt, truncated, crafted and foreign files, built once per module) and must raise
  that exception (``ValueError``/``TypeError``/``FileNotFoundError``) with a message matching the regex,
  which names the argument or the file.
* CLI rows: ``(id, argv, exit status, regex)``; ``refsnn.cli.main(argv)`` must return the status
  (usage and bad-input errors 2, failures 1) and write exactly one stderr line
  ``refsnn CMD: error: ...`` matching the regex, without a traceback. Argparse's own usage errors
  (unknown option, a value of the wrong type) print the usage line and then that one error line.

Commands that would run long reject the bad input before any work (sizes that cannot fit in memory
included), so the module is fast; operating-system errors are simulated (``EACCES``). Run
directories, checkpoints, budgets, replays and signals have their own corpus, ``test_bad_runs.py``.
"""
from __future__ import annotations

import errno
import json
import os
import re
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from corpus import assert_one_error_line, one_error_line, raise_oserror
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hst

import refsnn.io
from refsnn.cli import main as cli
from refsnn.commands.ec import ECConfig
from refsnn.commands.nas import NASConfig
from refsnn.commands.play import PlayConfig
from refsnn.commands.train import TrainConfig
from refsnn.datasets import events_to_frames, load, make_events, save_event_dir
from refsnn.datasets.events import EVENT_DTYPE, load_event_split
from refsnn.ec.deploy import deployed_arrays, from_deployed_arrays
from refsnn.ec.strategy import make_strategy
from refsnn.io import atomic_savez, load_npz, parse_json
from refsnn.nas.genotype import Genotype, from_json, validate
from refsnn.nas.network import parse_genotype_arch
from refsnn.nas.search import EvolutionarySearch, SearchConfig
from refsnn.snn.archs import build_arch
from refsnn.snn.checkpoint import checkpoint_meta
from refsnn.snn.graph import check_graph
from refsnn.vectors.check import check as check_vectors

FLAT = [1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1]                     # a valid 1-cell genotype
OBS, ACT, N = 11, 3, 16                                      # Hopper-v5, a tiny network


# ------------------------------------------------------------------------------------------------
# fixture files
# ------------------------------------------------------------------------------------------------

def _deployed(method="ec", obs=OBS, **over) -> dict:
    conf = dict(method=method, env="Hopper-v5", neurons=N, max_steps=20, sigma=0.3, seed=0, population=4,
                eval_members=1)
    rng = np.random.default_rng(0)
    first = 2 * obs if method == "ec" else obs
    params = {"in": rng.random((first, N)), "h": rng.random((N, N)), "out": rng.random((N, ACT))}
    d = deployed_arrays(conf, params, np.zeros(obs), np.ones(obs), generation=1, det_return=1.0)
    d.update(over)
    return {k: v for k, v in d.items() if v is not None}


def _npy_with_shape(shape_text: bytes) -> bytes:
    import io as _io
    buf = _io.BytesIO()
    np.save(buf, np.zeros(4, np.uint8))
    return buf.getvalue().replace(b"(4,)", shape_text.ljust(4))


def _play_dir(root: Path, name: str, arrays: dict | None = None, raw: bytes | None = None) -> str:
    d = root / name
    d.mkdir()
    if raw is not None:
        (d / "deployed.npz").write_bytes(raw)
    elif arrays is not None:
        atomic_savez(d / "deployed.npz", arrays)
    return str(d)


def _events_dir(root: Path, name: str, bad: tuple[str, bytes] | None = None, meta: str | None = None) -> str:
    ev = make_events([0, 1, 2], [0, 1, 1], [0, 10, 20], [0, 1, 1])
    d = save_event_dir(root / name, {"train": [(ev, 0), (ev, 1)], "test": [(ev, 0)]}, (4, 4))
    if bad is not None:
        (d / "train" / "0" / bad[0]).write_bytes(bad[1])
    if meta is not None:
        (d / "meta.json").write_text(meta)
    return str(d)


@pytest.fixture(scope="module")
def fx(tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("bad")
    f = SimpleNamespace(root=root)
    f.file = root / "a_file"
    f.file.write_text("x")
    good = atomic_savez(root / "good.npz", {"x": np.arange(6), "y": np.ones((2, 2))})
    raw = good.read_bytes()
    f.truncated = root / "truncated.npz"
    f.truncated.write_bytes(raw[: len(raw) // 2])
    f.text_npz = root / "text.npz"
    f.text_npz.write_text("not a zip archive")
    f.empty_npz = root / "empty.npz"
    f.empty_npz.write_bytes(b"")
    f.pickled = root / "pickled.npz"
    np.savez(f.pickled, o=np.array([{"evil": 1}], dtype=object))
    f.crafted = root / "crafted.npz"
    with zipfile.ZipFile(f.crafted, "w") as z:
        z.writestr("a.npy", _npy_with_shape(b"(1000000000000,)"))
    f.bad_header = root / "bad_header.npz"
    with zipfile.ZipFile(f.bad_header, "w") as z:
        z.writestr("a.npy", b"\x93NUMPY\x01\x00\x10\x00{garbage header}\n")
    f.plain_npy = root / "plain.npz"
    np.save(root / "plain.npy", np.zeros(3))
    (root / "plain.npy").rename(f.plain_npy)
    f.good = good
    # genotype files
    f.deep_json = root / "deep.json"
    f.deep_json.write_text("[" * 100000 + "]" * 100000)
    cells = lambda m, ops: json.dumps({"cells": [{"motif": m, "ops": ops}], "g1": 1, "g2": 1})  # noqa: E731
    f.float_gene = root / "float_gene.json"
    f.float_gene.write_text(cells(1.9, [1, 0, 0, 0, 0, 0, 0, 0]))
    f.str_gene = root / "str_gene.json"
    f.str_gene.write_text(cells("3", [1, 0, 0, 0, 0, 0, 0, 0]))
    f.bool_gene = root / "bool_gene.json"
    f.bool_gene.write_text(cells(1, [True, 0, 0, 0, 0, 0, 0, 0]))
    f.str_ops = root / "str_ops.json"
    f.str_ops.write_text(cells(1, "10000000"))
    f.binary_json = root / "binary.json"
    f.binary_json.write_bytes(b"\xff\xfe\x00garbage")
    f.empty_json = root / "empty.json"
    f.empty_json.write_text("")
    f.bad_channels = root / "bad_channels.json"
    f.bad_channels.write_text(json.dumps({"flat": FLAT, "channels": True}))
    f.genotype = root / "genotype.json"
    f.genotype.write_text(json.dumps({"flat": FLAT}))
    # event directories
    f.ev_badzip = _events_dir(root, "ev_badzip", ("corrupt.npz", b"PK\x03\x04 this is not a zip"))
    f.ev_truncnpy = _events_dir(root, "ev_truncnpy", ("trunc.npy", _npy_with_shape(b"(3,)")[:-2]))
    f.ev_craftnpy = _events_dir(root, "ev_craftnpy", ("crafted.npy", _npy_with_shape(b"(10**12,)".replace(
        b"10**12", b"1000000000000"))))
    f.ev_plainnpy = _events_dir(root, "ev_plainnpy", ("plain.npy", _npy_with_shape(b"(4,)")))
    f.ev_deepmeta = _events_dir(root, "ev_deepmeta", meta='{"sensor_size": ' + "[" * 5000 + "]" * 5000 + "}")
    f.ev_boolmeta = _events_dir(root, "ev_boolmeta", meta='{"sensor_size": [true, true]}')
    f.ev_hugemeta = _events_dir(root, "ev_hugemeta", meta='{"sensor_size": [1000000, 1000000]}')
    f.ev_nanmeta = _events_dir(root, "ev_nanmeta", meta='{"sensor_size": [4, 4], "augment_pad": NaN}')
    # deployed networks for refsnn play
    d = _deployed()
    f.play_good = _play_dir(root, "play_good", d)
    f.play_empty = _play_dir(root, "play_empty")
    f.play_corrupt = _play_dir(root, "play_corrupt", raw=raw[:100])
    f.play_crafted_npz = _play_dir(root, "play_crafted_npz", raw=f.crafted.read_bytes())
    f.play_shape = _play_dir(root, "play_shape", {**d, "shape.h": np.array([1 << 30, 1 << 30], np.int64)})
    f.play_overflow = _play_dir(root, "play_overflow", {**d, "shape.h": np.array([1 << 32, 1 << 32], np.int64)})
    f.play_cut = _play_dir(root, "play_cut", {**d, "bits.h": d["bits.h"][:-3]})
    f.play_foreign = _play_dir(root, "play_foreign", {"x": np.zeros(3)})
    f.play_deepconf = _play_dir(root, "play_deepconf", {**d, "config_json": np.array("[" * 10000 + "]" * 10000)})
    f.play_obs = _play_dir(root, "play_obs", _deployed(obs=5))
    f.play_es_nan = _play_dir(root, "play_es_nan", _deployed("es", **{"w.h": np.full((N, N), np.nan, np.float32)}))
    return f


# ------------------------------------------------------------------------------------------------
# API rows: (id, call(fx), exception, regex naming the argument or the file)
# ------------------------------------------------------------------------------------------------

def _strategy(method="ec"):
    s = make_strategy(method, 3, 2, neurons=4, population=4, eval_members=1, lr=0.1, eps=1e-3,
                      gradient="natural", sigma=0.3, weight_decay=0.1, fitness_shift=0.0, seed=0)
    return s, s.init()


def _tell_args(lengths=None):
    return _strategy()[1], np.arange(5.0), np.full(5, 3) if lengths is None else lengths


def _search():
    s = EvolutionarySearch(SearchConfig(n_cells=1, population_size=4, generations=1, n_elites=1, seed=0))
    s.ask()
    return s


def _graph(**over):
    g = {"nodes": [{"name": "in", "op": "input", "channels": 1, "shape": [4, 4]}], "edges": [], "output": "in"}
    g.update(over)
    return g


def _ev(**cols):
    base = dict(x=[0, 1], y=[0, 1], t=[0, 5], p=[0, 1])
    base.update(cols)
    ev = np.zeros(2, EVENT_DTYPE)
    for k, v in base.items():
        ev[k] = v
    return ev


D = _deployed()
# 5 neurons, 3 observations: bits.in holds 6 x 5 = 30 bits in 4 bytes, 2 of them padding
D5 = deployed_arrays(dict(method="ec", env="Hopper-v5", neurons=5, max_steps=20, sigma=0.3, seed=0, population=4,
                          eval_members=1), {"in": np.ones((6, 5)), "h": np.ones((5, 5)), "out": np.ones((5, 3))},
                     np.zeros(3), np.ones(3), generation=1, det_return=1.0)
API_ROWS = [
    # -- refsnn.io.load_npz: missing, truncated, foreign, crafted, pickled, incomplete files
    ("load_npz missing", lambda f: load_npz(f.root / "nope.npz"), FileNotFoundError, "nope.npz"),
    ("load_npz directory", lambda f: load_npz(f.root), FileNotFoundError, "no such file"),
    ("load_npz truncated", lambda f: load_npz(f.truncated), ValueError, "truncated.npz"),
    ("load_npz text file", lambda f: load_npz(f.text_npz), ValueError, "text.npz"),
    ("load_npz empty file", lambda f: load_npz(f.empty_npz), ValueError, "empty.npz"),
    ("load_npz pickled object", lambda f: load_npz(f.pickled), ValueError, "pickled.npz"),
    ("load_npz crafted header shape", lambda f: load_npz(f.crafted), ValueError, r"crafted.npz.*declares shape"),
    ("load_npz garbage header", lambda f: load_npz(f.bad_header), ValueError, "bad_header.npz"),
    ("load_npz plain .npy", lambda f: load_npz(f.plain_npy), ValueError, "plain.npz"),
    ("load_npz missing array", lambda f: load_npz(f.good, required=("z",)), ValueError, r"good.npz.*missing"),
    # -- refsnn.io.parse_json
    ("parse_json deep nesting", lambda f: parse_json("[" * 100000 + "]" * 100000, name="doc"), ValueError,
     "^doc: JSON nested"),
    ("parse_json invalid", lambda f: parse_json("{", name="doc"), ValueError, "^doc: not valid JSON"),
    ("parse_json not text", lambda f: parse_json(3, name="doc"), TypeError, "^doc: expected JSON text"),
    ("parse_json huge integer", lambda f: parse_json("1" * 5000, name="doc"), ValueError, "^doc: not valid"),
    ("parse_json bad utf-8", lambda f: parse_json(b"\xff\xfe{", name="doc"), ValueError, "^doc: not valid"),
    # -- the commands' config dataclasses
    ("ECConfig out empty", lambda f: ECConfig(out=""), ValueError, "^out"),
    ("ECConfig population bool", lambda f: ECConfig(population=True), TypeError, "^population"),
    ("ECConfig lr string", lambda f: ECConfig(lr="0.1"), TypeError, "^lr"),
    ("ECConfig sigma inf", lambda f: ECConfig(sigma=float("inf")), ValueError, "^sigma"),
    ("ECConfig method", lambda f: ECConfig(method="ga"), ValueError, "^method"),
    ("TrainConfig min_lr above lr", lambda f: TrainConfig(lr=0.01, min_lr=0.1), ValueError, "^min_lr"),
    ("TrainConfig timesteps float", lambda f: TrainConfig(timesteps=2.0), TypeError, "^timesteps"),
    ("TrainConfig eval_noise negative", lambda f: TrainConfig(eval_noise=-1.0), ValueError, "^eval_noise"),
    ("TrainConfig dtype", lambda f: TrainConfig(dtype="float16"), ValueError, "^dtype"),
    ("NASConfig elites >= population", lambda f: NASConfig(population=4, elites=4), ValueError, "^elites"),
    ("NASConfig channels 0", lambda f: NASConfig(channels=0), ValueError, "^channels"),
    ("NASConfig fitness", lambda f: NASConfig(fitness="accuracy"), ValueError, "^fitness"),
    ("PlayConfig run_dir None", lambda f: PlayConfig(None), ValueError, "^run_dir"),
    ("PlayConfig seed negative", lambda f: PlayConfig("x", seed=-1), ValueError, "^seed"),
    # -- genotypes: structure, non-integer genes, deep nesting
    ("genotype cells float gene", lambda f: from_json(f.float_gene.read_text()), TypeError, r"genotype\[0\].*1.9"),
    ("genotype cells string gene", lambda f: from_json(f.str_gene.read_text()), TypeError, r"genotype\[0\].*'3'"),
    ("genotype cells bool gene", lambda f: from_json(f.bool_gene.read_text()), TypeError, r"genotype\[1\].*True"),
    ("genotype ops as a string", lambda f: from_json(f.str_ops.read_text()), TypeError, r"cells\[0\]\['ops'\]"),
    ("genotype cells not a list", lambda f: from_json('{"cells": 3, "g1": 1, "g2": 1}'), TypeError, "'cells'"),
    ("genotype cell not an object", lambda f: from_json('{"cells": [[1, 2]], "g1": 1, "g2": 1}'), TypeError,
     "'cells'"),
    ("genotype missing g1", lambda f: from_json('{"cells": [{"motif": 1, "ops": [0,0,0,0,0,0,0,0]}], "g2": 1}'),
     ValueError, "missing key 'g1'"),
    ("genotype deep nesting", lambda f: from_json(f.deep_json.read_text()), ValueError, "^text: JSON nested"),
    ("genotype wrong format", lambda f: from_json('{"format": "other/1", "flat": []}'), ValueError, "format"),
    ("genotype not an object", lambda f: from_json("3"), TypeError, "^text"),
    ("genotype flat float gene", lambda f: from_json(json.dumps(FLAT[:-1] + [1.0])), TypeError,
     r"genotype\[10\]"),
    ("genotype flat wrong length", lambda f: validate(FLAT[:-1]), ValueError, "length"),
    ("genotype flat out of range", lambda f: validate([9] + FLAT[1:]), ValueError, r"genotype\[0\]"),
    ("genotype flat float array", lambda f: validate(np.array(FLAT, float)), TypeError, "dtype"),
    ("genotype flat 2-D", lambda f: validate(np.array([FLAT])), ValueError, "1-D"),
    ("genotype flat and cells disagree", lambda f: from_json(json.dumps(
        {"flat": FLAT, "cells": [{"motif": 2, "ops": FLAT[1:9]}], "g1": 1, "g2": 1})), ValueError, "different"),
    ("Genotype direct float motif", lambda f: Genotype(((1.5, (0,) * 8),), 1, 1), TypeError, r"genotype\[0\]"),
    ("Genotype no cells", lambda f: Genotype((), 1, 1), ValueError, "^cells"),
    ("Genotype ops wrong length", lambda f: Genotype(((1, (0,) * 7),), 1, 1), ValueError, r"^cells\[0\]"),
    # -- genotype:PATH arch strings
    ("arch without prefix", lambda f: parse_genotype_arch("csnn"), ValueError, "^arch"),
    ("arch missing file", lambda f: parse_genotype_arch(f"genotype:{f.root}/none.json"), FileNotFoundError,
     "none.json"),
    ("arch deep file", lambda f: parse_genotype_arch(f"genotype:{f.deep_json}"), ValueError, r"deep.json.*nested"),
    ("arch float gene file", lambda f: parse_genotype_arch(f"genotype:{f.float_gene}"), TypeError,
     "float_gene.json"),
    ("arch binary file", lambda f: parse_genotype_arch(f"genotype:{f.binary_json}"), ValueError, "binary.json"),
    ("arch empty file", lambda f: parse_genotype_arch(f"genotype:{f.empty_json}"), ValueError, "empty.json"),
    ("arch channels bool", lambda f: parse_genotype_arch(f"genotype:{f.bad_channels}"), TypeError, "channels"),
    ("arch channels @0", lambda f: parse_genotype_arch(f"genotype:{f.genotype}@0"), ValueError, "channels"),
    ("build_arch unknown token", lambda f: build_arch("c8-q", input_shape=(1, 8, 8), num_classes=2, timesteps=1,
                                                      rng=np.random.default_rng(0)), ValueError, "arch"),
    # -- deployed networks: sizes checked before allocating, cut bit arrays refused
    ("deploy crafted huge shape", lambda f: from_deployed_arrays(
        {**D, "shape.h": np.array([1 << 30, 1 << 30])}), ValueError, r"^shape.h: expected \(16, 16\)"),
    ("deploy overflowing shape", lambda f: from_deployed_arrays(
        {**D, "shape.h": np.array([1 << 32, 1 << 32])}), ValueError, "^shape.h"),
    ("deploy negative shape", lambda f: from_deployed_arrays({**D, "shape.h": np.array([-1, 256])}), ValueError,
     "^shape.h"),
    ("deploy shape float dtype", lambda f: from_deployed_arrays({**D, "shape.h": np.array([16.0, 16.0])}),
     ValueError, "^shape.h"),
    ("deploy bits cut short", lambda f: from_deployed_arrays({**D, "bits.h": D["bits.h"][:-1]}), ValueError,
     "^bits.h: .*cut short"),
    ("deploy bits padded", lambda f: from_deployed_arrays({**D, "bits.h": np.append(D["bits.h"], 0).astype(
        np.uint8)}), ValueError, "^bits.h"),
    ("deploy nonzero padding bits", lambda f: from_deployed_arrays(
        {**D5, "bits.in": np.append(D5["bits.in"][:-1], np.uint8(255))}), ValueError, "^bits.in: the padding"),
    ("deploy bits wrong dtype", lambda f: from_deployed_arrays({**D, "bits.h": D["bits.h"].astype(np.int64)}),
     ValueError, "^bits.h"),
    ("deploy missing shape", lambda f: from_deployed_arrays({k: v for k, v in D.items() if k != "shape.in"}),
     ValueError, "^shape.in: missing"),
    ("deploy extra matrix", lambda f: from_deployed_arrays({**D, "bits.x": D["bits.h"]}), ValueError, r"^bits\."),
    ("deploy missing format", lambda f: from_deployed_arrays({k: v for k, v in D.items() if k != "format"}),
     ValueError, "^format"),
    ("deploy format not a string", lambda f: from_deployed_arrays({**D, "format": np.zeros(3)}), ValueError,
     "^format"),
    ("deploy config_json deep", lambda f: from_deployed_arrays({**D, "config_json": np.array("[" * 5000)}),
     ValueError, "^config_json: JSON nested"),
    ("deploy config_json invalid", lambda f: from_deployed_arrays({**D, "config_json": np.array("{")}),
     ValueError, "^config_json: not valid JSON"),
    ("deploy neurons huge", lambda f: from_deployed_arrays({**D, "config_json": np.array(json.dumps(
        {**json.loads(str(D["config_json"])), "neurons": 10 ** 9}))}), ValueError, "neurons"),
    ("deploy neurons float", lambda f: from_deployed_arrays({**D, "config_json": np.array(json.dumps(
        {**json.loads(str(D["config_json"])), "neurons": 16.5}))}), TypeError, "neurons"),
    ("deploy method", lambda f: from_deployed_arrays({**D, "config_json": np.array(json.dumps(
        {**json.loads(str(D["config_json"])), "method": "ga"}))}), ValueError, "method"),
    ("deploy norm.std zero", lambda f: from_deployed_arrays({**D, "norm.std": np.zeros(OBS)}), ValueError,
     "^norm.std"),
    ("deploy norm.mean NaN", lambda f: from_deployed_arrays({**D, "norm.mean": np.full(OBS, np.nan)}),
     ValueError, "^norm.mean: contains NaN"),
    ("deploy norm lengths differ", lambda f: from_deployed_arrays({**D, "norm.std": np.ones(OBS + 1)}),
     ValueError, "^norm.std"),
    ("deploy norm.mean 2-D", lambda f: from_deployed_arrays({**D, "norm.mean": np.zeros((OBS, 1))}), ValueError,
     "^norm.mean"),
    ("deploy generation float", lambda f: from_deployed_arrays({**D, "generation": np.array(1.5)}), ValueError,
     "generation"),
    ("deploy es weights NaN", lambda f: from_deployed_arrays(
        _deployed("es", **{"w.h": np.full((N, N), np.nan, np.float32)})), ValueError, "^w.h: contains NaN"),
    ("deploy es weights wrong shape", lambda f: from_deployed_arrays(
        _deployed("es", **{"w.h": np.zeros((N, N + 1), np.float32)})), ValueError, "^w.h"),
    ("deploy es weights int", lambda f: from_deployed_arrays(
        _deployed("es", **{"w.out": np.zeros((N, ACT), np.int64)})), TypeError, "^w.out"),
    # -- events: int64 overflow, corrupt files in a directory, meta.json
    ("events span x bins overflows", lambda f: events_to_frames(_ev(t=[0, 2 ** 62]), (2, 2), 4), ValueError,
     r"^events\['t'\]: a span"),
    ("events span overflows int64", lambda f: events_to_frames(_ev(t=[-2 ** 63, 2 ** 63 - 1]), (2, 2), 1),
     ValueError, r"^events\['t'\]"),
    ("events uint64 beyond int64", lambda f: events_to_frames(np.array(
        [(0, 0, 2 ** 64 - 1, 1)], [("x", "i2"), ("y", "i2"), ("t", "u8"), ("p", "i1")]), (2, 2), 2), ValueError,
     r"^events\['t'\]: timestamps above"),
    ("events t_range beyond int64", lambda f: events_to_frames(_ev(), (2, 2), 2, t_range=(0, 2 ** 63)),
     ValueError, r"^t_range\[1\]"),
    ("events t_range span x bins", lambda f: events_to_frames(_ev(), (2, 2), 3, t_range=(0, 2 ** 62)),
     ValueError, "^t_range: a span"),
    ("events t_range reversed", lambda f: events_to_frames(_ev(), (2, 2), 2, t_range=(5, 0)), ValueError,
     r"^t_range\[1\]"),
    ("events float timestamps", lambda f: events_to_frames(np.zeros(2, [("x", "i2"), ("y", "i2"), ("t", "f8"),
                                                                        ("p", "i1")]), (2, 2), 2), TypeError,
     r"events\['t'\]"),
    ("events x out of range", lambda f: events_to_frames(_ev(x=[0, 5]), (2, 2), 2), ValueError, r"events\['x'\]"),
    ("events zero bins", lambda f: events_to_frames(_ev(), (2, 2), 0), ValueError, "^n_time_bins"),
    ("events sensor size", lambda f: events_to_frames(_ev(), (0, 2), 2), ValueError, r"^sensor_size\[0\]"),
    ("events dir corrupt npz", lambda f: load_event_split(f.ev_badzip, "train", 2), ValueError, "corrupt.npz"),
    ("events dir truncated npy", lambda f: load_event_split(f.ev_truncnpy, "train", 2), ValueError, "trunc.npy"),
    ("events dir crafted npy", lambda f: load_event_split(f.ev_craftnpy, "train", 2), ValueError,
     r"crafted.npy.*declares"),
    ("events dir plain array npy", lambda f: load_event_split(f.ev_plainnpy, "train", 2), ValueError, "plain.npy"),
    ("events dir deep meta.json", lambda f: load(f"events:{f.ev_deepmeta}", timesteps=2), ValueError,
     r"meta.json.*nested"),
    ("events dir bool sensor_size", lambda f: load(f"events:{f.ev_boolmeta}", timesteps=2), ValueError,
     "sensor_size"),
    ("events dir huge sensor_size", lambda f: load(f"events:{f.ev_hugemeta}", timesteps=2), ValueError,
     "sensor_size"),
    ("events dir NaN in meta", lambda f: load(f"events:{f.ev_nanmeta}", timesteps=2), ValueError, "augment_pad"),
    ("events dir missing", lambda f: load(f"events:{f.root}/none", timesteps=2), FileNotFoundError, "none"),
    ("dataset unknown spec", lambda f: load("mnist6k", timesteps=2), ValueError, "^spec"),
    ("dataset timesteps 0", lambda f: load("mnist5k", timesteps=0), ValueError, "^timesteps"),
    # -- EC strategy tell, NAS search tell
    ("strategy tell wrong count", lambda f: _strategy()[0].tell(_strategy()[1], np.zeros(4), np.zeros(5)),
     ValueError, "^returns: expected 5"),
    ("strategy tell NaN return", lambda f: _strategy()[0].tell(_strategy()[1], np.full(5, np.nan), np.zeros(5)),
     ValueError, "^returns: contains NaN"),
    ("strategy tell negative length", lambda f: _strategy()[0].tell(_strategy()[1], np.zeros(5), -np.ones(5)),
     ValueError, "^lengths"),
    ("strategy tell strings", lambda f: _strategy()[0].tell(_strategy()[1], np.array(["a"] * 5), np.zeros(5)),
     TypeError, "^returns"),
    ("strategy tell map_fn returns nothing", lambda f: _strategy()[0].tell(
        *_tell_args(), map_fn=lambda fn, items: []), ValueError, "^map_fn: returned 0 results"),
    ("strategy tell map_fn returns None", lambda f: _strategy()[0].tell(*_tell_args(), map_fn=lambda fn, items: None),
     ValueError, "^map_fn: returned None"),
    ("strategy tell map_fn not callable", lambda f: _strategy()[0].tell(*_tell_args(), map_fn=3), TypeError,
     "^map_fn"),
    ("strategy tell n_chunks 0", lambda f: _strategy()[0].tell(*_tell_args(), n_chunks=0), ValueError, "^n_chunks"),
    ("strategy tell n_chunks -3", lambda f: _strategy()[0].tell(*_tell_args(), n_chunks=-3), ValueError,
     "^n_chunks"),
    ("strategy tell n_chunks float", lambda f: _strategy()[0].tell(*_tell_args(), n_chunks=2.0), TypeError,
     "^n_chunks"),
    ("strategy tell lengths 2**62", lambda f: _strategy()[0].tell(*_tell_args(lengths=np.full(5, 2 ** 62))),
     ValueError, "^lengths: .*at most"),
    ("strategy tell fractional lengths", lambda f: _strategy()[0].tell(*_tell_args(lengths=np.full(5, 2.5))),
     ValueError, "^lengths: expected whole numbers"),
    ("strategy ask foreign state", lambda f: _strategy()[0].ask({"params": {}}), TypeError, "^state"),
    ("strategy state from other shapes", lambda f: _strategy()[0].from_state_arrays(
        {"param.in": np.zeros((2, 2))}), ValueError, r"^param\."),
    ("search tell wrong count", lambda f: _search().tell([1.0]), ValueError, "^fitnesses"),
    ("search tell a string", lambda f: _search().tell("abcd"), (ValueError, TypeError), "^fitness"),
    # -- graphs, checkpoints, reference vectors
    ("check_graph duplicate node", lambda f: check_graph(_graph(nodes=[{"name": "a"}, {"name": "a"}])), ValueError,
     "^graph: duplicate"),
    ("check_graph unknown output", lambda f: check_graph(_graph(output="z")), ValueError, "^graph: unknown output"),
    ("checkpoint foreign arrays", lambda f: checkpoint_meta({"x": np.zeros(1)}, source="ck.npz"), ValueError,
     "^ck.npz"),
    ("checkpoint other format", lambda f: checkpoint_meta({"format": np.array("x"), "meta_json": np.array("{}")},
                                                          source="ck.npz"), ValueError, "^ck.npz: format"),
    ("checkpoint meta_json invalid", lambda f: checkpoint_meta(
        {"format": np.array("refsnn.stbp.checkpoint/1"), "meta_json": np.array("{")}, source="ck.npz"), ValueError,
     "^ck.npz: meta_json"),
    ("vectors check missing dir", lambda f: check_vectors(f.root / "none"), FileNotFoundError, "^OUTPUT_DIR"),
    ("vectors check no case matches", lambda f: check_vectors(f.root, only=["zzz*"]), ValueError, "^--only"),
]


@pytest.mark.parametrize("call, exc, pattern", [r[1:] for r in API_ROWS], ids=[r[0] for r in API_ROWS])
def test_api_rejects_bad_input(fx, call, exc, pattern):
    with pytest.raises(exc) as info:
        call(fx)
    assert re.search(pattern, str(info.value)), f"{type(info.value).__name__}: {info.value}"
    assert "\n" not in str(info.value)


# open: outside this change's files (refsnn/snn/graph.py, refsnn/snn/checkpoint.py); strict, so that the
# fix flips them
GRAPH_CHECKPOINT_ROWS = [
    ("check_graph without nodes", lambda f: check_graph({}), ValueError, "^graph"),
    ("checkpoint meta_json deep", lambda f: checkpoint_meta(
        {"format": np.array("refsnn.stbp.checkpoint/1"), "meta_json": np.array("[" * 100000)}, source="ck.npz"),
     ValueError, "^ck.npz"),
]


@pytest.mark.parametrize("call, exc, pattern", [r[1:] for r in GRAPH_CHECKPOINT_ROWS],
                         ids=[r[0] for r in GRAPH_CHECKPOINT_ROWS])
def test_api_graph_and_checkpoint_rows(fx, call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call(fx)


# ------------------------------------------------------------------------------------------------
# CLI rows: (id, argv(fx), exit status, regex of the one stderr line)
# ------------------------------------------------------------------------------------------------

TINY_EC = ["--population", "4", "--eval-members", "1", "--max-steps", "5", "--neurons", "16", "--workers", "0",
           "--generations", "1"]
TINY_NAS = ["--generations", "0", "--population", "2", "--elites", "0", "--cells", "1", "--finalists", "0",
            "--workers", "0", "--quiet"]
TINY_TRAIN = ["--epochs", "1", "--n-train", "8", "--n-test", "8", "--quiet"]

CLI_ROWS = [
    # train
    ("train unknown data", lambda f: ["train", "--data", "nosuchdata", "--out", str(f.root / "t1")], 2, "data"),
    ("train epochs 0", lambda f: ["train", "--epochs", "0"], 2, "epochs"),
    ("train lr NaN", lambda f: ["train", "--lr", "nan"], 2, "lr: expected a finite"),
    ("train lr negative", lambda f: ["train", "--lr", "-1"], 2, "lr"),
    ("train min-lr above lr", lambda f: ["train", "--lr", "0.01", "--min-lr", "0.1"], 2, "min_lr"),
    ("train label smoothing 1", lambda f: ["train", "--label-smoothing", "1"], 2, "label_smoothing"),
    ("train threads 0", lambda f: ["train", "--threads", "0"], 2, "threads"),
    ("train resume and overwrite", lambda f: ["train", "--resume", "--overwrite"], 2, "overwrite"),
    ("train genotype file missing", lambda f: ["train", "--arch", f"genotype:{f.root}/none.json", "--out",
                                              str(f.root / "t2")], 2, "none.json"),
    ("train genotype deep JSON", lambda f: ["train", "--arch", f"genotype:{f.deep_json}", "--out",
                                           str(f.root / "t3")], 2, r"deep.json.*nested"),
    ("train genotype float gene", lambda f: ["train", "--arch", f"genotype:{f.float_gene}", "--out",
                                            str(f.root / "t4")], 2, r"float_gene.json.*1.9"),
    ("train genotype binary", lambda f: ["train", "--arch", f"genotype:{f.binary_json}", "--out",
                                        str(f.root / "t5")], 2, "binary.json"),
    ("train events corrupt npz", lambda f: ["train", "--data", f"events:{f.ev_badzip}", "--out",
                                           str(f.root / "t6"), *TINY_TRAIN], 2, "corrupt.npz"),
    ("train events deep meta", lambda f: ["train", "--data", f"events:{f.ev_deepmeta}", "--out",
                                         str(f.root / "t7"), *TINY_TRAIN], 2, "meta.json"),
    ("train events dir missing", lambda f: ["train", "--data", f"events:{f.root}/none", "--out",
                                           str(f.root / "t8")], 2, "none"),
    ("train out is a file", lambda f: ["train", "--out", str(f.file), *TINY_TRAIN], 2, "^out: .*is a file"),
    ("train out empty", lambda f: ["train", "--out", ""], 2, "^out: expected a directory path"),
    ("train out under a file", lambda f: ["train", "--out", str(f.file / "x"), *TINY_TRAIN], 2, "^out: "),
    # ec
    ("ec population 1", lambda f: ["ec", "--population", "1"], 2, "population"),
    ("ec eval-members -1", lambda f: ["ec", "--eval-members", "-1"], 2, "eval_members"),
    ("ec fitness-shift NaN", lambda f: ["ec", "--fitness-shift", "nan"], 2, "fitness_shift"),
    ("ec sigma 0", lambda f: ["ec", "--sigma", "0"], 2, "sigma"),
    ("ec es odd population", lambda f: ["ec", "--method", "es", "--population", "5"], 2, "population"),
    ("ec workers -1", lambda f: ["ec", "--workers", "-1"], 2, "workers"),
    ("ec max-steps 0", lambda f: ["ec", "--max-steps", "0"], 2, "max_steps"),
    ("ec neurons 1", lambda f: ["ec", "--neurons", "1"], 2, "neurons"),
    ("ec eps 0.6", lambda f: ["ec", "--eps", "0.6"], 2, "eps"),
    ("ec lr inf", lambda f: ["ec", "--lr", "inf"], 2, "lr"),
    ("ec dask without scheduler", lambda f: ["ec", "--executor", "dask"], 2, "scheduler"),
    ("ec resume and overwrite", lambda f: ["ec", "--resume", "--overwrite"], 2, "overwrite"),
    ("ec unknown env", lambda f: ["ec", "--env", "NoSuchEnv-v0", "--out", str(f.root / "e1"), *TINY_EC], 2,
     "env"),
    ("ec out is a file", lambda f: ["ec", "--out", str(f.file), *TINY_EC], 2, "^out: .*is a file"),
    ("ec out under a file", lambda f: ["ec", "--out", str(f.file / "sub"), *TINY_EC], 2, "^out: "),
    ("ec out empty", lambda f: ["ec", "--out", ""], 2, "^out: expected a directory path"),
    ("ec population 1e9", lambda f: ["ec", "--population", "1000000000"], 2, "^population: .* of memory"),
    ("ec eval-members 1e9", lambda f: ["ec", "--eval-members", "1000000000"], 2, "^eval_members: .* of memory"),
    ("ec sg-ppo eval-members 1e9", lambda f: ["ec", "--method", "sg-ppo", "--eval-members", "1000000000"], 2,
     "^eval_members: .* of memory"),
    ("ec neurons 1e6", lambda f: ["ec", "--neurons", "1000000"], 2, "^neurons: .* of memory"),
    # nas
    ("nas out empty", lambda f: ["nas", "--out", ""], 2, "^out: expected a directory path"),
    ("nas population 1e12", lambda f: ["nas", "--population", "1000000000000"], 2, "^population: .* of memory"),
    ("nas cells 1e6", lambda f: ["nas", "--cells", "1000000"], 2, "^cells: .* of memory"),
    ("nas generations 1e9", lambda f: ["nas", "--generations", "1000000000"], 2, "^generations: .* of memory"),
    ("nas population 1", lambda f: ["nas", "--population", "1"], 2, "population"),
    ("nas cells 0", lambda f: ["nas", "--cells", "0"], 2, "cells"),
    ("nas elites", lambda f: ["nas", "--population", "4", "--elites", "4"], 2, "elites"),
    ("nas val 0", lambda f: ["nas", "--val", "0"], 2, "val"),
    ("nas train-lr 0", lambda f: ["nas", "--train-lr", "0"], 2, "train_lr"),
    ("nas max-neurons -1", lambda f: ["nas", "--max-neurons", "-1"], 2, "max_neurons"),
    ("nas out is a file", lambda f: ["nas", "--out", str(f.file), *TINY_NAS], 2, "^out: .*is a file"),
    # play
    ("play missing run dir", lambda f: ["play", str(f.root / "none")], 2, "^run_dir"),
    ("play no deployed.npz", lambda f: ["play", f.play_empty], 2, "deployed.npz"),
    ("play corrupt deployed.npz", lambda f: ["play", f.play_corrupt], 2, "deployed.npz"),
    ("play crafted npz header", lambda f: ["play", f.play_crafted_npz], 2, r"deployed.npz.*declares shape"),
    ("play crafted shape", lambda f: ["play", f.play_shape], 2, r"deployed.npz: shape.h"),
    ("play overflowing shape", lambda f: ["play", f.play_overflow], 2, r"deployed.npz: shape.h"),
    ("play bits cut short", lambda f: ["play", f.play_cut], 2, r"deployed.npz: bits.h"),
    ("play foreign npz", lambda f: ["play", f.play_foreign], 2, r"deployed.npz: format"),
    ("play deep config_json", lambda f: ["play", f.play_deepconf], 2, r"deployed.npz: config_json"),
    ("play observations mismatch env", lambda f: ["play", f.play_obs], 2, "5 observations"),
    ("play es NaN weights", lambda f: ["play", f.play_es_nan], 2, "w.h"),
    ("play episodes 0", lambda f: ["play", f.play_good, "--episodes", "0"], 2, "episodes"),
    ("play replay with max-steps", lambda f: ["play", f.play_good, "--replay", "--max-steps", "5"], 2,
     "max_steps"),
    # check, vectors, demo, bench
    ("check missing dir", lambda f: ["check", str(f.root / "none")], 2, "OUTPUT_DIR"),
    ("check no case matches", lambda f: ["check", str(f.root), "--only", "zzz*"], 2, "--only"),
    ("vectors missing dir", lambda f: ["vectors", "verify", "--dir", str(f.root / "none")], 2, "none"),
    ("demo seed -1", lambda f: ["demo", "--seed", "-1"], 2, "seed"),
    ("bench unknown key", lambda f: ["bench", "--only", "nosuchkey", "--no-startup"], 2, "only"),
]


def _run_cli(argv, capsys):
    status = cli(argv)
    err = capsys.readouterr().err
    return status, err


@pytest.mark.parametrize("argv, status, pattern", [r[1:] for r in CLI_ROWS], ids=[r[0] for r in CLI_ROWS])
def test_cli_bad_input_is_one_line(fx, capsys, argv, status, pattern):
    args = argv(fx)
    got, err = _run_cli(args, capsys)
    assert got == status, err
    assert_one_error_line(err, args[0], pattern)


USAGE_ROWS = [
    ("ec population not an int", ["ec", "--population", "x"], "--population"),
    ("train unknown option", ["train", "--nosuch"], "unrecognized arguments"),
    ("nas workers float", ["nas", "--workers", "1.5"], "--workers"),
    ("play without run dir", ["play"], "RUN_DIR"),
    ("ec method choice", ["ec", "--method", "ga"], "--method"),
    ("vectors unknown action", ["vectors", "frobnicate"], "ACTION"),
    ("ec fitness-shift text", ["ec", "--fitness-shift", "lots"], "fitness-shift"),
]


@pytest.mark.parametrize("argv, pattern", [r[1:] for r in USAGE_ROWS], ids=[r[0] for r in USAGE_ROWS])
def test_cli_usage_errors_exit_2(capsys, argv, pattern):
    with pytest.raises(SystemExit) as info:
        cli(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err
    last = err.splitlines()[-1]
    assert last.startswith(f"refsnn {argv[0]}: error: ") and re.search(pattern, last), err


# ------------------------------------------------------------------------------------------------
# failures (exit status 1): operating-system errors, memory, broken pools
# ------------------------------------------------------------------------------------------------



def test_cli_permission_denied_exits_1(tmp_path, capsys, monkeypatch):
    """bench --json into a directory it may not write: a failure (exit 1), errno's text, the file."""
    import refsnn.commands.bench as bench

    monkeypatch.setattr(bench, "run_benches", lambda only, say: {"x": 1.0})
    monkeypatch.setattr(refsnn.io, "tempfile", SimpleNamespace(mkstemp=raise_oserror(errno.EACCES)))
    assert cli(["bench", "--json", str(tmp_path / "b.json"), "--no-startup"]) == 1
    assert "Permission denied" in one_error_line(capsys.readouterr().err, "bench")


def test_cli_os_errors_of_the_output_file_exit_1(tmp_path, capsys, monkeypatch):
    import refsnn.commands.bench as bench

    monkeypatch.setattr(bench, "run_benches", lambda only, say: {"x": float("nan")})
    (tmp_path / "d").mkdir()
    assert cli(["bench", "--json", str(tmp_path / "d"), "--no-startup"]) == 2          # refused before running
    assert "json: " in one_error_line(capsys.readouterr().err, "bench")
    (tmp_path / "f").write_text("")
    assert cli(["bench", "--json", str(tmp_path / "f" / "b.json"), "--no-startup"]) == 2  # under a file
    one_error_line(capsys.readouterr().err, "bench")
    assert cli(["bench", "--json", str(tmp_path / "ok.json"), "--no-startup"]) == 0
    ok = json.loads((tmp_path / "ok.json").read_text())
    assert ok["x"] is None and ok["numba_threads"] >= 1    # strict JSON; the threads it was measured with

    def denied(path, obj):  # the write itself fails (e.g. the directory became read-only meanwhile)
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(bench, "atomic_write_json", denied)
    assert cli(["bench", "--json", str(tmp_path / "late.json"), "--no-startup"]) == 1
    assert "Permission denied" in one_error_line(capsys.readouterr().err, "bench")


@pytest.mark.parametrize("exc, status, text", [
    (MemoryError(), 1, "out of memory"),
    (RecursionError("maximum recursion depth exceeded"), 1, "nested too deeply"),
    (OSError(errno.EROFS, os.strerror(errno.EROFS), "/ro/x"), 1, "/ro/x: Read-only file system"),
    (PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/x"), 1, "/x: Permission denied"),
    (NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), "/f/x"), 1, "Not a directory"),
    (__import__("concurrent.futures.process").futures.process.BrokenProcessPool("a worker died"), 1,
     "a worker died"),
    (FileNotFoundError("run_dir: /x is not a directory"), 2, "run_dir"),
    (ValueError("line one\nline two"), 2, "line one line two"),
])
def test_cli_exit_status_by_kind_of_error(capsys, monkeypatch, exc, status, text):
    import refsnn.commands.play as play

    def boom(cfg):
        raise exc
    monkeypatch.setattr(play, "main", boom)
    assert cli(["play", "x"]) == status
    assert text in one_error_line(capsys.readouterr().err, "play")
    monkeypatch.setenv("REFSNN_DEBUG", "1")
    with pytest.raises(type(exc)):
        cli(["play", "x"])


def test_corpus_size():
    n = len(API_ROWS) + len(CLI_ROWS) + len(USAGE_ROWS)
    assert n >= 100, n


# ------------------------------------------------------------------------------------------------
# fuzzing of the parsers users feed files to: genotype JSON and refsnn check's output directories
# ------------------------------------------------------------------------------------------------

_json_values = hst.recursive(
    hst.none() | hst.booleans() | hst.integers(-5, 40) | hst.floats(allow_nan=True) | hst.text(max_size=6),
    lambda inner: hst.lists(inner, max_size=6) | hst.dictionaries(
        hst.sampled_from(["flat", "cells", "g1", "g2", "motif", "ops", "format", "x"]), inner, max_size=5),
    max_leaves=40)


@settings(max_examples=300, deadline=None)
@given(_json_values)
def test_genotype_parsing_fuzz(value):
    """Any JSON value (as text or parsed) is a valid genotype or a clean ValueError/TypeError naming it."""
    from refsnn.nas.genotype import Genotype, from_json, validate

    for arg in (value, json.dumps(value)):
        try:
            g = from_json(arg)
        except (ValueError, TypeError) as e:
            assert str(e).split(":")[0] in ("text", "genotype", "cells", "flat", "g1", "g2", "ops", "motif") \
                or "genotype" in str(e) or "text" in str(e), str(e)
        else:
            assert isinstance(g, Genotype) and validate(g.flat) == g.flat


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hst.sampled_from(["float32", "float64", "int64", "bool", "uint8"]),
       hst.lists(hst.integers(0, 5), max_size=3), hst.booleans(), hst.booleans())
def test_refsnn_check_fuzz(tmp_path_factory, dtype, shape, nan, corrupt):
    """Whatever a backend writes for a case (any dtype, shape, NaN, a corrupt file), refsnn check
    reports it as a failed row or a clean error naming the file: never another exception."""
    import numpy as np

    from refsnn.vectors.check import check
    from refsnn.vectors.format import default_dir, load_manifest

    case = load_manifest(default_dir())["cases"][0]
    d = tmp_path_factory.mktemp("outs")
    path = d / case["file"]
    if corrupt:
        path.write_bytes(b"PK\x03\x04 not really a zip")
    else:
        a = np.ones(shape, dtype=dtype)
        if nan and a.dtype.kind == "f" and a.size:
            a.flat[0] = np.nan
        np.savez(path, **{k: a for k in case["outputs"]})
    try:
        ok, rows = check(d, only=[case["name"]], out=open(os.devnull, "w"))
    except (ValueError, TypeError, FileNotFoundError) as e:
        assert case["file"] in str(e) or str(d) in str(e), str(e)
    else:
        assert not ok, rows
