"""SPEC §1 conventions: atomic writes, pickle-free loads, argument validation, CLI errors."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from refsnn._checks import check_array, check_choice, check_float, check_int
from refsnn.io import atomic_savez, atomic_write_json, load_npz


def test_atomic_write_replaces_and_leaves_no_temporaries(tmp_path):
    p = tmp_path / "sub" / "summary.json"
    atomic_write_json(p, {"a": 1})
    atomic_write_json(p, {"a": 2, "b": [1, 2]})
    assert json.loads(p.read_text()) == {"a": 2, "b": [1, 2]}
    assert sorted(x.name for x in p.parent.iterdir()) == ["summary.json"]


def test_atomic_write_respects_umask(tmp_path):
    old = os.umask(0o022)
    try:
        p = atomic_write_json(tmp_path / "s.json", {})
    finally:
        os.umask(old)
    assert stat.S_IMODE(p.stat().st_mode) == 0o644


def test_load_npz_roundtrip_and_errors(tmp_path):
    p = atomic_savez(tmp_path / "a.npz", {"x": np.arange(5), "y": np.ones((2, 2), np.float32)})
    d = load_npz(p, required=("x", "y"))
    assert d["x"].tolist() == [0, 1, 2, 3, 4] and d["y"].dtype == np.float32
    with pytest.raises(ValueError, match="missing arrays"):
        load_npz(p, required=("z",))
    trunc = tmp_path / "t.npz"
    trunc.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])
    with pytest.raises(ValueError, match="t.npz"):
        load_npz(trunc)
    foreign = tmp_path / "f.npz"
    foreign.write_text("not a zip file")
    with pytest.raises(ValueError, match="f.npz"):
        load_npz(foreign)
    with pytest.raises(FileNotFoundError):
        load_npz(tmp_path / "missing.npz")
    # a pickled object array is refused, never unpickled
    pk = tmp_path / "p.npz"
    np.savez(pk, o=np.array([{"evil": 1}], dtype=object))
    with pytest.raises(ValueError, match="p.npz"):
        load_npz(pk)
    with pytest.raises(TypeError, match="object arrays"):
        atomic_savez(tmp_path / "o.npz", {"o": np.array([None], dtype=object)})


def test_check_helpers_name_the_argument():
    with pytest.raises(TypeError, match="^x: expected a numpy.ndarray"):
        check_array("x", [1.0])
    with pytest.raises(TypeError, match="^x: expected dtype"):
        check_array("x", np.zeros(2, np.int64))
    with pytest.raises(ValueError, match=r"^x: expected shape \(\*, 3\)"):
        check_array("x", np.zeros((2, 2)), shape=(None, 3))
    with pytest.raises(ValueError, match="^x: contains NaN"):
        check_array("x", np.array([np.nan]))
    with pytest.raises(ValueError, match="^lr: expected a value > 0"):
        check_float("lr", 0.0, lo=0.0, lo_open=True)
    with pytest.raises(TypeError, match="^lr: expected a real number"):
        check_float("lr", True)
    with pytest.raises(TypeError, match="^n: expected an integer"):
        check_int("n", 1.5)
    with pytest.raises(ValueError, match="^mode: expected one of"):
        check_choice("mode", "c", ("a", "b"))


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    from refsnn.cli import main

    assert main(["train", "--data", "nosuchdata", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("refsnn train: error:") and "Traceback" not in err
    with pytest.raises(SystemExit):
        main(["nosuchcommand"])


def test_map_with_progress_serial_and_pool_agree():
    """Shared job loop of the examples: same results in job order in-process and in a spawn pool,
    one progress line per job with the count, elapsed and ETA."""
    import math

    from refsnn.parallel import map_with_progress

    jobs = [4.0, 9.0, 16.0]
    lines = []
    serial = list(map_with_progress(math.sqrt, jobs, workers=0, line=lambda r: f"r={r:g}",
                                    say=lines.append))
    pooled = list(map_with_progress(math.sqrt, jobs, workers=2, say=lambda s: None))
    assert serial == pooled == [2.0, 3.0, 4.0]
    assert [ln.split("  elapsed")[0] for ln in lines] == ["[ 1/3] r=2", "[ 2/3] r=3", "[ 3/3] r=4"]
    assert all("eta " in ln for ln in lines) and lines[-1].endswith("eta 0s")
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match=r"^workers\b"):
            list(map_with_progress(math.sqrt, jobs, workers=bad))


def test_every_registered_benchmark_resolves_to_a_function_of_the_bench_package():
    """refsnn bench's table names importable functions, all inside refsnn.bench (the one bench package)."""
    import importlib

    from refsnn.bench import BENCHES

    assert len({key for key, _, _ in BENCHES}) == len(BENCHES)
    for _key, target, what in BENCHES:
        modname, fname = target.split(":")
        assert modname.startswith("refsnn.bench."), target
        assert callable(getattr(importlib.import_module(modname), fname)), target
        assert what


#: optional or slow-to-import dependencies a function may import on first use; everything else,
#: refsnn's own modules above all, is imported at module top (so the import contract sees it)
DEFERRABLE = {"gymnasium", "mujoco", "distributed", "torch", "scipy", "threadpoolctl", "snntorch", "spikingjelly",
              "norse",
              "nir"}  # nir: the optional NIR exchange (refsnn[nir]), imported by refsnn.nir only when used


def test_function_local_imports_only_defer_optional_heavy_dependencies():
    import ast
    import pathlib

    import refsnn

    bad = []
    for f in sorted(pathlib.Path(refsnn.__file__).parent.rglob("*.py")):
        tree = ast.parse(f.read_text(encoding="utf-8"))
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom):
                    names = ["." if node.level else (node.module or "")]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                else:
                    continue
                bad += [f"{f.name}:{node.lineno} {n}" for n in names if n.split(".")[0] not in DEFERRABLE]
    assert not bad, bad


def test_inline_executor_map_is_lazy_and_ordered():
    """InlineExecutor.map runs each call when its result is asked for (so a progress line can follow
    each in-process job), in order, and an error surfaces at that result."""
    from refsnn.parallel import InlineExecutor

    calls = []

    def f(x):
        calls.append(x)
        if x == 3:
            raise ZeroDivisionError("three")
        return 10 * x

    it = InlineExecutor().map(f, [1, 2, 3])
    assert calls == []
    assert next(it) == 10 and calls == [1]
    assert next(it) == 20
    with pytest.raises(ZeroDivisionError):
        next(it)


#: lasting size limits: lines of one Python file (under the directories below), lines of the README
MAX_SOURCE_LINES = 800
MAX_README_LINES = 150
SOURCE_DIRS = ("refsnn", "tests", "examples", "tools")


def test_source_files_and_readme_stay_short():
    """No ``*.py`` under refsnn/, tests/, examples/ or tools/ has more than 800 lines (a longer module
    is split along its seams, the first module re-exporting the public names) and the README has at
    most 150 lines (details belong in docs/)."""
    repo = Path(__file__).resolve().parents[1]
    too_long = []
    for top in SOURCE_DIRS:
        assert (repo / top).is_dir(), top
        for f in sorted((repo / top).rglob("*.py")):
            n = len(f.read_text(encoding="utf-8").splitlines())
            if n > MAX_SOURCE_LINES:
                too_long.append(f"{f.relative_to(repo)}: {n} lines")
    readme = len((repo / "README.md").read_text(encoding="utf-8").splitlines())
    if readme > MAX_README_LINES:
        too_long.append(f"README.md: {readme} lines (at most {MAX_README_LINES})")
    assert not too_long, f"over {MAX_SOURCE_LINES} lines (README: {MAX_README_LINES}): {too_long}"


#: kernel modules with no plain-NumPy oracle of their own, and why
KERNEL_MODULES_WITHOUT_ORACLE = {
    "__init__": "package marker, empty",
    "_args": "argument checks the kernels share; computes nothing",
    "cuba_pack": "exact bit packing in plain NumPy, no Numba; unpacking is its inverse (tested)",
    "warmup": "calls every module's _warmup; computes nothing",
}
#: kernel modules whose oracles are not named ``*_ref``
KERNEL_ORACLES = {"surrogate": ("heaviside", "grad", "primitive")}  # NumPy forms of _grad_nb, _prim_nb
NUMBA_DECORATORS = {"njit", "jit", "intrinsic", "vectorize", "guvectorize"}


def _kernel_order_problems(name: str, source: str) -> list[str]:
    """Where module ``name`` breaks "docstring -> oracles -> Numba" (empty list: it does not)."""
    import ast

    tree = ast.parse(source)
    defs = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    first = {}
    for n in defs:
        first.setdefault(n.name, n.lineno)

    def is_numba(n):
        for d in getattr(n, "decorator_list", []):
            f = d.func if isinstance(d, ast.Call) else d
            if (f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")) in NUMBA_DECORATORS:
                return True
        return False

    oracles = [n for n in defs if n.name.endswith("_ref") or n.name in KERNEL_ORACLES.get(name, ())]
    numba_defs = [n for n in defs if is_numba(n)]
    if name in KERNEL_MODULES_WITHOUT_ORACLE:
        return [f"{name}: listed without an oracle but defines {oracles[0].name}"] if oracles else []
    if not oracles:
        return [f"{name}: no plain-NumPy oracle (*_ref); add one or list the module with the reason"]
    if not ast.get_docstring(tree):
        return [f"{name}: no module docstring (the equations)"]
    bad = []
    if numba_defs and oracles[0].lineno > numba_defs[0].lineno:
        bad.append(f"{name}: first oracle {oracles[0].name} (line {oracles[0].lineno}) after the first "
                   f"Numba function {numba_defs[0].name} (line {numba_defs[0].lineno})")
    bad += [f"{name}: {o.name} (line {o.lineno}) after {o.name[:-4]} (line {first[o.name[:-4]]})"
            for o in oracles if o.name.endswith("_ref") and first.get(o.name[:-4], 1 << 30) < o.lineno]
    return bad


def test_kernel_modules_read_equations_then_oracle_then_numba():
    """Every module of refsnn/kernels/ is read as a specification: docstring (equations), then the
    plain-NumPy oracles, then the Numba kernels and the functions that call them (docs/DEVELOPING.md,
    "Module order"): its first oracle precedes its first Numba definition, and each ``<op>_ref``
    precedes ``<op>``. Modules without an oracle are listed above with the reason."""
    import refsnn.kernels

    kdir = Path(refsnn.kernels.__file__).parent
    names = {f.stem for f in kdir.glob("*.py")}
    stale = set(KERNEL_MODULES_WITHOUT_ORACLE) - names
    assert not stale, f"listed kernel modules that no longer exist: {sorted(stale)}"
    bad = []
    for name in sorted(names):
        bad += _kernel_order_problems(name, (kdir / f"{name}.py").read_text(encoding="utf-8"))
    assert not bad, bad
    # the check itself finds a module in the wrong order
    wrong = ('"""y = 2 x."""\nimport numba\n\n\n@numba.njit(cache=True)\ndef _double_nb(x):\n    return 2 * x\n\n\n'
             'def double(x):\n    return _double_nb(x)\n\n\ndef double_ref(x):\n    return 2 * x\n')
    assert len(_kernel_order_problems("example", wrong)) == 2


def _github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of ``markdown``: lowercase, punctuation other than '-' and
    '_' dropped, spaces -> '-', repeats suffixed ``-1``, ``-2``...; headings inside fenced code skipped."""
    import re

    anchors, seen, fenced = set(), {}, False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        m = None if fenced else re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
            seen[slug] = seen.get(slug, 0) + 1
    return anchors


def _broken_results_links(repo: Path) -> list[str]:
    """Every link to an anchor of docs/results.md in README.md, docs/, examples/, refsnn/ and tests/
    (and every ``](#anchor)`` link inside docs/results.md) whose anchor is no heading there."""
    import re

    results = repo / "docs" / "results.md"
    anchors = _github_anchors(results.read_text(encoding="utf-8"))
    files = [repo / "README.md", *sorted((repo / "docs").rglob("*.md"))]
    files += [f for top in ("examples", "refsnn", "tests") if (repo / top).is_dir()
              for f in sorted((repo / top).rglob("*.py"))]
    bad = []
    for f in files:
        text = f.read_text(encoding="utf-8")
        targets = re.findall(r"results\.md#([\w\-]+)", text)
        if f == results:
            targets += re.findall(r"\]\(#([\w\-]+)\)", text)
        bad += [f"{f.relative_to(repo)}: #{t}" for t in targets if t not in anchors]
    return bad


def test_links_to_results_md_resolve(tmp_path):
    """Users cite docs/results.md by section: every link to one of its headings, from the README, the
    docs, the examples, the package and the tests, names a heading that exists (GitHub's anchor
    rules), so renaming a heading without updating its links fails here."""
    repo = Path(__file__).resolve().parents[1]
    bad = _broken_results_links(repo)
    assert not bad, f"links to docs/results.md headings that do not exist: {bad}"
    # the anchor rules and the check itself, on a tiny repository
    assert _github_anchors("## `refsnn bench`\n### The EC paper's comparison: five methods\n"
                           "```\n# not a heading\n```\n### Threads\n### Threads\n") == {
        "refsnn-bench", "the-ec-papers-comparison-five-methods", "threads", "threads-1"}
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "results.md").write_text("# R\n\n### Hopper-v5 (2026-12-04)\n[x](#r) [y](#gone)\n")
    link = "docs/results" + ".md#"
    (tmp_path / "README.md").write_text(f"[a]({link}hopper-v5-2026-12-04) [b]({link}hopper-v5)\n")
    assert _broken_results_links(tmp_path) == ["README.md: #hopper-v5", "docs/results.md: #gone"]
