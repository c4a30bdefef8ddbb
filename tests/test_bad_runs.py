"""The bad-input corpus of runs: run directories, checkpoints, budgets, replays, signals and the
worker processes of ``refsnn train``, ``refsnn nas`` and ``refsnn ec``.

Organised by surface:

* run directories -- :class:`refsnn.runs.RunDir` rows ``(id, call, exception, regex)``, the lock
  raced by many processes, an empty ``--out``, operating-system errors and read-only directories;
* checkpoints -- a corrupt checkpoint (of every EC method, of ``train``, of ``nas``) is refused on
  ``--resume`` with one line naming the file and the key, *before anything is written* (every file
  of the run directory is byte-for-byte unchanged afterwards), and hypothesis mutates valid
  checkpoints (dtype, shape, sign, NaN, infinity, missing and extra keys): one clean error or a
  correct resume, never a traceback, never a NaN written;
* budgets -- a resumed run whose ``--max-env-steps`` / ``--max-minutes`` is already spent stops at
  once, writing nothing;
* replays -- ``refsnn play --replay`` of a deployed file that differs from the record exits 1 with
  one line naming the difference;
* signals -- SIGINT (to the whole process group, as a terminal's Ctrl-C) and SIGTERM stop every
  command with one line and status 130 / 143, no traceback from the parent or the workers, the
  checkpoint kept and the lock released; workers die with a ``kill -9``'d parent.

The runs are tiny (a 16-neuron network on 5-step Hopper episodes, a 1-cell search, 8 images), made
once per module; each case copies the one it corrupts.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from corpus import OsWith, one_error_line, raise_oserror
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hst

import refsnn.io
from refsnn.cli import main as cli
from refsnn.ec import ppo
from refsnn.ec.nes import adam_load_state_arrays
from refsnn.ec.rollout import RunningNorm
from refsnn.ec.strategy import make_strategy
from refsnn.io import atomic_savez, load_npz
from refsnn.runs import RunDir

ROOT = os.geteuid() == 0
REPO = Path(__file__).resolve().parent.parent
TINY_EC = ["--population", "4", "--eval-members", "1", "--max-steps", "5", "--neurons", "16", "--workers", "0",
           "--generations", "1"]
TINY_PPO = ["--method", "sg-ppo", "--neurons", "16", "--ppo-envs", "2", "--ppo-steps", "32", "--ppo-window", "8",
            "--ppo-minibatch", "4", "--ppo-epochs", "1", "--eval-members", "1", "--max-steps", "20", "--workers", "0",
            "--generations", "1"]
TINY_NAS = ["--generations", "0", "--population", "2", "--elites", "0", "--cells", "1", "--finalists", "0",
            "--workers", "0", "--quiet"]
TINY_TRAIN = ["--epochs", "1", "--n-train", "8", "--n-test", "8", "--batch-size", "8", "--arch", "csnn-small",
              "--quiet"]




def _files(d: Path) -> dict:
    """Every file of a run directory (recursively) and its bytes."""
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


# ================================================================================================
# run directories
# ================================================================================================

def _rundir(path, **kw):
    kw.setdefault("config", {"seed": 0})
    kw.setdefault("resume_keys", ("seed",))
    with RunDir(path, **kw):
        pass


def _existing_run(root: Path, name: str, config_text: str | None = None) -> Path:
    d = root / name
    d.mkdir(exist_ok=True)
    atomic_savez(d / "checkpoint.npz", {"x": np.zeros(1)})
    if config_text is not None:
        (d / "config.json").write_text(config_text)
    return d


def _flocked(root: Path):
    """A run directory whose ``.lock`` this process holds (as a live writer would)."""
    d = root / "flocked"
    d.mkdir(exist_ok=True)
    fd = os.open(d / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, b"1")
    return d, fd


def _held(root: Path):
    d, fd = _flocked(root)
    try:
        _rundir(d)
    finally:
        os.close(fd)


RUN_DIR_ROWS = [
    ("RunDir out is a file", lambda r: _rundir(_a_file(r)), ValueError, r"^out: .*a_file is a file"),
    ("RunDir out under a file", lambda r: _rundir(_a_file(r) / "sub"), ValueError, r"^out: .*cannot be created"),
    ("RunDir out empty", lambda r: _rundir(""), ValueError, "^out: expected a directory path"),
    ("RunDir out None", lambda r: _rundir(None), ValueError, "^out: expected a directory path"),
    ("RunDir resume and overwrite", lambda r: _rundir(r / "r1", resume=True, overwrite=True), ValueError,
     "^overwrite"),
    ("RunDir resume key not in config", lambda r: _rundir(r / "r2", resume_keys=("lr",)), ValueError,
     "^resume_keys"),
    ("RunDir existing run", lambda r: _rundir(_existing_run(r, "r3")), ValueError, "^out: .*already holds"),
    ("RunDir corrupt config.json", lambda r: _rundir(_existing_run(r, "r4", "{"), resume=True), ValueError,
     r"^resume: .*config.json"),
    ("RunDir deep config.json", lambda r: _rundir(_existing_run(r, "r5", "[" * 9000 + "]" * 9000), resume=True),
     ValueError, r"^resume: .*nested"),
    ("RunDir config.json not an object", lambda r: _rundir(_existing_run(r, "r6", "[1]"), resume=True),
     ValueError, r"^resume: .*JSON object"),
    ("RunDir no config to resume", lambda r: _rundir(_existing_run(r, "r7"), resume=True), ValueError,
     "^resume: .*no config.json"),
    ("RunDir different settings", lambda r: _rundir(_existing_run(r, "r8", '{"seed": 1}'), resume=True),
     ValueError, r"^resume: .*\['seed'\]"),
    ("RunDir lock held", lambda r: _held(r), ValueError, "^out: .*in use by another run"),
]


def _a_file(root: Path) -> Path:
    f = root / "a_file"
    f.write_text("x")
    return f


@pytest.mark.parametrize("call, exc, pattern", [r[1:] for r in RUN_DIR_ROWS], ids=[r[0] for r in RUN_DIR_ROWS])
def test_run_dir_rejects_bad_input(tmp_path, call, exc, pattern):
    with pytest.raises(exc) as info:
        call(tmp_path)
    assert re.search(pattern, str(info.value)), f"{type(info.value).__name__}: {info.value}"
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("cmd, extra", [("train", TINY_TRAIN), ("nas", TINY_NAS), ("ec", TINY_EC)])
def test_empty_out_is_refused_and_writes_nothing(tmp_path, monkeypatch, capsys, cmd, extra):
    monkeypatch.chdir(tmp_path)
    assert cli([cmd, *extra, "--out", ""]) == 2
    assert re.search("^refsnn [a-z]+: error: out: expected a directory path", capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []


_RACE_SCRIPT = textwrap.dedent("""
    import multiprocessing as mp, os, sys
    from refsnn.runs import RunDir

    def contend(out, start, done):
        start.wait()
        try:
            with RunDir(out, config={"seed": 0}, resume_keys=("seed",), resume=True):
                done.wait()     # hold the lock until every contender has tried
                os._exit(0)
        except ValueError:
            done.wait()
            os._exit(1)

    if __name__ == "__main__":
        root, trials, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
        ctx = mp.get_context("fork")
        winners = []
        for t in range(trials):
            out = os.path.join(root, f"t{t}")
            os.makedirs(out)
            with open(os.path.join(out, ".lock"), "w") as f:
                f.write("999999999")     # a stale lock of a dead process: every contender may take it
            start, done = ctx.Barrier(n), ctx.Barrier(n)
            ps = [ctx.Process(target=contend, args=(out, start, done)) for _ in range(n)]
            for p in ps:
                p.start()
            for p in ps:
                p.join()
            winners.append(sum(p.exitcode == 0 for p in ps))
        print(" ".join(map(str, winners)))
""")


def test_lock_race_has_exactly_one_winner(tmp_path):
    """Processes released together onto a directory with a stale lock: exactly one takes it, every trial."""
    res = subprocess.run([sys.executable, "-c", _RACE_SCRIPT, str(tmp_path), "25", "6"], capture_output=True,
                         text=True, timeout=120, cwd=str(REPO))
    assert res.returncode == 0, res.stderr
    winners = [int(w) for w in res.stdout.split()]
    assert len(winners) == 25 and set(winners) == {1}, winners


def test_cli_disk_full_exits_1_and_keeps_the_last_checkpoint(tmp_path, capsys, monkeypatch):
    out = tmp_path / "ec"
    assert cli(["ec", "--out", str(out), *TINY_EC]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != ".lock"}
    capsys.readouterr()
    monkeypatch.setattr(refsnn.io, "os", OsWith(fsync=raise_oserror(errno.ENOSPC)))
    args = ["ec", "--out", str(out), *TINY_EC[:-1], "2", "--resume"]
    assert cli(args) == 1
    line = one_error_line(capsys.readouterr().err, "ec")
    assert "No space left on device" in line and "--resume" in line
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert after == before            # nothing torn, no temporaries, the lock released
    monkeypatch.undo()
    assert cli(args) == 0             # and the run continues once there is space again


@pytest.mark.skipif(ROOT, reason="root bypasses file permissions")
@pytest.mark.parametrize("cmd", ["train", "ec", "nas"])
def test_cli_read_only_out_is_refused_before_any_work(tmp_path, capsys, cmd):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        extra = {"train": TINY_TRAIN, "ec": TINY_EC, "nas": TINY_NAS}[cmd]
        assert cli([cmd, "--out", str(ro / "run"), *extra]) == 2
        assert re.search("^refsnn [a-z]+: error: out: .*cannot be created", capsys.readouterr().err)
        assert cli([cmd, "--out", str(ro), *extra]) == 2
        assert re.search("out: .*not writable", capsys.readouterr().err)
    finally:
        ro.chmod(0o755)


def test_run_dir_not_writable_is_a_value_error_naming_out(tmp_path, monkeypatch):
    import refsnn.runs

    monkeypatch.setattr(refsnn.runs, "os", OsWith(open=raise_oserror(errno.EACCES)))
    with pytest.raises(ValueError, match=r"^out: .* is not writable: Permission denied"):
        _rundir(tmp_path / "run")


def test_ec_without_deterministic_members_writes_strict_json(tmp_path, capsys):
    out = tmp_path / "ec"
    assert cli(["ec", "--out", str(out), *TINY_EC[:2], "--eval-members", "0", *TINY_EC[4:]]) == 0
    assert "final deterministic return -" in capsys.readouterr().out
    text = (out / "summary.json").read_text()

    def strict(c):
        raise ValueError(f"not JSON: {c}")
    s = json.loads(text, parse_constant=strict)
    assert s["final_deterministic_return"] is None and s["best_deterministic_return"] is None
    for name in ("config.json", "environment.json"):
        json.loads((out / name).read_text(), parse_constant=strict)


# ================================================================================================
# checkpoints
# ================================================================================================

RESUME = {"ec": ["ec", *TINY_EC[:-1], "2"], "es": ["ec", "--method", "es", *TINY_EC[:-1], "2"],
          "sg-ppo": ["ec", *TINY_PPO[:-1], "2"], "train": ["train", *TINY_TRAIN[:1], "2", *TINY_TRAIN[2:]],
          "nas": ["nas", "--generations", "2", *TINY_NAS[2:]]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> SimpleNamespace:
    """One finished tiny run of each kind (ec, es, sg-ppo: 1 generation; train: 1 epoch; nas: 1 generation;
    ec50: 3 generations of ec with 50-step episodes, whose return depends on the deployed bits)."""
    root = tmp_path_factory.mktemp("runs")
    first = {"ec": ["ec", *TINY_EC], "es": ["ec", "--method", "es", *TINY_EC], "sg-ppo": ["ec", *TINY_PPO],
             "train": ["train", *TINY_TRAIN], "nas": ["nas", "--generations", "1", *TINY_NAS[2:]],
             "ec50": ["ec", *TINY_EC[:-1], "3", "--max-steps", "50"]}   # rho has moved: the network acts
    for name, argv in first.items():
        assert cli([*argv, "--out", str(root / name)]) == 0, name
    return SimpleNamespace(root=root)


def _corrupt_copy(runs, kind: str, dest: Path, edit) -> Path:
    """A copy of the ``kind`` run in ``dest`` with ``edit(checkpoint arrays)`` applied (the arrays
    dict is edited in place; ``nas``: ``edit(search state dict, timing dict)``)."""
    shutil.copytree(runs.root / kind, dest)
    if kind == "nas":
        state, timing = (json.loads((dest / f).read_text()) for f in ("search_state.json", "timing.json"))
        edit(state, timing)
        (dest / "search_state.json").write_text(json.dumps(state))
        (dest / "timing.json").write_text(json.dumps(timing))
    else:
        z = load_npz(dest / "checkpoint.npz")
        edit(z)
        np.savez(dest / "checkpoint.npz", **z)
    return dest


def _set(key, value, dtype=None):
    def edit(z):
        a = np.asarray(z[key])
        z[key] = np.full(a.shape, value, dtype or (np.float64 if isinstance(value, float) else a.dtype))
    return edit


def _meta(**over):
    def edit(z):
        m = json.loads(str(z["meta_json"]))
        m.update(over)
        z["meta_json"] = np.array(json.dumps(m))
    return edit


def _history_cell(col: int, value: float):
    def edit(z):
        z["history"] = z["history"].copy()
        z["history"][0, col] = value
    return edit


def _nas(**over):
    def edit(state, timing):
        for k, v in over.items():
            if k == "timing":
                timing["0"]["elapsed_seconds"] = v
            else:
                state[k] = v(state[k]) if callable(v) else v
    return edit


CHECKPOINT_ROWS = [
    # refsnn ec --method ec
    ("ec opt.v negative", "ec", lambda z: z.update({"opt.v.h": -np.abs(z["opt.v.h"]) - 1}), "opt.v.h"),
    ("ec opt.t -7", "ec", _set("opt.t", -7), "opt.t"),
    ("ec opt.t 1.5", "ec", _set("opt.t", 1.5), "opt.t"),
    ("ec opt.t not the generation", "ec", _set("opt.t", 5), "opt.t"),
    ("ec generation 1.5", "ec", _set("generation", 1.5), "generation|opt.t"),
    ("ec norm.count -5", "ec", _set("norm.count", -5.0), "norm.count"),
    ("ec norm.count fractional", "ec", _set("norm.count", 2.5), "norm.count"),
    ("ec norm.m2 negative", "ec", _set("norm.m2", -1.0), "norm.m2"),
    ("ec norm.mean infinite", "ec", _set("norm.mean", np.inf), "norm.mean"),
    ("ec env_steps -100", "ec", _set("env_steps", -100), "env_steps"),
    ("ec env_steps not the history's", "ec", _set("env_steps", 7), "env_steps"),
    ("ec best_det NaN", "ec", _set("best_det", np.nan), "best_det"),
    ("ec best_det 9999", "ec", _set("best_det", 9999.0), "best_det"),
    ("ec wall_seconds -1", "ec", _set("wall_seconds", -1.0), "wall_seconds"),
    ("ec rho NaN", "ec", _set("param.h", np.nan), "param.h"),
    ("ec rho above 1", "ec", _set("param.out", 1.5), "param.out"),
    ("ec rho as bool", "ec", lambda z: z.update({"param.in": z["param.in"] > 0.5}), "param.in"),
    ("ec rho as text", "ec", lambda z: z.update({"param.in": np.array("0.5")}), "param.in"),
    ("ec opt.m misshapen", "ec", lambda z: z.update({"opt.m.h": z["opt.m.h"][:-1]}), "opt.m.h"),
    ("ec history generation column", "ec", _history_cell(0, 7.0), "history"),
    ("ec history steps/s NaN", "ec", _history_cell(7, np.nan), "history steps_per_s"),
    ("ec history rows", "ec", lambda z: z.update({"history": np.vstack([z["history"]] * 2)}), "history"),
    ("ec opt.t missing", "ec", lambda z: z.pop("opt.t"), "opt.t"),
    # --method es
    ("es opt.v negative", "es", lambda z: z.update({"opt.v.h": z["opt.v.h"] - 1.0}), "opt.v.h"),
    ("es weights infinite", "es", _set("param.h", -np.inf), "param.h"),
    # --method sg-ppo
    ("sg-ppo opt.t -7", "sg-ppo", _set("opt.t", -7), "opt.t"),
    ("sg-ppo log_std 1e6", "sg-ppo", _set("param.log_std", 1e6), "param.log_std"),
    ("sg-ppo weights beyond float32", "sg-ppo", _set("param.W_h", 1e300), "param.W_h"),
    ("sg-ppo rnorm.count -1", "sg-ppo", _set("rnorm.count", -1.0), "rnorm.count"),
    ("sg-ppo rnorm.m2 NaN", "sg-ppo", _set("rnorm.m2", np.nan), "rnorm.m2"),
    ("sg-ppo generation -1", "sg-ppo", _set("generation", -1), "generation"),
    # refsnn train
    ("train optim v negative", "train", lambda z: z.update({"optim/v/fc.w": z["optim/v/fc.w"] - 1}), "optim/v/fc.w"),
    ("train optim m NaN", "train", _set("optim/m/fc.b", np.nan, np.float32), "optim/m/fc.b"),
    ("train optim steps 1.5", "train", _set("optim/steps", 1.5), "optim/steps"),
    ("train optim steps -3", "train", _set("optim/steps", -3), "optim/steps"),
    ("train weights infinite", "train", _set("param/fc.w", np.inf, np.float32), "param/fc.w"),
    ("train running_var negative", "train",
     lambda z: z.update({k: -np.ones_like(z[k]) for k in z if k.endswith("running_var")}), "running_var"),
    ("train meta epoch -1", "train", _meta(epoch=-1), "epoch"),
    ("train meta epoch 1.5", "train", _meta(epoch=1.5), "epoch"),
    ("train meta history short", "train", _meta(history=[]), "history"),
    ("train meta wall_seconds -5", "train", _meta(wall_seconds=-5), "wall_seconds"),
    # refsnn nas
    ("nas generation -1", "nas", _nas(generation=-1), "generation"),
    ("nas generation 1.5", "nas", _nas(generation=1.5), "generation"),
    ("nas fitness NaN", "nas", _nas(fitness=lambda f: ["nan"] + f[1:]), "fitness"),
    ("nas history cut", "nas", _nas(history=lambda h: h[:1]), "history"),
    ("nas population cut", "nas", _nas(population=lambda p: p[:1], fitness=lambda f: f[:1]), "population"),
    ("nas timing negative", "nas", _nas(timing=-1.0), "timing.json"),
]


@pytest.mark.parametrize("kind, edit, key", [r[1:] for r in CHECKPOINT_ROWS], ids=[r[0] for r in CHECKPOINT_ROWS])
def test_corrupt_checkpoint_is_refused_before_anything_is_written(runs, tmp_path, capsys, kind, edit, key):
    d = _corrupt_copy(runs, kind, tmp_path / "run", edit)
    before = _files(d)
    capsys.readouterr()
    argv = RESUME[kind]
    assert cli([*argv, "--out", str(d), "--resume"]) == 2
    line = one_error_line(capsys.readouterr().err, argv[0])
    ck = "search_state.json" if kind == "nas" else "checkpoint.npz"
    assert str(d) in line and (ck in line or "timing.json" in line) and re.search(key, line), line
    assert _files(d) == before    # nothing written: no NaN checkpoint, no metrics row, not even config.json


def _ec_state(method="ec"):
    s = make_strategy(method, 3, 2, neurons=4, population=4, eval_members=1, lr=0.1, eps=1e-3,
                      gradient="natural", sigma=0.3, weight_decay=0.1, fitness_shift=0.0, seed=0)
    st = s.init()
    return s, {**st.state_arrays(), "generation": np.array(0)}


def _with(d, **kv):
    return {**d, **{k.replace("__", "."): v for k, v in kv.items()}}


S, SA = _ec_state()
PPO_ARRAYS = ppo.init_state(ppo.sg_config(8), 3, 2, 0).state_arrays()
STATE_API_ROWS = [
    ("from_state_arrays opt.v negative", lambda: S.from_state_arrays(_with(SA, opt__v__h=-np.ones((4, 4))))
     , "^opt.v.h: expected values >= 0"),
    ("from_state_arrays opt.t 1.5", lambda: S.from_state_arrays(_with(SA, opt__t=np.array(1.5))), "^opt.t"),
    ("from_state_arrays opt.t -1", lambda: S.from_state_arrays(_with(SA, opt__t=np.array(-1))), "^opt.t"),
    ("from_state_arrays rho NaN", lambda: S.from_state_arrays(_with(SA, param__h=np.full((4, 4), np.nan))),
     "^param.h"),
    ("from_state_arrays generation float", lambda: S.from_state_arrays(_with(SA, generation=np.array(0.5))),
     "^generation"),
    ("from_state_arrays generation missing", lambda: S.from_state_arrays(
        {k: v for k, v in SA.items() if k != "generation"}), "^generation: missing"),
    ("adam_load_state_arrays v NaN", lambda: adam_load_state_arrays(
        {"opt.m.a": np.zeros(2), "opt.v.a": np.array([0.0, np.nan]), "opt.t": np.array(1)}, {"a": (2,)}),
     "^opt.v.a"),
    ("RunningNorm count negative", lambda: RunningNorm(2).load_state_arrays(
        {"norm.count": np.array(-5.0), "norm.mean": np.zeros(2), "norm.m2": np.zeros(2)}), "^norm.count"),
    ("RunningNorm wrong length", lambda: RunningNorm(2).load_state_arrays(
        {"norm.count": np.array(1.0), "norm.mean": np.zeros(3), "norm.m2": np.zeros(3)}), "^norm.mean"),
    ("ppo state log_std huge", lambda: ppo.state_from_arrays(ppo.sg_config(8), 3, 2, _with(
        PPO_ARRAYS, param__log_std=np.full(2, 1e6, np.float32))), "^param.log_std"),
    ("ppo state rnorm missing", lambda: ppo.state_from_arrays(ppo.sg_config(8), 3, 2, {
        k: v for k, v in PPO_ARRAYS.items() if k != "rnorm.m2"}), "^rnorm.m2: missing"),
]


@pytest.mark.parametrize("call, pattern", [r[1:] for r in STATE_API_ROWS], ids=[r[0] for r in STATE_API_ROWS])
def test_restoring_state_arrays_checks_every_array(call, pattern):
    with pytest.raises(ValueError) as info:
        call()
    assert re.search(pattern, str(info.value)), str(info.value)


_MUTATIONS = ("float32", "int64", "bool", "text", "add axis", "drop element", "negate", "nan", "inf", "missing",
              "extra key")


def _mutate(z: dict, key: str, how: str) -> None:
    a = np.asarray(z[key])
    if how == "missing":
        del z[key]
    elif how == "extra key":
        z[key + ".extra"] = np.ones(3)
    elif how == "text":
        z[key] = np.array("0")
    elif how in ("float32", "int64", "bool"):
        z[key] = a.astype(how)
    elif how == "add axis":
        z[key] = a[None]
    elif how == "drop element":
        z[key] = a.reshape(-1)[:-1] if a.size else a
    elif a.dtype.kind in "iuf" and a.size:
        b = a.astype(np.float64)
        b.reshape(-1)[0] = {"negate": -abs(b.reshape(-1)[0]) - 1.0, "nan": np.nan, "inf": np.inf}[how]
        z[key] = b


def _fuzz_resume(runs, kind: str, key_index: int, how: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = load_npz(runs.root / kind / "checkpoint.npz")
        keys = sorted(k for k in base if k not in ("config_json", "format", "meta_json", "optim/kind"))
        key = keys[key_index % len(keys)]
        d = _corrupt_copy(runs, kind, Path(tmp) / "run", lambda z: _mutate(z, key, how))
        before = _files(d)
        buf_out, buf_err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(buf_out), contextlib.redirect_stderr(buf_err):
            status = cli([*RESUME[kind], "--out", str(d), "--resume"])
        err = buf_err.getvalue()
        if status == 0:   # resumed: nothing non-finite reached the new checkpoint or the new metrics row
            z = load_npz(d / "checkpoint.npz")
            for k, a in z.items():
                if k.startswith(("param", "opt", "optim", "norm", "buffer")) and np.asarray(a).dtype.kind in "iuf":
                    assert np.isfinite(np.asarray(a, np.float64)).all(), (key, how, k)
            last = (d / "metrics.csv").read_text().splitlines()[-1]
            assert "nan" not in last and "inf" not in last, (key, how, last)
        else:
            assert status == 2, (key, how, err)
            line = one_error_line(err, RESUME[kind][0])
            assert str(d / "checkpoint.npz") in line, line
            assert any(k in line for k in set(base) | {key}), (key, how, line)
            assert _files(d) == before


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hst.integers(0, 100), hst.sampled_from(_MUTATIONS))
def test_ec_checkpoint_mutations_fuzz(runs, key_index, how):
    """A mutated EC checkpoint resumes correctly or gives one clean error naming the file and the key."""
    _fuzz_resume(runs, "ec", key_index, how)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hst.integers(0, 100), hst.sampled_from(_MUTATIONS))
def test_train_checkpoint_mutations_fuzz(runs, key_index, how):
    """The same for a ``refsnn train`` checkpoint."""
    _fuzz_resume(runs, "train", key_index, how)


# ================================================================================================
# budgets
# ================================================================================================

@pytest.mark.parametrize("kind, flag", [("ec", ["--max-env-steps", "10"]), ("ec", ["--max-minutes", "1e-9"]),
                                        ("sg-ppo", ["--max-env-steps", "10"])])
def test_resumed_run_with_a_spent_budget_stops_at_once(runs, tmp_path, capsys, kind, flag):
    d = tmp_path / "run"
    shutil.copytree(runs.root / kind, d)
    before = _files(d)
    capsys.readouterr()
    assert cli([*RESUME[kind][:-1], "5", *flag, "--out", str(d), "--resume"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^nothing to do: .*>= " + flag[0], out, re.M), out
    assert not re.search(r"^(gen|iter) ", out, re.M) and "resuming" not in out, out
    assert _files(d) == before


# ================================================================================================
# replays
# ================================================================================================

def _deployed_edit(key, fn):
    def edit(z):
        z[key] = fn(z[key])
    return edit


REPLAY_ROWS = [
    ("inverted bits.out", _deployed_edit("bits.out", lambda b: (255 - b).astype(np.uint8)), "is not the det_return"),
    ("det_return 9999", _deployed_edit("det_return", lambda v: np.array(9999.0)), "metrics.csv"),
    ("generation changed", _deployed_edit("generation", lambda g: np.array(2, g.dtype)), "generation 2"),
]


@pytest.mark.parametrize("edit, pattern", [r[1:] for r in REPLAY_ROWS], ids=[r[0] for r in REPLAY_ROWS])
def test_replay_that_differs_from_the_record_fails(runs, tmp_path, capsys, edit, pattern):
    d = tmp_path / "run"
    shutil.copytree(runs.root / "ec50", d)
    capsys.readouterr()
    assert cli(["play", str(d), "--replay"]) == 0           # the record itself replays exactly
    z = load_npz(d / "deployed.npz")
    edit(z)
    np.savez(d / "deployed.npz", **z)
    capsys.readouterr()
    assert cli(["play", str(d), "--replay"]) == 1
    line = one_error_line(capsys.readouterr().err, "play")
    assert "replay differs from the record" in line and re.search(pattern, line), line


# ================================================================================================
# signals and worker processes
# ================================================================================================

def _stop_with_signal(argv: list[str], sig: int, after: str, tmp_path: Path, *, group: bool):
    """Start ``refsnn ARGV``, wait for the output line starting with ``after``, send ``sig`` (to the
    whole process group with ``group``, as a terminal's Ctrl-C does); returns ``(status, stderr)``."""
    p = subprocess.Popen([sys.executable, "-m", "refsnn", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True, cwd=str(REPO))
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = p.stdout.readline()
            if not line or line.startswith(after):
                break
        assert line.startswith(after), p.stderr.read()
        (os.killpg if group else os.kill)(p.pid, sig)
        status = p.wait(timeout=60)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    return status, p.stderr.read()


SIGNAL_ROWS = [
    ("ec Ctrl-C with workers", ["ec", *TINY_EC[:-3], "2", "--generations", "1000", "--max-steps", "50"],
     signal.SIGINT, "gen    2", "checkpoint.npz"),
    ("ec SIGTERM", ["ec", *TINY_EC[:-1], "1000"], signal.SIGTERM, "gen    2", "checkpoint.npz"),
    ("train SIGTERM", ["train", "--epochs", "1000", *TINY_TRAIN[2:-1]], signal.SIGTERM, "epoch   2",
     "checkpoint.npz"),
    ("train Ctrl-C", ["train", "--epochs", "1000", *TINY_TRAIN[2:-1]], signal.SIGINT, "epoch   2", "checkpoint.npz"),
    ("nas Ctrl-C with workers", ["nas", "--generations", "1000", *TINY_NAS[2:-3], "--workers", "2"], signal.SIGINT,
     "gen   2", "search_state.json"),
    ("nas SIGTERM", ["nas", "--generations", "1000", *TINY_NAS[2:-1]], signal.SIGTERM, "gen   2",
     "search_state.json"),
]


_SLOW_SIGNAL_ROWS = ("ec Ctrl-C with workers",)   # ~10 s: two workers start and load the kernels


@pytest.mark.parametrize("argv, sig, after, checkpoint", [
    pytest.param(*r[1:], id=r[0], marks=[pytest.mark.slow] if r[0] in _SLOW_SIGNAL_ROWS else []) for r in SIGNAL_ROWS])
def test_signal_stops_a_run_with_one_line(tmp_path, argv, sig, after, checkpoint):
    out = tmp_path / "run"
    status, err = _stop_with_signal([*argv, "--out", str(out)], int(sig), after, tmp_path, group=sig == signal.SIGINT)
    assert status == 128 + sig, err
    lines = err.splitlines()
    assert len(lines) == 1 and "Traceback" not in err and "SpawnProcess" not in err, err
    assert re.match(rf"refsnn {argv[0]}: stopped by signal {int(sig)} \({sig.name}\); .*--resume", lines[0]), err
    assert not (out / ".lock").exists()
    if checkpoint.endswith(".npz"):    # the last completed step, whole
        assert len(load_npz(out / checkpoint)) > 3
    else:
        assert json.loads((out / checkpoint).read_text())["generation"] >= 1


_POOL_SCRIPT = """
import threading, time
from refsnn.parallel import make_executor
if __name__ == "__main__":
    if {thread}:  # made from a thread that ends: only the watchdog thread can notice the parent's death
        box = []
        th = threading.Thread(target=lambda: box.append(make_executor(2)))
        th.start(); th.join()
        ex = box[0]
    else:
        ex = make_executor(2)
    list(ex.map(time.sleep, [0.01, 0.01]))
    futures = [ex.submit(time.sleep, 300) for _ in range(2)]
    print("ready", flush=True)
    time.sleep(300)
"""


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def _children(pid: int) -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit() and (_stat(int(d)) or [0, 0])[1] == str(pid)]


def _alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[0] != "Z"     # a zombie nobody reaps is dead


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
@pytest.mark.parametrize("thread", [False, True], ids=["main-thread pool", "pool made in a thread"])
def test_workers_and_resource_tracker_die_with_a_killed_parent(thread):
    p = subprocess.Popen([sys.executable, "-c", _POOL_SCRIPT.format(thread=thread)], stdout=subprocess.PIPE,
                         text=True, start_new_session=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        kids = _children(p.pid)
        cmdlines = [Path(f"/proc/{k}/cmdline").read_bytes() for k in kids]
        assert sum(b"spawn_main" in c for c in cmdlines) == 2, cmdlines
        assert sum(b"resource_tracker" in c for c in cmdlines) == 1, cmdlines
    except BaseException:
        p.kill()
        raise
    _kill_and_expect_no_orphans(p, kids)


def _kill_and_expect_no_orphans(p, kids) -> None:
    """kill -9 the process ``p``; every one of ``kids`` must be gone within 10 s (survivors are killed)."""
    t0 = time.monotonic()
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    while time.monotonic() - t0 < 10 and any(_alive(k) for k in kids):
        time.sleep(0.05)
    left = [k for k in kids if _alive(k)]
    for k in left:
        os.kill(k, signal.SIGKILL)
    assert not left, f"orphans alive 10 s after kill -9 of their parent: {left}"


def test_refsnn_ec_workers_die_with_it(tmp_path):
    """kill -9 of a running ``refsnn ec`` with 2 workers leaves no process behind."""
    p = subprocess.Popen([sys.executable, "-m", "refsnn", "ec", "--env", "Hopper-v5", "--population", "4",
                          "--eval-members", "1", "--max-steps", "50", "--neurons", "16", "--generations", "1000",
                          "--workers", "2", "--out", str(tmp_path / "ec")], stdout=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (p.stdout.readline().startswith("gen ")):
            pass
        kids = _children(p.pid)
        assert len(kids) >= 3, kids  # 2 workers + the resource tracker
    except BaseException:
        p.kill()
        raise
    _kill_and_expect_no_orphans(p, kids)


def test_a_stop_wrapped_by_native_code_is_still_a_clean_stop():
    """A signal that lands while a Numba kernel returns surfaces as ``SystemError: ... returned a
    result with an exception set`` caused by the stop: still one clean line, no "while stopping"."""
    from refsnn import runs

    try:
        try:
            raise runs._Stopped(15)
        except BaseException as stop:
            raise SystemError("CPUDispatcher(<function _spmm>) returned a result with an exception set") from stop
    except BaseException as wrapped:
        assert runs._caused_by_stop(wrapped)
    assert not runs._caused_by_stop(ValueError("a real error while stopping"))
