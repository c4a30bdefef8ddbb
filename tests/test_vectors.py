"""SPEC §7: reference vectors (``refsnn vectors generate|verify``) and ``refsnn check``."""
from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from refsnn import cli
from refsnn.io import load_npz
from refsnn.kernels.lif import PRESETS
from refsnn.kernels.surrogate import NAMES
from refsnn.vectors.cases import MODULES, all_cases
from refsnn.vectors.cases.surrogate import surrogate_compute
from refsnn.vectors.check import check
from refsnn.vectors.format import default_dir, npz_bytes, write_backend_outputs
from refsnn.vectors.runner import generate, verify
from refsnn.vectors.tolerances import EXACT, FLOAT_TOL, DtypeTable, compare_output

REPO_VECTORS = Path(__file__).resolve().parents[1] / "data" / "vectors"


@pytest.fixture(scope="module")
def gen_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("vectors")
    generate(d, quiet=True)
    return d


def _backend_copy(ref: Path, dst: Path, names=None) -> Path:
    """A conforming output directory: only the out.* arrays of each case, re-saved with np.savez
    (a different writer than refsnn's, as another backend would use)."""
    dst.mkdir(parents=True, exist_ok=True)
    man = json.loads((ref / "manifest.json").read_text())
    for e in man["cases"]:
        if names is not None and e["name"] not in names:
            continue
        arrays = {k: v for k, v in load_npz(ref / e["file"]).items() if k.startswith("out.")}
        np.savez(dst / e["file"], **arrays)
    return dst


def _edit(path: Path, **changes):
    arrays = load_npz(path)
    for k, v in changes.items():
        if v is None:
            del arrays[k]
        else:
            arrays[k] = v
    np.savez(path, **arrays)


# ---- generate / verify ------------------------------------------------------------------------
def test_generate_twice_gives_identical_bytes(gen_dir, tmp_path):
    generate(tmp_path, quiet=True)
    a = sorted(p.name for p in gen_dir.iterdir())
    b = sorted(p.name for p in tmp_path.iterdir())
    assert a == b
    for name in a:
        assert (gen_dir / name).read_bytes() == (tmp_path / name).read_bytes(), name


def test_committed_vectors_are_current(gen_dir):
    """data/vectors in the repository lists exactly the registered cases with the same params and
    the same inputs (outputs are checked with tolerances by verify, since BLAS may round differently
    on another CPU)."""
    if not (REPO_VECTORS / "manifest.json").is_file():
        pytest.skip("no data/vectors in this checkout")
    repo = {e["name"]: e for e in json.loads((REPO_VECTORS / "manifest.json").read_text())["cases"]}
    new = {e["name"]: e for e in json.loads((gen_dir / "manifest.json").read_text())["cases"]}
    assert sorted(repo) == sorted(new), "data/vectors is stale: run 'refsnn vectors generate'"
    for name, e in new.items():
        assert repo[name]["params"] == e["params"], name
        assert repo[name]["inputs"] == e["inputs"] and repo[name]["outputs"] == e["outputs"], name
        a, b = load_npz(REPO_VECTORS / e["file"]), load_npz(gen_dir / e["file"])
        for k in e["inputs"]:
            assert np.array_equal(a[k], b[k]), (name, k)


def test_verify_passes(gen_dir):
    out = io.StringIO()
    ok, rows = verify(gen_dir, out=out)
    assert ok, out.getvalue()
    assert {r.case for r in rows} == {c.name for c in all_cases()}
    # oracles were compared too
    assert any(r.output.endswith("(oracle)") for r in rows)


def test_verify_cli_on_repository_vectors():
    if not (REPO_VECTORS / "manifest.json").is_file():
        pytest.skip("no data/vectors in this checkout")
    assert cli.main(["vectors", "verify", "--dir", str(REPO_VECTORS)]) == 0


def test_verify_detects_wrong_stored_output(gen_dir, tmp_path):
    d = tmp_path / "v"
    shutil.copytree(gen_dir, d)
    name = "lif.preset.msenas.float32"
    arrays = load_npz(d / f"{name}.npz")
    arrays["out.h"] = arrays["out.h"] + np.float32(0.01)
    (d / f"{name}.npz").write_bytes(npz_bytes(arrays))
    out = io.StringIO()
    ok, rows = verify(d, out=out)
    assert not ok
    text = out.getvalue()
    assert "sha256 differs" in text
    bad = {(r.case, r.output) for r in rows if r.failed}
    assert (name, "h") in bad and (name, "s") not in bad


def test_verify_detects_missing_file(gen_dir, tmp_path):
    d = tmp_path / "v"
    shutil.copytree(gen_dir, d)
    (d / "ec.centered_ranks.npz").unlink()
    out = io.StringIO()
    ok, _ = verify(d, out=out)
    assert not ok and "ec.centered_ranks" in out.getvalue()


def test_generate_only_keeps_other_entries(gen_dir, tmp_path):
    d = tmp_path / "v"
    shutil.copytree(gen_dir, d)
    generate(d, only=["ec.*"], quiet=True)
    for p in gen_dir.iterdir():
        assert (d / p.name).read_bytes() == p.read_bytes()


def test_cases_are_grouped_by_family():
    """Every case module builds only cases under its own name prefixes, and no two modules share one."""
    owner = {}
    for m in MODULES:
        for prefix in m.PREFIXES:
            assert prefix not in owner, (prefix, m.__name__, owner.get(prefix))
            owner[prefix] = m.__name__
        for c in m.cases():
            assert c.name.startswith(m.PREFIXES), (c.name, m.__name__)
    assert sum(len(m.cases()) for m in MODULES) == len(all_cases())


# ---- contents of the manifest -------------------------------------------------------------------
def test_manifest_covers_spec_section_7(gen_dir):
    man = json.loads((gen_dir / "manifest.json").read_text())
    names = [e["name"] for e in man["cases"]]
    for dtype in ("float32", "float64"):
        for preset in PRESETS:
            assert f"lif.preset.{preset}.{dtype}" in names
        for s in NAMES:
            assert f"lif.surrogate.{s}.{dtype}" in names
            assert f"surrogate.{s}.{dtype}" in names
        for v in ("soft_reset", "hard_nodetach", "threshold_ge", "threshold_gt_seed"):
            assert f"lif.variant.{v}.{dtype}" in names
        for prefix in ("conv2d.", "batchnorm2d.train.", "batchnorm2d.eval.", "pool.", "linear.",
                       "network.convlif.", "cuba.env_step.dense.", "cuba.env_step.packed."):
            assert any(n.startswith(prefix) and n.endswith(dtype) for n in names), prefix + dtype
    for prefix in ("cuba.pack.", "cuba.unpack.", "cuba.packed_matvec.", "ec.bernoulli", "ec.member_sampling",
                   "ec.centered_ranks", "ec.nes_update.", "nas.bie", "nas.logdet", "nas.decode."):
        assert any(n.startswith(prefix) for n in names), prefix
    total = 0
    for e in man["cases"]:
        assert e["section"] and e["equation"] and e["description"]
        assert e["inputs"] and e["outputs"]
        arrays = load_npz(gen_dir / e["file"])
        assert sorted(arrays) == sorted(list(e["inputs"]) + list(e["outputs"]))
        for k, spec in list(e["inputs"].items()) + list(e["outputs"].items()):
            assert str(arrays[k].dtype) == spec["dtype"] and list(arrays[k].shape) == spec["shape"], k
        for k, spec in e["outputs"].items():
            tol = spec["tolerance"]
            if arrays[k].dtype.kind == "f" and tol["kind"] != "exact":
                assert tol == FLOAT_TOL[str(arrays[k].dtype)], (e["name"], k)
            if k in ("out.s", "out.sbits", "out.n_spikes", "out.count", "out.Chp", "out.theta") \
                    and not e["params"].get("relaxed"):
                assert tol == EXACT, (e["name"], k)
        total += (gen_dir / e["file"]).stat().st_size
    assert total < 5_000_000


def test_lif_threshold_cases_differ_only_by_comparison(gen_dir):
    """The exact-threshold neuron (column 0) separates '>' from '>='."""
    ge = load_npz(gen_dir / "lif.variant.threshold_ge.float64.npz")
    gt = load_npz(gen_dir / "lif.preset.msenas.float64.npz")
    assert ge["out.s"][0, :, 0].tolist() == [1.0, 1.0]
    assert gt["out.s"][0, :, 0].tolist() == [0.0, 0.0]


def test_npz_bytes_readable_and_zero_d():
    arrays = {"out.b": np.array(2.5), "in.a": np.arange(6, dtype=np.uint64).reshape(2, 3),
              "out.c": np.array([True, False])}
    data = npz_bytes(arrays)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert z.namelist() == ["in.a.npy", "out.b.npy", "out.c.npy"]
        assert all(i.date_time == (1980, 1, 1, 0, 0, 0) and i.compress_type == zipfile.ZIP_STORED
                   for i in z.infolist())
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        assert z["out.b"].shape == () and z["in.a"].dtype == np.uint64
    with pytest.raises(TypeError, match="object"):
        npz_bytes({"x": np.array([object()])})


# ---- compare_output -----------------------------------------------------------------------------
def test_compare_output_tolerances():
    e = np.array([1.0, -2.0, 0.0], np.float32)
    tol = FLOAT_TOL["float32"]
    assert compare_output("c", "y", e, e * (1 + 5e-5), tol).status == "ok"
    r = compare_output("c", "y", e, e + np.float32(1e-3), tol)
    assert r.status == "FAIL" and r.mismatches == 3 and r.max_abs == pytest.approx(1e-3, rel=1e-3)
    r = compare_output("c", "y", e, np.array([1.0, np.nan, 0.0], np.float32), tol)
    assert r.status == "FAIL" and r.mismatches == 1
    assert compare_output("c", "y", e, e.astype(np.float64), tol).status == "FAIL"
    assert "wrong shape" in compare_output("c", "y", e, e[:2], tol).message
    s = np.array([0.0, 1.0, 1.0], np.float32)
    r = compare_output("c", "s", s, np.array([0.0, 1.0, 0.0], np.float32), EXACT)
    assert r.status == "FAIL" and r.mismatches == 1 and "[2]" in r.message
    j = np.frombuffer(b'{"a": [1, 2], "b": {"c": 3}}', np.uint8)
    j2 = np.frombuffer(b'{"b":{"c":3},"a":[1,2]}', np.uint8)
    j3 = np.frombuffer(b'{"b":{"c":4},"a":[1,2]}', np.uint8)
    assert compare_output("c", "g", j, j2, {"kind": "json"}).status == "ok"
    r = compare_output("c", "g", j, j3, {"kind": "json"})
    assert r.status == "FAIL" and "$.b.c" in r.message
    assert compare_output("c", "g", j, None, {"kind": "json"}).status == "FAIL"


def test_tolerance_tables_accept_any_dtype_spelling():
    assert isinstance(FLOAT_TOL, DtypeTable) and isinstance(FLOAT_TOL, dict)
    assert FLOAT_TOL[np.float32] is FLOAT_TOL["float32"] is FLOAT_TOL[np.dtype("float32")]
    assert json.loads(json.dumps(FLOAT_TOL)) == FLOAT_TOL
    for key in ("int64", None, "nonsense"):
        with pytest.raises(KeyError):
            FLOAT_TOL[key]


# ---- refsnn check -------------------------------------------------------------------------------
def test_check_perfect_copy_passes(gen_dir, tmp_path, capsys):
    out = _backend_copy(gen_dir, tmp_path / "out")
    assert cli.main(["check", str(out), "--ref", str(gen_dir)]) == 0
    text = capsys.readouterr().out
    assert "0 failed, 0 missing" in text
    assert "max abs err" in text and "mismatches" in text


def test_check_perturbed_output_fails(gen_dir, tmp_path, capsys):
    out = _backend_copy(gen_dir, tmp_path / "out")
    f = out / "lif.preset.spikingjelly.float32.npz"
    a = load_npz(f)
    s = a["out.s"].copy()
    s[3, 1, 4] = 1.0 - s[3, 1, 4]
    _edit(f, **{"out.s": s, "out.grad_x": a["out.grad_x"] * np.float32(1.01)})
    assert cli.main(["check", str(out), "--ref", str(gen_dir)]) == 1
    text = capsys.readouterr().out
    line_s = [ln for ln in text.splitlines() if ln.startswith("lif.preset.spikingjelly.float32 ") and " s " in ln]
    assert line_s and "1/" in line_s[0] and "FAIL" in line_s[0]
    assert "1 failed" in text
    assert "first at [3, 1, 4]" in text


def test_check_small_float_noise_within_tolerance_passes(gen_dir, tmp_path):
    out = _backend_copy(gen_dir, tmp_path / "out", names={"conv2d.k3s1p1.float32"})
    f = out / "conv2d.k3s1p1.float32.npz"
    y = load_npz(f)["out.y"]
    _edit(f, **{"out.y": np.nextafter(y, np.float32(np.inf))})  # one ulp everywhere
    ok, _ = check(out, ref_dir=gen_dir, only=["conv2d.k3s1p1.float32"], out=io.StringIO())
    assert ok


def test_check_missing_case(gen_dir, tmp_path, capsys):
    out = _backend_copy(gen_dir, tmp_path / "out")
    (out / "nas.bie.npz").unlink()
    assert cli.main(["check", str(out), "--ref", str(gen_dir)]) == 1
    text = capsys.readouterr().out
    assert "nas.bie: missing" in text and "MISSING" in text and "1 missing" in text
    assert cli.main(["check", str(out), "--ref", str(gen_dir), "--allow-missing"]) == 0
    assert "1 missing (allowed)" in capsys.readouterr().out


def test_check_only_subset(gen_dir, tmp_path):
    out = _backend_copy(gen_dir, tmp_path / "out", names={"ec.bernoulli"})
    ok, rows = check(out, ref_dir=gen_dir, only=["ec.bern*"], out=io.StringIO())
    assert ok and {r.case for r in rows} == {"ec.bernoulli"}
    with pytest.raises(ValueError, match="no reference case"):
        check(out, ref_dir=gen_dir, only=["nope*"], out=io.StringIO())


@pytest.mark.parametrize("kind", ["garbage", "truncated", "pickled", "wrong_dtype", "wrong_shape",
                                  "missing_output", "extra_output"])
def test_check_malformed_file(gen_dir, tmp_path, kind):
    name = "cuba.packed_matvec.n70_e35"
    out = _backend_copy(gen_dir, tmp_path / "out", names={name})
    f = out / f"{name}.npz"
    count = load_npz(f)["out.count"]
    if kind == "garbage":
        f.write_bytes(b"not a zip file at all")
    elif kind == "truncated":
        f.write_bytes(f.read_bytes()[:100])
    elif kind == "pickled":
        np.savez(f, **{"out.count": np.array([{"a": 1}], dtype=object)})
    elif kind == "wrong_dtype":
        _edit(f, **{"out.count": count.astype(np.int32)})
    elif kind == "wrong_shape":
        _edit(f, **{"out.count": count[:, :-1]})
    elif kind == "missing_output":
        _edit(f, **{"out.count": None, "out.other": count})
    elif kind == "extra_output":
        _edit(f, **{"out.bonus": count})
    buf = io.StringIO()
    ok, rows = check(out, ref_dir=gen_dir, only=[name], out=buf)
    text = buf.getvalue()
    assert not ok, text
    expect = {"garbage": "not an .npz file", "truncated": "unreadable", "pickled": "unreadable",
              "wrong_dtype": "wrong dtype: expected int64, got int32",
              "wrong_shape": "wrong shape: expected [3, 70], got [3, 69]",
              "missing_output": "missing from the output file", "extra_output": "unexpected outputs"}[kind]
    assert expect in text, text


def test_check_bad_directories(gen_dir, tmp_path):
    assert cli.main(["check", str(tmp_path / "nope"), "--ref", str(gen_dir)]) == 2
    assert cli.main(["check", str(tmp_path), "--ref", str(tmp_path)]) == 2  # no manifest


def test_default_dir_is_repository_vectors():
    assert default_dir().name == "vectors"


def test_write_backend_outputs_makes_a_conforming_directory(tmp_path):
    """A backend runner (here refsnn's own surrogate code) -> write_backend_outputs -> check passes;
    a runner that declines a case (None, note) leaves it missing and reports the note."""
    def decline_fast_sigmoid(params, inp):
        if params["surrogate"] == "fast_sigmoid":
            return None, "not expressible"
        return surrogate_compute(params, inp), ""

    out = tmp_path / "backend"
    out.mkdir()
    (out / "stale.npz").write_bytes(b"old")
    written, notes = write_backend_outputs(out, {"surrogate.": decline_fast_sigmoid})
    assert not (out / "stale.npz").exists()
    assert sorted(written) == sorted(f"surrogate.{n}.{d}" for n in NAMES if n != "fast_sigmoid"
                                     for d in ("float32", "float64"))
    assert notes == [f"surrogate.fast_sigmoid.{d}: not expressible" for d in ("float32", "float64")]
    ok, _ = check(out, allow_missing=True, only=["surrogate.*"])
    assert ok
    ok, _ = check(out, only=["surrogate.*"])  # the declined cases are missing
    assert not ok
