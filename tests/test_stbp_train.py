"""SPEC §4.1, §8: ``refsnn train`` — outputs, exact resume, bad input; the MSE-NAS graph builder."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from refsnn.commands.train import TrainConfig, train
from refsnn.io import load_npz
from refsnn.snn.archs import build_arch, from_graph
from refsnn.snn.loss import loss_and_grad
from tests.strategies import rng_from

TINY = dict(arch="c4-p", timesteps=2, batch_size=16, n_train=48, n_test=20, eval_batch_size=10,
            quiet=True)


def test_tiny_run_writes_outputs(tmp_path):
    s = train(TrainConfig(epochs=2, out=str(tmp_path), **TINY))
    for f in ("metrics.csv", "summary.json", "curve.png", "checkpoint.npz", "config.json"):
        assert (tmp_path / f).is_file(), f
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary == json.loads(json.dumps(s))
    assert all(not isinstance(v, (dict, list)) for v in summary.values())  # flat
    assert 0.0 <= summary["test_accuracy"] <= 1.0
    assert summary["epochs"] == 2 and summary["wall_seconds"] > 0 and summary["spikes_per_sample"] >= 0
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # provenance: the versions and thread count this run used, read from the running process
    import numba
    import scipy

    import refsnn
    env = json.loads((tmp_path / "environment.json").read_text())
    assert env["format"] == "refsnn.environment/1" and env["refsnn"] == refsnn.__version__
    assert env["numpy"] == np.__version__ and env["numba"] == numba.__version__
    assert env["scipy"] == scipy.__version__
    assert env["numba_threads"] == numba.get_num_threads() and env["cpu_count"] >= 1
    assert all(not isinstance(v, (dict, list)) for v in env.values())  # flat


def test_resume_equals_uninterrupted(tmp_path):
    full = train(TrainConfig(epochs=3, out=str(tmp_path / "a"), **TINY))
    train(TrainConfig(epochs=3, out=str(tmp_path / "b"), stop_after=1, **TINY))
    part = train(TrainConfig(epochs=3, out=str(tmp_path / "b"), resume=True, stop_after=1, **TINY))
    assert part["epochs"] == 2 and not part["complete"]
    resumed = train(TrainConfig(epochs=3, out=str(tmp_path / "b"), resume=True, **TINY))
    assert resumed["complete"]
    a = load_npz(tmp_path / "a" / "checkpoint.npz")
    b = load_npz(tmp_path / "b" / "checkpoint.npz")
    assert sorted(a) == sorted(b)
    for k in a:
        if k != "meta_json":
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    ra = list(csv.DictReader((tmp_path / "a" / "metrics.csv").open()))
    rb = list(csv.DictReader((tmp_path / "b" / "metrics.csv").open()))
    for x, y in zip(ra, rb):
        for k in ("loss", "train_accuracy", "test_accuracy", "spikes_per_sample", "lr"):
            assert x[k] == y[k], k
    assert full["test_accuracy"] == resumed["test_accuracy"]
    # resuming a finished run does nothing and reports the same result; other settings are refused
    again = train(TrainConfig(epochs=3, out=str(tmp_path / "b"), resume=True, **TINY))
    assert again["test_accuracy"] == resumed["test_accuracy"] and again["epochs"] == 3
    with pytest.raises(ValueError, match="lr"):
        train(TrainConfig(epochs=4, out=str(tmp_path / "b"), resume=True, **{**TINY, "lr": 0.1}))


def test_cli_train_and_errors(tmp_path, capsys):
    from refsnn.cli import main

    rc = main(["train", "--arch", "c4-p", "--timesteps", "2", "--epochs", "1", "--batch-size", "16",
               "--n-train", "32", "--n-test", "16", "--loss", "tet", "--label-smoothing", "0.1",
               "--optimizer", "sgd", "--lr", "0.05", "--neuron", "spikingjelly", "--dtype", "float64",
               "--out", str(tmp_path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "epoch   1/1" in out and "test_acc" in out and "eta" in out
    assert main(["train", "--arch", "x9", "--out", str(tmp_path / "x")]) == 2
    assert "arch" in capsys.readouterr().err
    assert main(["train", "--data", "nope", "--out", str(tmp_path / "y")]) == 2
    assert "spec" in capsys.readouterr().err
    # a finished run is not overwritten by accident: --resume or --overwrite (not both)
    tiny = ["--arch", "c4-p", "--epochs", "1", "--n-train", "32", "--n-test", "16"]
    assert main(["train", *tiny, "--out", str(tmp_path)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["train", *tiny, "--out", str(tmp_path), "--resume", "--overwrite"]) == 2
    assert "overwrite" in capsys.readouterr().err
    assert main(["train", *tiny, "--out", str(tmp_path), "--overwrite"]) == 0
    assert "epoch   1/1" in capsys.readouterr().out
    assert main(["train", *tiny, "--out", str(tmp_path), "--resume", "--lr", "0.1"]) == 2
    assert "different settings for ['lr']" in capsys.readouterr().err
    # --resume with fewer --epochs than the checkpoint has run is refused before config.json changes
    two = ["--arch", "c4-p", "--n-train", "32", "--n-test", "16", "--out", str(tmp_path / "e")]
    assert main(["train", *two, "--epochs", "2"]) == 0
    capsys.readouterr()
    cfg_before = (tmp_path / "e" / "config.json").read_text()
    assert main(["train", *two, "--epochs", "1", "--resume"]) == 2
    assert "epochs: " in capsys.readouterr().err
    assert (tmp_path / "e" / "config.json").read_text() == cfg_before
    assert main(["train", "--arch", "c4-p", "--lr", "1e-3", "--min-lr", "1e-2", "--out", str(tmp_path / "m")]) == 2
    assert "min_lr" in capsys.readouterr().err
    # --resume in an empty directory starts from scratch (so one command line both starts and continues)
    assert main(["train", *tiny, "--out", str(tmp_path / "z"), "--resume"]) == 0


def test_build_arch_shapes():
    net = build_arch("c4-p-c8-p-f16", input_shape=(2, 9, 9), num_classes=3, timesteps=2,
                     rng=rng_from(0))
    x = rng_from(1).normal(size=(2, 5, 2, 9, 9)).astype(np.float32)
    assert net.forward(x).shape == (2, 5, 3)
    with pytest.raises(ValueError, match="arch"):
        build_arch("c4-q", input_shape=(1, 8, 8), num_classes=3, timesteps=2, rng=rng_from(0))


@pytest.mark.parametrize("flat", [
    [2, 1, 1, 2, 0, 0, 0, 0, 0, 1, 2, 1, 0, 0, 0, 0, 0, 0, 2, 1],       # the docs/msenas.md example
    [4, 1, 2, 1, 1, 2, 1, 1, 1, 5, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 2],
])
def test_from_msenas_graph(flat):
    """Every MSE-NAS graph description builds, runs and back-propagates (SPEC §6.2–6.3)."""
    from refsnn.nas.graph import decode

    g = decode(flat, (1, 8, 8), 4, 10)
    net = from_graph(g, timesteps=2, rng=rng_from(0), dtype=np.float64)
    x = np.broadcast_to(rng_from(1).normal(0.5, 1, size=(3, 1, 8, 8)), (2, 3, 1, 8, 8))
    logits = net.forward(x)
    assert logits.shape == (2, 3, 10)
    _, d, _ = loss_and_grad(logits, np.array([0, 1, 2]))
    net.backward(d)
    assert len(net.gradients()) == len(net.parameters())
    pops = [n["name"] for n in g["nodes"] if n["op"] == "lif"]
    for p in pops:
        assert net[p].last_spikes.shape[:2] == (2, 3)
    inhibitory = [e for e in g["edges"] if e["sign"] < 0]
    for e in inhibitory:
        assert net[e["name"] + "/act"].sign == -1


def test_msenas_network_relaxed_gradients_match_finite_differences():
    """The network of a decoded genotype (inhibitory edge, cross edges with pooling) in relaxed
    mode has the gradients of central finite differences."""
    from refsnn.kernels.lif import LIFParams
    from refsnn.nas.graph import decode

    g = decode([2, 1, 1, 2, 0, 0, 0, 0, 0, 1, 2, 1, 0, 0, 0, 0, 0, 0, 2, 1], (1, 4, 4), 2, 3)
    net = from_graph(g, timesteps=2, rng=rng_from(3), dtype=np.float64,
                     neuron=LIFParams(surrogate="sigmoid", detach_reset=False))
    net.relaxed = True
    x = rng_from(4).normal(0.5, 1, size=(2, 2, 1, 4, 4))
    y = np.array([0, 2])

    def f():
        return loss_and_grad(net.forward(x), y, loss="tet", label_smoothing=0.1)[0]

    _, d, _ = loss_and_grad(net.forward(x), y, loss="tet", label_smoothing=0.1)
    net.backward(d)
    grads = dict(net.gradients())
    pick = rng_from(5)
    for name, p in net.parameters():
        for flat in pick.choice(p.size, size=min(p.size, 3), replace=False):
            idx = np.unravel_index(flat, p.shape)
            old = p[idx]
            p[idx] = old + 1e-6
            lp = f()
            p[idx] = old - 1e-6
            lm = f()
            p[idx] = old
            assert (lp - lm) / 2e-6 == pytest.approx(grads[name][idx], rel=1e-5, abs=1e-9), f"{name}{idx}"


def test_set_threads():
    import numba

    from refsnn.tuning import set_threads

    before = numba.get_num_threads()
    assert isinstance(set_threads(1), bool)
    assert numba.get_num_threads() == 1
    numba.set_num_threads(before)
    with pytest.raises(ValueError, match="threads"):
        set_threads(0)


@pytest.mark.parametrize("preset", [None, "7"])
def test_two_threads_make_idle_openblas_threads_sleep(preset):
    """``set_threads(n > 1)`` makes every OpenBLAS already loaded (NumPy's, SciPy's) re-read
    ``OPENBLAS_THREAD_TIMEOUT`` = 4 (or the user's value), and its GEMMs still compute the same."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    if preset is not None:
        env["OPENBLAS_THREAD_TIMEOUT"] = preset
    code = ("import numpy as np, scipy.linalg; a = np.random.default_rng(0).random((300, 300)); b = a @ a; "
            "from refsnn.tuning import set_threads, blas_thread_timeouts; t0 = blas_thread_timeouts(); "
            "set_threads(2); assert np.array_equal(a @ a, b) or np.allclose(a @ a, b); "
            "print(t0[0], *blas_thread_timeouts())")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    before, *after = (int(v) for v in out.stdout.split())
    want = int(preset or 4)
    assert before == (want if preset else 0) and len(after) >= 2 and set(after) == {want}


def test_blas_threads_reach_every_openblas_in_the_process():
    """``threads(n)`` sets NumPy's OpenBLAS and SciPy's (which Numba's ``np.dot`` runs on) and
    restores both (threadpoolctl reports every BLAS loaded)."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    import numba
    import scipy.linalg  # noqa: F401  (loads SciPy's OpenBLAS, as Numba's np.dot does)

    from refsnn.tuning import threads

    def counts():
        return {i["filepath"]: i["num_threads"] for i in threadpoolctl.threadpool_info()
                if i.get("internal_api") == "openblas"}

    before = counts()
    assert before, "no OpenBLAS found by threadpoolctl"
    with threads(1):
        assert set(counts().values()) == {1}
        assert numba.get_num_threads() == 1
    assert counts() == before


@pytest.mark.parametrize("env, want", [({}, "1000"), ({"GOMP_SPINCOUNT": "77"}, "77")])
def test_two_threads_make_idle_numba_threads_sleep_unless_the_user_chose(env, want):
    """``set_threads(n > 1)`` before Numba starts its threads sets ``GOMP_SPINCOUNT`` (OpenMP's default
    spinning took the cores from the BLAS threads); a value the user set is kept; the LIF kernel runs."""
    code = ("from refsnn.tuning import set_threads; set_threads(2); import os, numpy as np; "
            "from refsnn.kernels.lif import PRESETS, lif_forward; "
            "lif_forward(np.ones((2, 3, 64), np.float32), PRESETS['msenas']); print(os.environ['GOMP_SPINCOUNT'])")
    base = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    out = subprocess.run([sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == want


def test_train_on_user_datasets(tmp_path):
    """cifar10:DIR (python batches) and events:DIR run end to end (tiny files, one epoch)."""
    import pickle

    from refsnn.datasets import make_events, save_event_dir

    rng = np.random.default_rng(0)
    cdir = tmp_path / "cifar"
    cdir.mkdir()
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        n = 4
        d = {b"batch_label": b"b", b"labels": [int(v) for v in rng.integers(0, 10, n)],
             b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
             b"filenames": [b"f%d.png" % i for i in range(n)]}
        (cdir / name).write_bytes(pickle.dumps(d, protocol=2))
    s = train(TrainConfig(data=f"cifar10:{cdir}", epochs=1, out=str(tmp_path / "c"),
                          **{**TINY, "n_train": None, "n_test": None}))
    assert s["n_train"] == 20 and s["n_test"] == 4

    def sample(label):
        n = 50
        return make_events(rng.integers(0, 6, n), rng.integers(0, 5, n), np.sort(rng.integers(0, 1000, n)),
                           rng.integers(0, 2, n)), label

    edir = save_event_dir(tmp_path / "ev", {"train": [sample(i % 3) for i in range(12)],
                                            "test": [sample(i % 3) for i in range(6)]}, (5, 6))
    s = train(TrainConfig(data=f"events:{edir}", epochs=1, out=str(tmp_path / "e"),
                          **{**TINY, "n_train": None, "n_test": None}))
    assert s["n_train"] == 12 and s["n_test"] == 6 and s["epochs"] == 1


def test_n_val_evaluates_on_held_out_training_samples(tmp_path):
    s = train(TrainConfig(epochs=1, out=str(tmp_path / "v"), **{**TINY, "n_val": 16}))
    assert s["n_train"] == 48 - 16 and s["n_test"] == 16
    assert s["evaluated_on"].startswith("validation") and s["data"] == "mnist5k"
    with pytest.raises(ValueError, match="n_val"):
        train(TrainConfig(epochs=1, out=str(tmp_path / "w"), **{**TINY, "n_val": 48}))


@pytest.mark.slow
def test_demo_train(tmp_path):
    from refsnn.commands.train import demo_train

    s = demo_train(tmp_path, quiet=True)
    assert s["test_accuracy"] > 0.9 and s["epochs"] == 3


def test_train_genotype_arch(tmp_path):
    """``--arch genotype:PATH@C`` trains the MSE-NAS network of a genotype file."""
    p = tmp_path / "g.json"
    p.write_text(json.dumps([2, 1, 1, 2, 0, 0, 0, 0, 0, 1, 2, 1, 0, 0, 0, 0, 0, 0, 2, 1]))
    s = train(TrainConfig(epochs=1, out=str(tmp_path / "run"), **{**TINY, "arch": f"genotype:{p}@2"}))
    assert s["epochs"] == 1 and s["n_params"] > 0
    assert s["architecture"] == "genotype[2 1 1 2 0 0 0 0 0 1 2 1 0 0 0 0 0 0 2 1]@2"


def test_a_moved_run_resumes_and_loads_without_its_genotype_file(tmp_path):
    """Runs are relocatable: the network is recorded by content, so moving the run directory and
    the genotype file (to a new path given on --resume) changes nothing, and load_run rebuilds the
    network after the genotype file is gone."""
    import shutil

    from refsnn.commands.train import load_run, per_sample_hits

    p = tmp_path / "g.json"
    p.write_text(json.dumps([2, 1, 1, 2, 0, 0, 0, 0, 0, 1, 2, 1, 0, 0, 0, 0, 0, 0, 2, 1]))
    cfg = {**TINY, "arch": f"genotype:{p}@2"}
    full = train(TrainConfig(epochs=2, out=str(tmp_path / "a"), **cfg))
    train(TrainConfig(epochs=2, out=str(tmp_path / "b"), stop_after=1, **cfg))
    shutil.move(tmp_path / "b", tmp_path / "moved")
    shutil.move(p, tmp_path / "g2.json")
    resumed = train(TrainConfig(epochs=2, out=str(tmp_path / "moved"), resume=True,
                                **{**cfg, "arch": f"genotype:{tmp_path / 'g2.json'}@2"}))
    assert resumed["test_accuracy"] == full["test_accuracy"] and resumed["loss"] == full["loss"]
    (tmp_path / "g2.json").unlink()
    net, ds, _ = load_run(tmp_path / "moved")
    assert net.n_params() == full["n_params"]
    assert per_sample_hits(tmp_path / "moved").mean() == full["test_accuracy"]
    with pytest.raises(ValueError, match="architecture"):  # another genotype is another run
        q = tmp_path / "g3.json"
        q.write_text(json.dumps([1, 1, 1, 2, 0, 0, 0, 0, 0, 1, 2, 1, 0, 0, 0, 0, 0, 0, 2, 1]))
        train(TrainConfig(epochs=2, out=str(tmp_path / "moved"), resume=True, **{**cfg, "arch": f"genotype:{q}@2"}))


def test_genotype_file_eval_noise_and_energy_in_summary(tmp_path):
    """``refsnn train --genotype FILE --eval-noise SIGMA``: the genotype's network, the noisy test
    accuracy, and SOPs/MACs/energy per sample in the flat summary."""
    from refsnn.cli import main

    p = tmp_path / "g.json"
    p.write_text(json.dumps([2, 1, 1, 2, 0, 0, 0, 0, 0, 1, 2, 1, 0, 0, 0, 0, 0, 0, 2, 1]))
    out = tmp_path / "run"
    rc = main(["train", "--genotype", str(p), "--epochs", "1", "--timesteps", "2", "--batch-size", "16",
               "--n-train", "48", "--n-test", "20", "--eval-batch-size", "10", "--eval-noise", "0.5",
               "--out", str(out), "--quiet"])
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["arch"] == f"genotype:{p}"
    assert s["eval_noise_sigma"] == 0.5 and 0.0 <= s["noisy_test_accuracy"] <= 1.0
    assert s["sops_per_sample"] >= 0 and s["macs_per_sample"] > 0
    assert s["energy_per_sample_nj"] == pytest.approx(
        (0.9 * s["sops_per_sample"] + 4.6 * s["macs_per_sample"]) / 1e3)
    assert main(["train", "--genotype", str(tmp_path / "missing.json"), "--out", str(out)]) == 2
    with pytest.raises(ValueError, match="eval_noise"):
        train(TrainConfig(epochs=1, out=str(out), eval_noise=-1.0, **TINY))


def test_load_run_reproduces_the_reported_accuracy_image_by_image(tmp_path):
    """``load_run``: the run's dataset (same take/holdout) and its last checkpoint's network."""
    from refsnn.commands.train import load_run, per_sample_hits
    from refsnn.snn.trainer import evaluate_per_sample

    s = train(TrainConfig(epochs=1, out=str(tmp_path / "v"), **{**TINY, "n_val": 16}))
    net, ds, cfg = load_run(tmp_path / "v")
    assert cfg.n_val == 16 and cfg.arch == TINY["arch"] and len(ds.y_test) == 16 and not net.training
    hits, _ = evaluate_per_sample(net, ds, "test", cfg.eval_batch_size)
    assert hits.mean() == s["test_accuracy"]
    np.testing.assert_array_equal(per_sample_hits(tmp_path / "v"), hits)
    with pytest.raises(FileNotFoundError, match="checkpoint.npz"):
        (tmp_path / "v" / "checkpoint.npz").unlink()
        load_run(tmp_path / "v")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_run(tmp_path / "nothing")


@pytest.mark.parametrize("threads", [1, 2])
def test_same_thread_count_gives_the_same_bits(tmp_path, threads):
    """SPEC §1: bit-identical for a given number of BLAS/Numba threads (not promised across counts:
    a multithreaded GEMM may split its sums differently)."""
    runs = [train(TrainConfig(epochs=1, out=str(tmp_path / f"r{i}"), threads=threads, **TINY)) for i in range(2)]
    a, b = (load_npz(tmp_path / f"r{i}" / "checkpoint.npz") for i in range(2))
    for k in a:
        if k != "meta_json":
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert runs[0]["test_accuracy"] == runs[1]["test_accuracy"]
