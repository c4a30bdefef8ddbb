"""Fuzzing of the files refsnn reads: NIR graphs (structure and values) and vector manifests.

Random mutations of a valid file must give either a result (finite, of the stated shapes) or one
clean ``ValueError``/``TypeError`` naming the file -- never another exception type, never a hang.
"""
from __future__ import annotations

import copy
import itertools
import json
import math
import shutil
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from refsnn.commands.nir import NIRConfig
from refsnn.commands.nir import run as nir_run
from refsnn.io import atomic_savez
from refsnn.nir.graph import PARAMS
from refsnn.vectors.cases import all_cases
from refsnn.vectors.check import check as check_vectors
from refsnn.vectors.format import default_dir, load_manifest

pytest.importorskip("h5py")
from test_bad_files import _conv_desc, _ec_desc, write_h5  # noqa: E402

_COUNTER = itertools.count()
#: one example may take this long at most (a hang is a failure, not a slow test)
MAX_SECONDS = 10.0


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz_files")
    atomic_savez(d / "ec_in.npz", {"input": np.ones((3, 2, 3), np.float32),
                                   "v/neurons": np.full((2, 8), 0.5, np.float32)})
    atomic_savez(d / "conv_in.npz", {"input": np.ones((2, 2, 1, 6, 6), np.float32)})
    return d


# ------------------------------------------------------------------------------------------------
# NIR graphs
# ------------------------------------------------------------------------------------------------
_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=4)
def _full(shape, fill, dtype):
    with np.errstate(invalid="ignore"):
        return np.full(shape, fill).astype(dtype)


_arrays = st.builds(_full,
                    st.lists(st.integers(0, 4), max_size=4).map(tuple),
                    st.sampled_from([0.0, 1.0, -2.0, 0.5, 3.0, 1e-3, math.nan, math.inf, 1e30]),
                    st.sampled_from(["f8", "f4", "i8"]))
_values = st.one_of(
    st.none(),                                  # delete the key
    st.integers(-3, 2 ** 40), st.floats(allow_nan=True, allow_infinity=True), st.booleans(), _text, _arrays,
    st.sampled_from([0, -1, 1e-9, 1e300, "valid", "same", "euler", "exact", "hard", ">="]),
)
_keys = st.sampled_from(sorted({k for ks in PARAMS.values() for k in ks} | {"type"}))
_types = st.sampled_from(list(PARAMS) + ["IF", "NIRGraph", "Threshold", ""])


def _mutations(names: list[str]):
    node = st.sampled_from(names)
    return st.lists(st.one_of(
        st.tuples(st.just("param"), node, _keys, _values),
        st.tuples(st.just("type"), node, _types),
        st.tuples(st.just("meta"), st.sampled_from(["dt", "discretisation", "reset", "threshold"]), _values),
        st.tuples(st.just("drop_node"), node),
        st.tuples(st.just("add_edge"), node, st.one_of(node, _text)),
        st.tuples(st.just("drop_edge"), st.integers(0, 20)),
        st.tuples(st.just("edge_columns"), st.integers(0, 3)),
    ), min_size=1, max_size=3)


def _apply(desc: dict, mutations) -> dict:
    d = copy.deepcopy(desc)
    for m in mutations:
        if m[0] == "param":
            _, n, k, v = m
            if n in d["nodes"]:
                if v is None:
                    d["nodes"][n].pop(k, None)
                else:
                    d["nodes"][n][k] = v
        elif m[0] == "type" and m[1] in d["nodes"]:
            d["nodes"][m[1]]["type"] = m[2]
        elif m[0] == "meta":
            if m[2] is None:
                d["metadata"].pop(m[1], None)
            else:
                d["metadata"][m[1]] = m[2]
        elif m[0] == "drop_node":
            d["nodes"].pop(m[1], None)
        elif m[0] == "add_edge":
            d["edges"].append([m[1], m[2] or "x"])
        elif m[0] == "drop_edge" and d["edges"]:
            d["edges"].pop(m[1] % len(d["edges"]))
        elif m[0] == "edge_columns":
            d["edges"] = [(e + ["x"] * 3)[:m[1]] for e in d["edges"]]
    return d


def _run_mutated(root, base: str, mutations) -> None:
    desc = _apply(_ec_desc() if base == "ec" else _conv_desc(), mutations)
    src = root / f"g{next(_COUNTER)}.nir"
    try:
        write_h5(src, desc)
    except (TypeError, ValueError):
        assume(False)   # h5py cannot store this value (not a file refsnn could be given)
    target = root / f"{base}_in.npz"
    cfg = NIRConfig(action="run", source=str(src), target=str(target), output=str(root / "out.npz"))
    t0 = time.perf_counter()
    try:
        out = nir_run(cfg)
    except (ValueError, TypeError) as e:
        msg = str(e)
        assert "\n" not in msg and (msg.startswith(str(src)) or msg.startswith(str(target))), msg
    else:
        for k, v in out.items():
            if k.split("/")[0] in ("spikes", "v", "h", "i", "out"):
                assert v.shape[:2] == ((3, 2) if base == "ec" else (2, 2)), (k, v.shape)
                assert np.isfinite(v).all(), k
    assert time.perf_counter() - t0 < MAX_SECONDS


_SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                            HealthCheck.too_slow])


@_SETTINGS
@given(_mutations(list(_ec_desc()["nodes"])))
def test_mutated_recurrent_graph_runs_or_names_the_file(root, mutations):
    _run_mutated(root, "ec", mutations)


@_SETTINGS
@given(_mutations(list(_conv_desc()["nodes"])))
def test_mutated_conv_graph_runs_or_names_the_file(root, mutations):
    _run_mutated(root, "conv", mutations)


# ------------------------------------------------------------------------------------------------
# manifests
# ------------------------------------------------------------------------------------------------
_BIG = "<5000-digit integer>"    # replaced in the JSON text (json.dumps cannot write it)
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10) | st.sampled_from([10 ** 30, _BIG]) |
    st.floats(allow_nan=True, allow_infinity=True) | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["kind", "rtol", "atol", "dtype", "shape", "tolerance", "x"]), inner, max_size=3),
    max_leaves=8)
_CASE = "lif.preset.msenas.float32"


def _manifest_paths(entry: dict):
    """Paths into one case entry: (key,), ("outputs", out), ("outputs", out, "tolerance"[, field])."""
    paths = [(k,) for k in entry] + [("x",)]
    for out in entry["outputs"]:
        paths += [("outputs", out), ("outputs", out, "dtype"), ("outputs", out, "tolerance")]
        paths += [("outputs", out, "tolerance", k) for k in ("kind", "rtol", "atol", "x")]
    return paths


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    doc = load_manifest(default_dir())
    d = tmp_path_factory.mktemp("fuzz_manifest")
    entry = next(e for e in doc["cases"] if e["name"] == _CASE)
    (d / entry["file"]).symlink_to(default_dir() / entry["file"])
    return d, dict(doc, cases=[entry]), {c.name: c for c in all_cases()}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 1000), _json), min_size=1, max_size=3))
def test_mutated_manifest_loads_or_names_the_file(manifest, edits):
    d, doc, registered = manifest
    doc = copy.deepcopy(doc)
    entry = doc["cases"][0]
    for i, value in edits:
        paths = _manifest_paths(entry) if isinstance(entry.get("outputs"), dict) else [(k,) for k in entry]
        path = paths[i % len(paths)]
        target = entry
        for k in path[:-1]:
            target = target.get(k) if isinstance(target, dict) else None
        if isinstance(target, dict):       # (an earlier edit may have replaced the parent)
            target[path[-1]] = value
    p = d / "manifest.json"
    p.write_text(json.dumps(doc).replace(json.dumps(_BIG), "7" * 5000))
    try:
        got = load_manifest(d, registered=registered)
    except ValueError as e:
        assert str(e).startswith(str(p)) and "\n" not in str(e), str(e)
        return
    # accepted: every tolerance is the table's or stricter, and check runs with it
    out = d / "outputs"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    e = got["cases"][0]
    try:
        ok, rows = check_vectors(out, ref_dir=d, only=[e["name"]], allow_missing=True, out=open("/dev/null", "w"))
    except (ValueError, TypeError) as err:
        assert "--only" in str(err) or str(d) in str(err), str(err)
