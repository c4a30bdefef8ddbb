"""The bad-file corpus: what refsnn reads from files (NIR graphs, npz, JSON, vector manifests).

The conventions of ``tests/test_bad_inputs.py``:

* API rows: ``(id, call, exception type, regex)``; ``call(fx)`` gets the fixture :func:`fx` (files
  built on demand, once per module) and must raise that exception with a message matching the regex,
  which names the file (and the node, member, case or output);
* CLI rows: ``(id, argv, exit status, regex)``; ``refsnn.cli.main(argv)`` must return the status and
  write exactly one stderr line ``refsnn CMD: error: ...`` matching the regex, without a traceback.

Memory bombs (small files declaring gigabytes) run in a child process whose peak resident memory
(its own ``ru_maxrss``) must stay under :data:`PEAK_MB`: nothing a file declares is allocated
before the read budget of :mod:`refsnn.io` is checked, and members nobody reads are never
decompressed.
"""
from __future__ import annotations

import copy
import hashlib
import io
import json
import math
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from corpus import assert_one_error_line

from refsnn.cli import main as cli
from refsnn.io import BUDGET_ENV, MAX_FILE_BYTES, ReadBudget, atomic_savez, load_npz, parse_json, read_json
from refsnn.nir.export import ec_to_nir, fold_batchnorm
from refsnn.nir.simulate import simulate
from refsnn.snn.archs import build_arch
from refsnn.vectors.check import check as check_vectors
from refsnn.vectors.format import default_dir, load_manifest, npz_bytes
from refsnn.vectors.runner import verify
from refsnn.vectors.tolerances import FLOAT_TOL, check_tolerance

h5py = pytest.importorskip("h5py")   # installed with the nir extra

#: peak resident memory (MB) of a refsnn command reading a memory bomb (the command alone is ~180 MB)
PEAK_MB = 200
GiB = 1 << 30


# ------------------------------------------------------------------------------------------------
# file builders
# ------------------------------------------------------------------------------------------------

def write_h5(path: Path, desc: dict) -> str:
    """A NIR file in ``nir.write``'s layout from a dict form, without NIR's own checks (so that any
    value can be written): groups for dicts, variable-length strings for text."""
    def rec(g, d):
        for k, v in d.items():
            if isinstance(v, dict):
                rec(g.create_group(str(k)), v)
            elif isinstance(v, str):
                g.create_dataset(k, data=v, dtype=h5py.string_dtype())
            elif k == "edges":
                g.create_dataset(k, data=np.array(v, dtype=h5py.string_dtype()))
            else:
                g.create_dataset(k, data=v)

    with h5py.File(path, "w") as f:
        f.create_dataset("version", data="1.0", dtype=h5py.string_dtype())
        rec(f.create_group("node"), desc)
    return str(path)


def _h5(path: Path, **datasets) -> str:
    with h5py.File(path, "w") as f:
        for k, v in datasets.items():
            f.create_dataset(k, data=v)
    return str(path)


def npz_with_zero_members(path: Path, arrays: dict) -> str:
    """An ``.npz`` whose members are ``arrays[name]``: an ndarray, or ``(shape, dtype)`` for zeros that
    compress ~1000:1 (one deflate block after a full flush, repeated; valid CRC), so a 2 MB file can
    hold two 1 GiB members."""
    block = 1 << 22
    central = []
    with open(path, "wb") as out:
        for name, a in arrays.items():
            fname = (name + ".npy").encode()
            c = zlib.compressobj(9, zlib.DEFLATED, -15)
            buf = io.BytesIO()
            if isinstance(a, np.ndarray):
                np.lib.format.write_array(buf, a, version=(1, 0), allow_pickle=False)
                raw = buf.getvalue()
                parts, crc, usize = [c.compress(raw) + c.flush()], zlib.crc32(raw), len(raw)
            else:
                shape, dtype = a
                np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                                           "fortran_order": False, "shape": tuple(shape)})
                n = math.prod(shape) * np.dtype(dtype).itemsize
                reps, zeros = n // block, bytes(block)
                first = c.compress(buf.getvalue()) + c.flush(zlib.Z_FULL_FLUSH)
                zb = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
                parts = [first] + [zb] * reps + [c.flush()]
                crc = zlib.crc32(buf.getvalue())
                for _ in range(reps):
                    crc = zlib.crc32(zeros, crc)
                usize = len(buf.getvalue()) + n
            csize, offset = sum(len(p) for p in parts), out.tell()
            out.write(struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 8, 0, 0x21, crc, csize, usize, len(fname), 0))
            out.write(fname)
            for p in parts:
                out.write(p)
            central.append(struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 8, 0, 0x21, crc, csize, usize,
                                       len(fname), 0, 0, 0, 0, 0, offset) + fname)
        cd = out.tell()
        for e in central:
            out.write(e)
        out.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(central), len(central), out.tell() - cd, cd, 0))
    return str(path)


def _ec_desc(N=8, d=3) -> dict:
    rng = np.random.default_rng(0)
    params = {"in": (rng.random((2 * d, N)) < 0.5) * 1.0, "h": (rng.random((N, N)) < 0.5) * 1.0,
              "out": (rng.random((N, 2)) < 0.5) * 1.0}
    desc = ec_to_nir({"method": "ec", "neurons": N, "norm_mean": np.zeros(d), "norm_std": np.ones(d)}, params)
    desc["edges"] = [list(e) for e in desc["edges"]]
    return desc


def _conv_desc() -> dict:
    rng = np.random.default_rng(1)
    shp = (2, 6, 6)
    lif = {"type": "LIF", "tau": np.full(shp, 2e-3), "r": np.ones(shp), "v_leak": np.zeros(shp),
           "v_threshold": np.ones(shp), "v_reset": np.zeros(shp)}
    nodes = {
        "input": {"type": "Input", "shape": np.array([1, 6, 6])},
        "conv": {"type": "Conv2d", "weight": rng.normal(size=(2, 1, 3, 3)), "bias": np.zeros(2),
                 "stride": np.array([1, 1]), "padding": np.array([1, 1]), "dilation": np.array([1, 1]), "groups": 1},
        "lif": lif,
        "pool": {"type": "AvgPool2d", "kernel_size": np.array([2, 2]), "stride": np.array([2, 2]),
                 "padding": np.array([0, 0])},
        "flat": {"type": "Flatten", "start_dim": 0, "end_dim": -1},
        "fc": {"type": "Affine", "weight": rng.normal(size=(3, 18)), "bias": np.zeros(3)},
        "output": {"type": "Output", "shape": np.array([3])},
    }
    edges = [["input", "conv"], ["conv", "lif"], ["lif", "pool"], ["pool", "flat"], ["flat", "fc"], ["fc", "output"]]
    return {"type": "NIRGraph", "nodes": nodes, "edges": edges, "metadata": {"dt": 1e-3}}


def _set(path: str, value):
    """A mutation of a dict form: set ``a/b/c`` to ``value`` (``None``: delete it)."""
    def mutate(desc):
        *head, last = path.split("/")
        d = desc
        for k in head:
            d = d[k]
        if value is None:
            del d[last]
        else:
            d[last] = value
    return mutate


@pytest.fixture(scope="module")
def fx(tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("bad_files")
    f = SimpleNamespace(root=root, out=str(root / "out.npz"))

    def graph(name, base="ec", *mutations):
        desc = copy.deepcopy(_ec_desc() if base == "ec" else _conv_desc())
        for m in mutations:
            m(desc)
        return write_h5(root / f"{name}.nir", desc)

    def inputs(name, **arrays):
        return str(atomic_savez(root / f"{name}.npz", arrays))

    f.graph, f.inputs = graph, inputs
    f.ec_in = inputs("ec_in", input=np.ones((4, 2, 3), np.float32))
    f.conv_in = inputs("conv_in", input=np.ones((3, 2, 1, 6, 6), np.float32))
    f.not_h5 = root / "text.nir"
    f.not_h5.write_text("not an HDF5 file")
    # vector directories: a copy of the committed manifest, tampered with per row
    ref = default_dir()
    f.manifest = json.loads((ref / "manifest.json").read_text())

    def vectors(name, edit=None, corrupt: str | None = None):
        d = root / name
        if d.exists():
            return str(d)
        d.mkdir()
        doc = copy.deepcopy(f.manifest)
        for e in doc["cases"]:
            shutil.copyfile(ref / e["file"], d / e["file"]) if e["name"] == corrupt else \
                (d / e["file"]).symlink_to(ref / e["file"])
        if corrupt is not None:   # wrong values under a looser tolerance, the sha256 updated to match
            e = next(e for e in doc["cases"] if e["name"] == corrupt)
            arrays = load_npz(d / e["file"])
            arrays = {k: (v + 0.5 if k.startswith("out.") and v.dtype.kind == "f" else v) for k, v in arrays.items()}
            data = npz_bytes(arrays)
            (d / e["file"]).unlink()
            (d / e["file"]).write_bytes(data)
            e["sha256"] = hashlib.sha256(data).hexdigest()
        edit(doc)
        (d / "manifest.json").write_text(json.dumps(doc, indent=1))
        return str(d)

    f.vectors = vectors
    f.empty = root / "empty_outputs"
    f.empty.mkdir()
    return f


LIF_CASE = "lif.preset.msenas.float32"


def _case(name):
    def get(doc):
        return next(e for e in doc["cases"] if e["name"] == name)
    return get


def _tol(name, out, tol):
    def edit(doc):
        _case(name)(doc)["outputs"][out]["tolerance"] = tol
    return edit


def _drop(name, key, out=None):
    def edit(doc):
        e = _case(name)(doc)
        del (e["outputs"][out]["tolerance"] if out else e)[key]
    return edit


# ------------------------------------------------------------------------------------------------
# CLI rows: (id, argv(fx), exit status, regex of the one stderr line)
# ------------------------------------------------------------------------------------------------

def _run(graph, inp="ec"):
    return lambda f: ["nir", "run", graph(f), f.ec_in if inp == "ec" else f.conv_in, f.out]


def _ec(name, *m):
    return _run(lambda f: f.graph(name, "ec", *m))


def _conv(name, *m):
    return _run(lambda f: f.graph(name, "conv", *m), "conv")


CLI_ROWS = [
    # -- nir run: parameters that crashed the simulation or were silently accepted
    ("nir LI tau 0", _ec("tau0", _set("nodes/syn/tau", np.zeros(8))), 2,
     r"tau0\.nir: node 'syn' \(LI\): .*tau must be > 0"),
    ("nir LI tau negative", _ec("tauneg", _set("nodes/rate/tau", np.full(8, -1.0))), 2,
     r"tauneg\.nir: node 'rate' \(LI\): .*tau must be > 0"),
    ("nir conv stride 0", _conv("stride0", _set("nodes/conv/stride", np.array([0, 0]))), 2,
     r"stride0\.nir: node 'conv' \(Conv2d\): stride=0 outside"),
    ("nir pool kernel 0", _conv("kernel0", _set("nodes/pool/kernel_size", np.array([0, 0]))), 2,
     r"kernel0\.nir: node 'pool' \(AvgPool2d\): kernel_size=0 outside"),
    ("nir conv padding huge", _conv("pad_huge", _set("nodes/conv/padding", np.array([10**6, 10**6]))), 2,
     r"pad_huge\.nir: node 'conv' \(Conv2d\): padding=1000000 outside"),
    ("nir conv stride inf", _conv("stride_inf", _set("nodes/conv/stride", np.array([np.inf, np.inf]))), 2,
     r"stride_inf\.nir: node 'conv' \(Conv2d\): stride"),
    ("nir linear weight text", _ec("w_text", _set("nodes/w_rec/weight", "abc")), 2,
     r"w_text\.nir: node 'w_rec' \(Linear\): parameter weight must be numeric"),
    ("nir linear weight nan", _ec("w_nan", _set("nodes/w_out/weight", np.full((2, 8), np.nan))), 2,
     r"w_nan\.nir: node 'w_out' \(Linear\): parameter weight holds non-finite"),
    ("nir linear weight of wrong shape", _ec("w_shape", _set("nodes/w_out/weight", np.ones((2, 5)))), 2,
     r"w_shape\.nir: node 'w_out' \(Linear\): weight of shape \(2, 5\) takes 5 input features, got input of "
     r"shape \(8,\)"),
    ("nir scale inf", _ec("scale_inf", _set("nodes/g_out/scale", np.full(2, np.inf))), 2,
     r"scale_inf\.nir: node 'g_out' \(Scale\): parameter scale holds non-finite"),
    ("nir scale overflows float32", _ec("scale_big", _set("nodes/g_out/scale", np.full(2, 1e300))), 2,
     r"scale_big\.nir: node 'g_out' \(Scale\): parameter scale overflows float32"),
    ("nir output overflows", _ec("overflow", _set("nodes/split/weight", np.full((6, 3), 1e38))), 2,
     r"overflow\.nir: node '\w+' \(\w+\): its output is not finite \(an overflow of float32"),
    ("nir three-column edges", _ec("edges3", lambda d: d.update(edges=[e + ["x"] for e in d["edges"]])), 2,
     r"edges3\.nir: graph: edge 0 must be a \(source, target\) pair of node names, got 3 values"),
    ("nir edge to an unknown node", _ec("edge_unknown", lambda d: d["edges"].append(["rate", "nope"])), 2,
     r"edge_unknown\.nir: graph: edge \('rate', 'nope'\) names an unknown node 'nope'"),
    ("nir dt text", _ec("dt_text", _set("metadata/dt", "abc")), 2,
     r"dt_text\.nir: dt: the graph's metadata dt must be a positive number, got 'abc'"),
    ("nir dt negative", _ec("dt_neg", _set("metadata/dt", -0.5)), 2, r"dt_neg\.nir: dt: expected a positive"),
    ("nir reset unknown", _ec("reset_bad", _set("metadata/reset", "soft")), 2,
     r"reset_bad\.nir: reset: expected one of"),
    ("nir no type", _ec("no_type", _set("nodes/syn/type", None)), 2, r"no_type\.nir: node 'syn': no 'type'"),
    ("nir type not text", _ec("type_num", _set("nodes/syn/type", 3)), 2, r"type_num\.nir: .*syn.*type.*text"),
    ("nir empty node group", lambda f: ["nir", "run", write_h5(f.root / "empty_node.nir", {}), f.ec_in, f.out], 2,
     r"empty_node\.nir: node/type: expected 'NIRGraph', got None"),
    ("nir no node group", lambda f: ["nir", "run", _h5(f.root / "no_node.nir", version="1.0"), f.ec_in, f.out], 2,
     r"no_node\.nir: /: expected a group 'node'"),
    ("nir node a dataset", lambda f: ["nir", "run", _h5(f.root / "node_ds.nir", node=3), f.ec_in, f.out], 2,
     r"node_ds\.nir: /: expected a group 'node', got a dataset"),
    ("nir not HDF5", lambda f: ["nir", "run", str(f.not_h5), f.ec_in, f.out], 2,
     r"text\.nir: not a readable NIR graph \(HDF5\) file"),
    ("nir LIF tau missing", _ec("tau_missing", _set("nodes/neurons/tau", None)), 2,
     r"tau_missing\.nir: node 'neurons' \(LIF\): parameter tau missing"),
    ("nir neuron parameter of another shape", _ec("shape_mix", _set("nodes/rate/tau", np.full(5, 1.0))), 2,
     r"shape_mix\.nir: node 'rate' \(LI\): parameter tau has shape \(5,\), its input \(8,\)"),
    # -- nir run: the input file
    ("nir T = 0 recurrent", lambda f: ["nir", "run", f.graph("ec_ok"), f.inputs(
        "t0", input=np.ones((0, 2, 3), np.float32)), f.out], 2,
     r"t0\.npz: inputs\['input'\]: expected at least one time step"),
    ("nir initial v nan", lambda f: ["nir", "run", f.graph("ec_ok"), f.inputs(
        "v_nan", input=np.ones((4, 2, 3), np.float32), **{"v/neurons": np.full((2, 8), np.nan, np.float32)}), f.out],
     2, r"v_nan\.npz: initial_state\['v/neurons'\]: contains NaN"),
    ("nir initial v of wrong shape", lambda f: ["nir", "run", f.graph("ec_ok"), f.inputs(
        "v_shape", input=np.ones((4, 2, 3), np.float32), **{"v/neurons": np.ones(9, np.float32)}), f.out],
     2, r"v_shape\.npz: initial_state\['v/neurons'\]: expected shape \(2, 8\), got \(9,\)"),
    ("nir initial v of an unknown node", lambda f: ["nir", "run", f.graph("ec_ok"), f.inputs(
        "v_unknown", input=np.ones((4, 2, 3), np.float32), **{"v/nope": np.ones((2, 8), np.float32)}), f.out],
     2, r"v_unknown\.npz: initial_state\['v/nope'\]: expected v/<node> of a neuron node"),
    ("nir initial i of a LIF", lambda f: ["nir", "run", f.graph("ec_ok"), f.inputs(
        "i_lif", input=np.ones((4, 2, 3), np.float32), **{"i/neurons": np.ones((2, 8), np.float32)}), f.out],
     2, r"i_lif\.npz: initial_state\['i/neurons'\]"),
    ("nir unknown input array", lambda f: ["nir", "run", f.graph("ec_ok"), f.inputs(
        "extra_in", input=np.ones((4, 2, 3), np.float32), other=np.ones((4, 2, 3), np.float32)), f.out],
     2, r"extra_in\.npz: inputs: \['other'\] name no Input node"),
    ("nir unknown array with a slash", lambda f: ["nir", "run", f.graph("ec_ok"), f.inputs(
        "slash_in", input=np.ones((4, 2, 3), np.float32), **{"x/neurons": np.ones((2, 8), np.float32)}), f.out],
     2, r"slash_in\.npz: arrays \['x/neurons'\] are neither inputs"),
    # -- check --ref / vectors verify: manifests that must not pass
    ("check atol Infinity", lambda f: ["check", str(f.empty), "--ref", f.vectors(
        "atol_inf", _tol(LIF_CASE, "out.h", {"kind": "allclose", "rtol": 1e-4, "atol": math.inf}), LIF_CASE)], 2,
     r"manifest\.json: Infinity is not standard JSON"),
    ("check atol 1e30", lambda f: ["check", str(f.empty), "--ref", f.vectors(
        "atol_big", _tol(LIF_CASE, "out.h", {"kind": "allclose", "rtol": 1e-4, "atol": 1e30}), LIF_CASE)], 2,
     rf"manifest\.json: case '{LIF_CASE}': output 'out.h': tolerance .* is looser than the table's"),
    ("check atol text", lambda f: ["check", str(f.empty), "--ref", f.vectors(
        "atol_text", _tol(LIF_CASE, "out.h", {"kind": "allclose", "rtol": 1e-4, "atol": "1e9"}))], 2,
     rf"manifest\.json: case '{LIF_CASE}': output 'out.h': tolerance atol must be a JSON number, got '1e9'"),
    ("check spikes allclose", lambda f: ["check", str(f.empty), "--ref", f.vectors(
        "spikes_allclose", _tol(LIF_CASE, "out.s", dict(FLOAT_TOL["float32"])), LIF_CASE)], 2,
     rf"case '{LIF_CASE}': output 'out.s': tolerance .*allclose.* is looser than the table's {{\"kind\": \"exact\"}}"),
    ("check rtol negative", lambda f: ["check", str(f.empty), "--ref", f.vectors(
        "rtol_neg", _tol(LIF_CASE, "out.h", {"kind": "allclose", "rtol": -1.0, "atol": 0.0}))], 2,
     r"output 'out.h': tolerance rtol must be finite and >= 0"),
    ("check unknown kind", lambda f: ["check", str(f.empty), "--ref", f.vectors(
        "kind_bad", _tol(LIF_CASE, "out.h", {"kind": "close"}))], 2, r"output 'out.h': unknown tolerance kind 'close'"),
    ("check manifest without outputs", lambda f: ["check", str(f.empty), "--ref", f.vectors(
        "no_outputs", _drop(LIF_CASE, "outputs"))], 2, rf"case '{LIF_CASE}': 'outputs' missing"),
    ("check manifest without file", lambda f: ["check", str(f.empty), "--ref", f.vectors(
        "no_file", _drop(LIF_CASE, "file"))], 2, rf"case '{LIF_CASE}': 'file' missing"),
    ("check manifest without sha256", lambda f: ["check", str(f.empty), "--ref", f.vectors(
        "no_sha", _drop(LIF_CASE, "sha256"))], 2, rf"case '{LIF_CASE}': 'sha256' missing"),
    ("check manifest without atol", lambda f: ["check", str(f.empty), "--ref", f.vectors(
        "no_atol", _drop(LIF_CASE, "atol", "out.h"))], 2,
     rf"case '{LIF_CASE}': output 'out.h': a tolerance of kind 'allclose' has the keys"),
    ("check manifest file outside the directory", lambda f: ["check", str(f.empty), "--ref", f.vectors(
        "file_up", lambda d: _case(LIF_CASE)(d).update(file="../x.npz"))], 2, r"'file' must be a plain file name"),
    ("verify atol 1e30", lambda f: ["vectors", "verify", "--dir", f.vectors("atol_big")], 2,
     rf"manifest\.json: case '{LIF_CASE}': output 'out.h': tolerance .* is looser"),
    ("verify spikes allclose", lambda f: ["vectors", "verify", "--dir", f.vectors("spikes_allclose")], 2,
     rf"case '{LIF_CASE}': output 'out.s': tolerance"),
    ("verify atol Infinity", lambda f: ["vectors", "verify", "--dir", f.vectors("atol_inf")], 2,
     r"Infinity is not standard JSON"),
    ("verify manifest without outputs", lambda f: ["vectors", "verify", "--dir", f.vectors("no_outputs")], 2,
     r"'outputs' missing"),
    ("verify manifest without atol", lambda f: ["vectors", "verify", "--dir", f.vectors("no_atol")], 2,
     r"output 'out.h': a tolerance of kind 'allclose' has the keys"),
    ("verify only matches nothing", lambda f: ["vectors", "verify", "--only", "zzz*"], 2,
     r"^--only: no reference case matches \['zzz\*'\]"),
    ("check only matches nothing", lambda f: ["check", str(f.empty), "--only", "zzz*"], 2,
     r"^--only: no reference case matches \['zzz\*'\]"),
]


@pytest.mark.parametrize("argv, status, pattern", [r[1:] for r in CLI_ROWS], ids=[r[0] for r in CLI_ROWS])
def test_cli_bad_file_is_one_line(fx, capsys, argv, status, pattern):
    args = argv(fx)
    got = cli(args)
    err = capsys.readouterr().err
    assert got == status, err
    assert_one_error_line(err, args[0], pattern)


# ------------------------------------------------------------------------------------------------
# API rows: (id, call(fx), exception, regex naming the file and the member)
# ------------------------------------------------------------------------------------------------

def _small_budget(f, monkeypatch_value="1000"):
    p = atomic_savez(f.root / "two_kb.npz", {"a": np.zeros(250), "b": np.zeros(2)})
    return p


API_ROWS = [
    ("load_npz over the budget", lambda f: load_npz(_small_budget(f), budget=ReadBudget("two_kb.npz", 1000)),
     ValueError, r"two_kb\.npz: a\.npy \(shape \(250,\), float64\) declares 2000 bytes, over the budget of 1000"),
    ("load_npz budget counts every member", lambda f: load_npz(_small_budget(f), budget=ReadBudget("two_kb.npz", 2010)),
     ValueError, r"b\.npy .* declares 16 bytes \(after 2000 bytes of other members\)"),
    ("load_npz required is loaded and checked", lambda f: load_npz(_small_budget(f), keys=["b"], required=("a",),
                                                                   budget=ReadBudget("two_kb.npz", 1000)),
     ValueError, r"a\.npy"),
    ("load_npz member not npy", lambda f: load_npz(_zip_with(f, "raw.npz", {"x.txt": b"hello"})), ValueError,
     r"raw\.npz: member 'x\.txt' is not an \.npy array"),
    ("read_json over the budget", lambda f: read_json(_text(f, "big.json", "[" + "0," * 100 + "0]"),
                                                      budget=ReadBudget("big.json", 1000)),
     ValueError, r"big\.json: JSON text of 203 bytes declares 6496 bytes, over the budget of 1000"),
    ("parse_json over the budget", lambda f: parse_json("[1, 2, 3]", name="arg", budget=ReadBudget("arg", 10)),
     ValueError, r"^arg: JSON text"),
    ("parse_json Infinity when strict", lambda f: parse_json('{"a": Infinity}', name="m.json", allow_nan=False),
     ValueError, r"^m\.json: Infinity is not standard JSON"),
    ("read_json deep names the file", lambda f: read_json(_text(f, "deep.json", "[" * 5000 + "]" * 5000)),
     ValueError, r"deep\.json: JSON nested 5000 levels deep"),
    ("read_json 5000-digit integer", lambda f: read_json(_text(f, "digits.json", "1" * 5000)), ValueError,
     r"digits\.json: not valid JSON: .*digits"),
    ("simulate string dt", lambda f: simulate(_ec_desc(), {"input": np.ones((2, 1, 3), np.float32)}, dt="abc"),
     ValueError, r"^dt: expected a positive time step"),
    ("simulate bool dt", lambda f: simulate(_ec_desc(), {"input": np.ones((2, 1, 3), np.float32)}, dt=True),
     ValueError, r"^dt: expected a positive time step"),
    ("simulate initial state not a dict", lambda f: simulate(_ec_desc(), {"input": np.ones((2, 1, 3), np.float32)},
                                                           initial_state=[1]), TypeError, r"^initial_state"),
    ("simulate edges not pairs", lambda f: simulate(dict(_ec_desc(), edges="ab"), {"input": np.ones((2, 1, 3))}),
     ValueError, r"^graph: edges must be a list"),
    ("simulate too many nodes", lambda f: simulate(dict(_ec_desc(), nodes={f"n{i}": {"type": "Output"}
                                                                         for i in range(10_001)}), {}),
     ValueError, r"^graph: 10001 nodes, more than the 10000"),
    ("load_manifest nested too deeply", lambda f: load_manifest(_manifest_dir(f, "deep", "[" * 10_000 + "]" * 10_000)),
     ValueError, r"deep/manifest\.json: JSON nested 10000 levels deep"),
    ("load_npz member of 1 GiB in a 1 MB file", lambda f: load_npz(npz_with_zero_members(
        f.root / "gib.npz", {"x": ((1 << 28,), "f4")})), ValueError,
     r"gib\.npz: x\.npy \(shape \(268435456,\), float32\) declares 1073741824 bytes, over the budget"),
    ("check_tolerance bool atol", lambda f: check_tolerance({"kind": "allclose", "rtol": 0, "atol": True},
                                                            FLOAT_TOL["float32"], "m: case 'c': output 'out.x'"),
     ValueError, r"^m: case 'c': output 'out.x': tolerance atol must be a JSON number, got True"),
    ("check_tolerance json for floats", lambda f: check_tolerance({"kind": "json"}, FLOAT_TOL["float64"], "w"),
     ValueError, r"^w: tolerance .* is looser"),
    ("load_manifest not an object", lambda f: load_manifest(_manifest_dir(f, "list", "[]")), ValueError,
     r"list/manifest\.json: expected format"),
    ("load_manifest duplicate case", lambda f: load_manifest(_manifest_dir(f, "dup", json.dumps(
        dict(f.manifest, cases=f.manifest["cases"][:1] * 2)))), ValueError,
     r"dup/manifest\.json: case .* listed twice"),
    ("load_manifest cases not a list", lambda f: load_manifest(_manifest_dir(f, "cases_obj", json.dumps(
        dict(f.manifest, cases={})))), ValueError, r"cases_obj/manifest\.json: 'cases' must be a list"),
    ("load_manifest entry name a list", lambda f: load_manifest(_manifest_dir(f, "name_list", json.dumps(
        dict(f.manifest, cases=[dict(f.manifest["cases"][0], name=[1])])))), ValueError,
     r"name_list/manifest\.json: cases\[0\]: 'name' missing or not a str"),
    ("load_manifest bad dtype", lambda f: load_manifest(_manifest_dir(f, "dtype_bad", json.dumps(
        dict(f.manifest, cases=[_with_output(f.manifest["cases"][0], dtype="complex-ish")])))), ValueError,
     r"dtype_bad/manifest\.json: case .*: output .*: 'dtype' missing or not a NumPy dtype"),
    ("export BN with negative running variance", lambda f: _export_bad_bn(), ValueError,
     r"node '.*' \(BatchNorm2d\): running_var must be finite with running_var \+ eps > 0"),
]


def _zip_with(f, name, members: dict) -> Path:
    import zipfile

    p = f.root / name
    with zipfile.ZipFile(p, "w") as z:
        for k, v in members.items():
            z.writestr(k, v)
    return p


def _text(f, name, text) -> Path:
    p = f.root / name
    p.write_text(text)
    return p


def _manifest_dir(f, name, text) -> Path:
    d = f.root / f"manifest_{name}" / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "manifest.json").write_text(text)
    return d


def _with_output(entry, **spec):
    e = copy.deepcopy(entry)
    k = next(iter(e["outputs"]))
    e["outputs"][k].update(spec)
    return e


def _export_bad_bn():
    net = build_arch("c4-p", input_shape=(1, 8, 8), num_classes=3, timesteps=2, rng=np.random.default_rng(0))
    bn = next(n.layer for n in net.nodes.values() if "running_var" in n.layer.buffers)
    bn.buffers["running_var"][0] = -1.0
    return fold_batchnorm(net.eval())


@pytest.mark.parametrize("call, exc, pattern", [r[1:] for r in API_ROWS], ids=[r[0] for r in API_ROWS])
def test_api_rejects_bad_file(fx, call, exc, pattern):
    with pytest.raises(exc) as info:
        call(fx)
    assert re.search(pattern, str(info.value)), f"{type(info.value).__name__}: {info.value}"
    assert "\n" not in str(info.value)


def test_corpus_size():
    assert len(CLI_ROWS) + len(API_ROWS) >= 60, len(CLI_ROWS) + len(API_ROWS)


# ------------------------------------------------------------------------------------------------
# behaviour beside the errors
# ------------------------------------------------------------------------------------------------

def test_load_npz_reads_only_the_members_asked_for(fx):
    """A member whose header declares 4 TB is never opened when it is not asked for; a pattern selects."""
    import zipfile

    p = fx.root / "lazy.npz"
    hdr = io.BytesIO()
    np.save(hdr, np.zeros(4, np.uint8))
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("in.huge.npy", hdr.getvalue().replace(b"(4,)", b"(4000000000000,)"))
        z.writestr("out.a.npy", _npy(np.arange(3)))
        z.writestr("out.b.npy", _npy(np.ones(2)))
    got = load_npz(p, keys=["out.*"])
    assert sorted(got) == ["out.a", "out.b"] and got["out.a"].tolist() == [0, 1, 2]
    assert sorted(load_npz(p, keys=["out.b"])) == ["out.b"]
    with pytest.raises(ValueError, match=r"lazy\.npz: in\.huge\.npy: the header declares shape \(4000000000000,\)"):
        load_npz(p)


def _npy(a) -> bytes:
    b = io.BytesIO()
    np.save(b, a)
    return b.getvalue()


def test_budget_from_the_environment(fx, monkeypatch):
    p = atomic_savez(fx.root / "env.npz", {"a": np.zeros(300)})
    assert load_npz(p)["a"].size == 300 and MAX_FILE_BYTES == 128 << 20
    monkeypatch.setenv(BUDGET_ENV, "1000")
    with pytest.raises(ValueError, match=rf"env\.npz: a\.npy .* declares 2400 bytes, over the budget of 1000 .*"
                                         rf"{BUDGET_ENV}"):
        load_npz(p)
    monkeypatch.setenv(BUDGET_ENV, "lots")
    with pytest.raises(ValueError, match=rf"^{BUDGET_ENV}: expected a positive number of bytes, got 'lots'"):
        load_npz(p)


def test_check_names_the_file_of_an_unreadable_json_output(fx):
    """A 5000-digit integer or nesting 10^5 deep in a JSON output is a FAIL row naming the file, not an abort."""
    man = load_manifest(default_dir())
    case = next(e for e in man["cases"] if e["outputs"] and next(iter(e["outputs"].values()))["tolerance"]["kind"]
                == "json")
    key = next(iter(case["outputs"]))
    for label, text in (("digits", '{"a": ' + "1" * 5000 + "}"), ("deep", "[" * 100000 + "]" * 100000)):
        d = fx.root / f"json_{label}"
        d.mkdir()
        np.savez(d / case["file"], **{key: np.frombuffer(text.encode(), np.uint8)})
        out = io.StringIO()
        ok, rows = check_vectors(d, only=[case["name"]], out=out)
        assert not ok
        msg = next(r.message for r in rows if r.failed)
        assert str(d / case["file"]) in msg, msg


def test_a_tampered_manifest_with_corrupt_values_fails_verify_and_check(fx, capsys):
    """The full tampering: values corrupted, the sha256 updated and the tolerance loosened to let them pass."""
    d = fx.vectors("tampered_1e30", _tol(LIF_CASE, "out.h", {"kind": "allclose", "rtol": 1.0, "atol": 1e30}), LIF_CASE)
    assert cli(["vectors", "verify", "--dir", d, "--only", LIF_CASE]) == 2
    assert cli(["check", d, "--ref", d, "--only", LIF_CASE]) == 2
    err = capsys.readouterr().err
    assert err.count("is looser than the table's") == 2, err
    # the untouched tolerance table still catches the corrupt values
    d2 = fx.vectors("corrupt_only", lambda doc: None, LIF_CASE)
    assert cli(["vectors", "verify", "--dir", d2, "--only", LIF_CASE]) == 1
    assert "elements outside rtol" in capsys.readouterr().out


def test_stricter_manifest_tolerances_are_accepted(fx):
    d = fx.vectors("stricter", _tol(LIF_CASE, "out.h", {"kind": "allclose", "rtol": 1e-5, "atol": 0}))
    ok, rows = verify(d, only=[LIF_CASE], out=io.StringIO())
    assert {r.case for r in rows} == {LIF_CASE}
    d = fx.vectors("exact_h", _tol(LIF_CASE, "out.h", {"kind": "exact"}))
    assert load_manifest(d)["cases"]


def test_export_refuses_non_finite_parameters():
    with pytest.raises(ValueError, match=r"node 'w_rec' \(Linear\): parameter weight holds non-finite"):
        ec_to_nir({"method": "ec", "neurons": 4, "norm_mean": np.zeros(2), "norm_std": np.ones(2)},
                  {"in": np.ones((4, 4)), "h": np.full((4, 4), np.nan), "out": np.ones((4, 1))})


# ------------------------------------------------------------------------------------------------
# memory bombs: peak memory of the command in a child process
# ------------------------------------------------------------------------------------------------

# the child's own peak: VmHWM of its address space (ru_maxrss would carry over the parent's peak, since
# Linux keeps the high-water mark of the memory map an exec replaces, here pytest's own)
_DRIVER = ("import re, resource, sys\n"
           "from refsnn.cli import main\n"
           "rc = main(sys.argv[1:])\n"
           "try:\n"
           "    kb = int(re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1))\n"
           "except OSError:\n"
           "    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
           "print('PEAK_KB', kb, file=sys.stderr)\n"
           "sys.exit(rc)\n")


def _peak(argv) -> tuple[int, float, str]:
    """``(exit status, peak resident MB, stderr)`` of ``refsnn argv`` in a child process."""
    p = subprocess.run([sys.executable, "-c", _DRIVER, *argv], capture_output=True, text=True, timeout=120)
    m = re.search(r"PEAK_KB (\d+)", p.stderr)
    assert m, p.stderr
    return p.returncode, int(m.group(1)) / 1024, p.stderr


def _bomb_graph(f, name, mutate_h5) -> str:
    path = Path(f.graph(name))
    with h5py.File(path, "a") as h:
        mutate_h5(h)
    assert path.stat().st_size < 400_000
    return str(path)


def _fill(group_path, key, shape, dtype):
    def m(h):
        g = h[group_path]
        if key in g:
            del g[key]
        g.create_dataset(key, shape=shape, dtype=dtype, fillvalue=1)   # no bytes on disk
    return m


def _gzip_zeros(group_path, key, shape, dtype):
    def m(h):
        g = h[group_path]
        del g[key]
        chunk = (1024,) + tuple(shape[1:])
        ds = g.create_dataset(key, shape=shape, dtype=dtype, chunks=chunk, compression="gzip")
        data = zlib.compress(bytes(math.prod(chunk) * np.dtype(dtype).itemsize), 9)
        for i in range(0, shape[0], chunk[0]):
            ds.id.write_direct_chunk((i,) + (0,) * (len(shape) - 1), data, filter_mask=0)
    return m


BOMBS = [
    # (id, argv(fx), exit status, regex)
    ("nir 1 GiB fill-value dataset in unused metadata", lambda f: ["nir", "run", _bomb_graph(
        f, "bomb_meta", _fill("node/metadata", "junk", (GiB // 8,), "f8")), f.ec_in, f.out], 0, r"wrote"),
    ("nir 256 MiB gzip weight", lambda f: ["nir", "run", _bomb_graph(
        f, "bomb_gzip", _gzip_zeros("node/nodes/w_rec", "weight", (1 << 15, 1 << 10), "f8")), f.ec_in, f.out], 2,
     r"bomb_gzip\.nir: dataset node/nodes/w_rec/weight \(shape \(32768, 1024\), float64\) declares 268435456 bytes"),
    ("nir 1 GiB w_rec", lambda f: ["nir", "run", _bomb_graph(
        f, "bomb_wrec", _fill("node/nodes/w_rec", "weight", (1 << 14, 1 << 14), "f4")), f.ec_in, f.out], 2,
     r"bomb_wrec\.nir: dataset node/nodes/w_rec/weight .* declares 1073741824 bytes"),
    ("nir input npz member of 1 GiB", lambda f: ["nir", "run", f.graph("ec_ok"), npz_with_zero_members(
        f.root / "bomb_in.npz", {"input": ((1 << 26, 1, 4), "f4")}), f.out], 2,
     r"bomb_in\.npz: input\.npy \(shape \(67108864, 1, 4\), float32\) declares 1073741824 bytes, over the budget"),
]


@pytest.mark.parametrize("argv, status, pattern", [r[1:] for r in BOMBS], ids=[r[0] for r in BOMBS])
def test_memory_bombs_stay_under_the_peak(fx, argv, status, pattern):
    rc, mb, err = _peak(argv(fx))
    assert rc == status, err
    assert mb < PEAK_MB, (mb, err)
    if status:
        assert re.search(pattern, err), err


def test_check_never_decompresses_unused_members(fx):
    """A 2 MB npz holding two 1 GiB in.* members beside the right out.* arrays: check passes, under the peak."""
    man = load_manifest(default_dir())
    case = next(e for e in man["cases"] if e["name"] == LIF_CASE)
    ref = load_npz(default_dir() / case["file"], keys=["out.*"])
    d = fx.root / "bomb_check"
    d.mkdir()
    p = npz_with_zero_members(d / case["file"], {"in.a": ((1 << 28,), "f4"), "in.b": ((1 << 28,), "f4"), **ref})
    assert Path(p).stat().st_size < 3_000_000
    rc, mb, err = _peak(["check", str(d), "--only", LIF_CASE])
    assert rc == 0 and mb < PEAK_MB, (rc, mb, err)
