"""SPEC §8 command line: config dataclasses as the one way to declare options, and the run directory
shared by train, nas and ec (lock, resume keys, stable metrics columns, overwrite, relocation)."""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass

import numpy as np
import pytest

from refsnn._checks import check_int
from refsnn.commands.config import build_parser, option, parse
from refsnn.runs import RunDir


def _auto_or_float(text):
    return None if text == "auto" else float(text)


@dataclass
class _Cfg:
    run_dir: str = option("", "a positional argument", positional=True)
    epochs: int = option(3, "training epochs")
    lr: float = option(0.5, "learning rate")
    name: str = option("a", "a choice", choices=("a", "b"))
    limit: int | None = option(None, "optional int")
    shift: float | None = option(None, "auto or a number", parse=_auto_or_float, metavar="auto|X")
    augment: bool = option(True, "augmentation")
    quiet: bool = option(False, "no progress lines")
    only: list[str] = option([], "repeatable")

    def __post_init__(self):
        check_int("epochs", self.epochs, lo=1)


def test_config_dataclass_is_the_parser():
    c = parse(_Cfg, ["RUN"])
    assert c == _Cfg(run_dir="RUN")
    c = parse(_Cfg, ["R", "--epochs", "5", "--lr", "1e-3", "--name", "b", "--limit", "7", "--shift", "auto",
                     "--no-augment", "--quiet", "--only", "x", "--only", "y"])
    assert (c.epochs, c.lr, c.name, c.limit, c.shift, c.augment, c.quiet, c.only) == \
        (5, 1e-3, "b", 7, None, False, True, ["x", "y"])
    assert parse(_Cfg, ["R", "--shift", "1.5"]).shift == 1.5
    assert _Cfg().only == [] and _Cfg().only is not _Cfg().only  # list defaults are per instance
    text = build_parser(_Cfg, prog="refsnn x").format_help()
    for h in ("training epochs (default: 3)", "--no-augment", "auto|X", "repeatable", "optional int"):
        assert h in text
    with pytest.raises(SystemExit):
        parse(_Cfg, ["R", "--name", "c"])  # not a choice: argparse's usage error, exit status 2
    with pytest.raises(ValueError, match="epochs"):
        parse(_Cfg, ["R", "--epochs", "0"])  # __post_init__ names the field


def test_every_command_declares_its_options_with_a_config_dataclass():
    import dataclasses
    import importlib

    from refsnn.cli import COMMANDS

    for name, (modname, _) in COMMANDS.items():
        mod = importlib.import_module(modname)
        assert dataclasses.is_dataclass(mod.CONFIG), name
        for f in dataclasses.fields(mod.CONFIG):
            assert f.metadata.get("help"), f"{name}: option {f.name} has no help text"
        assert callable(mod.main), name
        build_parser(mod.CONFIG, prog=f"refsnn {name}")


def _run(path, **kw):
    cfg = {"seed": 0, "lr": 0.1, "epochs": 2}
    cfg.update(kw.pop("config", {}))
    return RunDir(path, config=cfg, resume_keys=("seed", "lr"), columns=("epoch", "loss"), **kw)


def test_run_directory_refuses_a_second_run_and_resumes_with_the_same_keys(tmp_path):
    out = tmp_path / "run"
    with _run(out) as run:
        assert not run.resuming
        run.save_checkpoint({"w": np.arange(3.0)})
        run.write_metrics([{"epoch": 1, "loss": 0.5}])
        run.write_summary({"loss": 0.5})
    assert json.loads((out / "config.json").read_text())["lr"] == 0.1
    assert (out / "environment.json").is_file() and not (out / ".lock").exists()
    with pytest.raises(ValueError, match="--resume.*--overwrite"):
        _run(out).__enter__()
    with pytest.raises(ValueError, match=r"resume: .*different settings for \['lr'\]"):
        _run(out, resume=True, config={"lr": 0.2}).__enter__()
    assert not (out / ".lock").exists()  # a refused open releases the lock
    with _run(out, resume=True, config={"epochs": 5}) as run:  # a non-key setting may change
        assert run.resuming
        assert np.array_equal(run.load_checkpoint(required=("w",))["w"], np.arange(3.0))
        assert run.read_summary() == {"loss": 0.5}
    with _run(out, overwrite=True) as run:
        assert not run.resuming and not run.checkpoint_path.exists() and run.read_summary() == {}
    with pytest.raises(ValueError, match="overwrite"):
        _run(out, resume=True, overwrite=True)


def test_run_directory_lock_refuses_a_live_writer_and_takes_over_a_dead_ones(tmp_path):
    out = tmp_path / "run"
    with _run(out):
        with pytest.raises(ValueError, match="in use by another run"):
            with _run(out, resume=True):
                pass
    (out / ".lock").write_text(str(os.getppid()))  # a live process (this one's parent)
    with pytest.raises(ValueError, match=f"pid {os.getppid()}"):
        _run(out, resume=True).__enter__()
    (out / ".lock").write_text("999999999")  # no such process
    with _run(out, resume=True) as run:
        assert (out / ".lock").read_text() == str(os.getpid())
        assert not run.resuming  # nothing to resume: starts from scratch


def test_run_directory_metrics_columns_are_fixed(tmp_path):
    with _run(tmp_path / "r") as run:
        run.write_metrics([{"loss": 1.0, "epoch": 1}, {"epoch": 2, "loss": 0.5}])
        assert (tmp_path / "r" / "metrics.csv").read_text() == "epoch,loss\n1,1.0\n2,0.5\n"
        with pytest.raises(ValueError, match="rows"):
            run.write_metrics([{"epoch": 1, "loss": 1.0, "extra": 3}])


def test_run_directory_is_relocatable(tmp_path):
    with _run(tmp_path / "a") as run:
        run.save_checkpoint({"w": np.ones(2)})
    shutil.move(tmp_path / "a", tmp_path / "b")
    with _run(tmp_path / "b", resume=True) as run:
        assert run.resuming


def test_progress_time_format():
    from refsnn.runs import fmt_hms

    assert fmt_hms(0) == "0:00:00" and fmt_hms(3725.4) == "1:02:05" and fmt_hms(float("nan")) == "?"


def test_bench_refuses_an_unwritable_json_target_before_running(tmp_path, capsys):
    from refsnn.cli import main

    assert main(["bench", "--no-startup", "--only", "nope", "--json", str(tmp_path / "missing" / "b.json")]) == 2
    assert "json: " in capsys.readouterr().err
    assert main(["bench", "--no-startup", "--json", str(tmp_path)]) == 2


def test_run_directory_overwrite_removes_the_commands_outputs(tmp_path):
    out = tmp_path / "run"
    with _run(out, outputs=("timing.json", "sub")) as run:
        run.save_checkpoint({"w": np.ones(2)})
        run.write_json("timing.json", {"1": 2})
        run.write_json("sub/x.json", {})
        run.write_json("keep.json", {})
    with _run(out, overwrite=True, outputs=("timing.json", "sub")):
        pass
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "environment.json", "keep.json"]


def test_line_plot_png_shared_and_own_x(tmp_path):
    """refsnn.plot.line_plot_png: series over a shared x, or (x, y) pairs of their own (runs compared by
    env steps); NaN points are skipped; the legend wraps onto a second row after four names."""
    from PIL import Image

    from refsnn.plot import line_plot_png
    line_plot_png(tmp_path / "a.png", [1, 2, 3], {"a": [1.0, float("nan"), 3.0]}, title="t")
    series = {f"run {k}": (np.linspace(0, 100.0 * (k + 1), 20), np.full(20, float(k))) for k in range(5)}
    line_plot_png(tmp_path / "b.png", None, series, title="t", xlabel="env steps")
    for name in ("a.png", "b.png"):
        with Image.open(tmp_path / name) as im:
            assert im.size == (800, 480) and im.format == "PNG"
    from refsnn.plot import COLORS
    with Image.open(tmp_path / "b.png") as im:
        px = np.asarray(im.convert("RGB"))
    for k, col in enumerate(COLORS[:5]):
        ys = np.flatnonzero((px == col).all(axis=-1).any(axis=1))
        assert (ys > 60).any(), f"no line of series {k} inside the plot area"
    near5 = np.abs(px[:54].astype(int) - np.array(COLORS[4])).sum(axis=-1) < 60   # antialiased legend text
    assert np.flatnonzero(near5.any(axis=1)).min() >= 30      # the fifth name is on the legend's second row


def test_blas_runtime_is_recorded(monkeypatch):
    """environment.json and refsnn bench --json record NumPy's BLAS as loaded: library, kernel, threads
    (threadpoolctl) and the OpenBLAS variables that steer it."""
    pytest.importorskip("threadpoolctl")
    from refsnn.provenance import blas_runtime, environment
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    b = blas_runtime()
    assert b["OPENBLAS_CORETYPE"] == "Haswell"
    assert isinstance(b["blas_library"], str) and b["blas_library"]
    assert isinstance(b["blas_threads"], int) and b["blas_threads"] >= 1
    assert "blas_kernel" in b and "blas_version" in b
    env = environment()
    assert {k: env[k] for k in b} == b and env["numba_threads"] >= 1


@pytest.mark.torch
def test_peer_benchmark_is_skipped_without_its_peer_and_runs_with_it(monkeypatch):
    """refsnn bench's peer keys: left out (with the reason) when the peer framework is missing; with
    torch installed the conv comparison runs (tiny shape here) and checks both sides agree."""
    import builtins

    from refsnn.bench import peers, run_benches
    real_import = builtins.__import__

    def no_torch(name, *a, **k):
        if name == "torch":
            raise ImportError("no torch")
        return real_import(name, *a, **k)
    lines = []
    with monkeypatch.context() as m:
        m.setattr(builtins, "__import__", no_torch)
        out = run_benches(["conv_fwd_bwd_speedup_vs_torch"], say=lines.append)
    assert out == {} and "skipped: torch is not installed" in lines[0]
    pytest.importorskip("torch")
    pytest.importorskip("threadpoolctl")
    monkeypatch.setattr(peers, "CONV_SHAPES", ((4, 3, 6, 6, 5),))
    r = peers.bench_conv_vs_torch()
    assert r["conv_fwd_bwd_speedup_vs_torch"] > 0 and "conv_vs_torch_4x3x6x6_5" in r


@pytest.mark.torch
def test_onb_benchmark_runs_against_the_installed_peers():
    """The Open Neuromorphic workload (tiny here): one ratio per installed peer, the min key."""
    import importlib.util
    pytest.importorskip("torch")
    if not any(importlib.util.find_spec(p) for p in ("spikingjelly", "snntorch", "norse")):
        pytest.skip("no SNN framework to compare with is installed")
    pytest.importorskip("threadpoolctl")
    from refsnn.bench import peers
    r = peers.bench_onb(sizes=(32,), T=6, B=2, n_threads=1)
    ratios = {k: v for k, v in r.items() if k.startswith("onb_") and k.endswith("_32_speedup")}
    assert ratios and all(v > 0 for v in ratios.values())
    assert r["onb_min_speedup"] == min(ratios.values()) and r["onb_threads"] == 1.0


@pytest.mark.torch
def test_stbp_epoch_benchmark_against_spikingjelly_runs():
    """The STBP-epoch peer benchmark on 64 training images at one thread: both sides run the same
    recipe; the keys for the thread count and the best-of key are reported."""
    pytest.importorskip("torch")
    pytest.importorskip("spikingjelly")
    pytest.importorskip("threadpoolctl")
    from refsnn.bench import peers
    r = peers.bench_stbp_vs_spikingjelly((1,), n_train=64)
    assert r["stbp_epoch_speedup_vs_spikingjelly"] == r["stbp_epoch_speedup_vs_spikingjelly_1t"] > 0
    assert r["stbp_epoch_refsnn_s_1t"] > 0 and r["stbp_epoch_spikingjelly_s_1t"] > 0
