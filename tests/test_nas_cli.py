"""``refsnn nas`` (SPEC §6.5, §8): outputs, progress lines, resume == uninterrupted (also of a moved run
directory), refusal and overwrite, finalists, training hook, worker independence; the examples built on it."""
from __future__ import annotations

import csv
import json
import math
import shutil
import statistics
from dataclasses import replace

import numpy as np
import pytest

from refsnn.commands.config import build_parser, parse
from refsnn.commands.nas import CONFIG, FINALIST_COLUMNS, NASConfig, demo_nas, main
from refsnn.commands.nas import run as nas_run

TINY = NASConfig(generations=2, population=4, cells=2, channels=4, fitness_batch=8, fitness_batches=1,
                 finalists=0, workers=0, seed=3, quiet=True)
TIME_COLS = ("generation_seconds", "elapsed_seconds", "epoch_seconds")


def _rows(path):
    with open(path) as f:
        return [{k: v for k, v in r.items() if k not in TIME_COLS} for r in csv.DictReader(f)]


def _state(path):
    return json.loads((path / "search_state.json").read_text())


def test_tiny_run_writes_everything_and_resume_matches(tmp_path):
    lines = []
    s_full = nas_run(replace(TINY, out=str(tmp_path / "full"), quiet=False), log=lines.append)
    full = tmp_path / "full"
    for name in ("search_state.json", "metrics.csv", "summary.json", "fitness.png", "best_genotype.json",
                 "best_graph.json", "config.json", "environment.json", "timing.json"):
        assert (full / name).is_file(), name
    assert not (full / ".lock").exists()
    assert (full / "fitness.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summ = json.loads((full / "summary.json").read_text())
    assert summ == json.loads(json.dumps(s_full))
    assert summ["generations"] == 2 and isinstance(summ["best_genotype"], list)
    assert all(type(v) is int for v in summ["best_genotype"]) and len(summ["best_genotype"]) == 20
    assert isinstance(summ["best_fitness"], float) and summ["wall_seconds"] > 0
    assert "test_accuracy" not in summ
    assert all(not isinstance(v, (dict, list)) or k == "best_genotype" for k, v in summ.items())  # flat
    best = json.loads((full / "best_genotype.json").read_text())
    assert best["flat"] == summ["best_genotype"] and best["channels"] == 4
    rows = _rows(full / "metrics.csv")
    assert [r["generation"] for r in rows] == ["0", "1", "2"]
    gen_lines = [l for l in lines if l.startswith("gen ")]
    assert len(gen_lines) == 3 and all("eta" in l and "elapsed" in l and "unique" in l for l in gen_lines)
    quiet = []
    nas_run(replace(TINY, out=str(tmp_path / "q"), generations=0), log=quiet.append)
    assert quiet == []  # --quiet: no progress lines

    # interrupted after generation 1, then resumed to 2
    part = tmp_path / "part"
    nas_run(replace(TINY, out=str(part), generations=1))
    with pytest.raises(ValueError, match="different settings"):
        nas_run(replace(TINY, out=str(part), channels=5, resume=True))
    s_res = nas_run(replace(TINY, out=str(part), resume=True))
    for k in ("best_genotype", "best_fitness", "generations", "n_evaluations", "frac_inhibitory"):
        assert s_res[k] == s_full[k], k
    assert _rows(part / "metrics.csv") == rows
    assert _state(part) == _state(full)
    assert set(json.loads((part / "timing.json").read_text())) == {"0", "1", "2"}


def test_refuses_a_run_directory_without_resume_or_overwrite(tmp_path):
    out = tmp_path / "r"
    s1 = nas_run(replace(TINY, out=str(out), generations=1))
    before = (out / "search_state.json").read_text()
    with pytest.raises(ValueError, match="--resume.*--overwrite"):
        nas_run(replace(TINY, out=str(out)))
    assert (out / "search_state.json").read_text() == before and not (out / ".lock").exists()
    with pytest.raises(ValueError, match="overwrite"):
        NASConfig(resume=True, overwrite=True)
    # --overwrite starts again: the same result as a fresh run, the old run's extra files gone
    (out / "finalists").mkdir()
    (out / "finalists.csv").write_text("stale")
    s2 = nas_run(replace(TINY, out=str(out), generations=1, seed=4, overwrite=True))
    fresh = nas_run(replace(TINY, out=str(tmp_path / "fresh"), generations=1, seed=4))
    assert _state(out) == _state(tmp_path / "fresh") and s2["best_genotype"] == fresh["best_genotype"]
    assert s2["seed"] == 4 != s1["seed"] and not (out / "finalists").exists() and not (out / "finalists.csv").exists()
    assert json.loads((out / "config.json").read_text())["seed"] == 4


def test_resume_of_a_moved_run_directory(tmp_path):
    full = tmp_path / "full"
    nas_run(replace(TINY, out=str(full)))
    nas_run(replace(TINY, out=str(tmp_path / "a"), generations=1))
    shutil.move(tmp_path / "a", tmp_path / "b")
    s = nas_run(replace(TINY, out=str(tmp_path / "b"), resume=True))
    assert _state(tmp_path / "b") == _state(full)
    assert _rows(tmp_path / "b" / "metrics.csv") == _rows(full / "metrics.csv")
    assert s["best_genotype"] == json.loads((full / "summary.json").read_text())["best_genotype"]


def test_train_the_winner_through_refsnn_train(tmp_path):
    a = replace(TINY, generations=1, out=str(tmp_path / "r"), train_epochs=1, train_subset=64,
                train_batch_size=32)
    s = nas_run(a)
    assert 0.0 <= s["test_accuracy"] <= 1.0 and s["train_epochs"] == 1
    assert s["wall_seconds"] >= s["search_seconds"]
    t = json.loads((tmp_path / "r" / "train" / "summary.json").read_text())
    assert t["test_accuracy"] == s["test_accuracy"] and t["arch"].startswith("genotype:")
    # the trained network is the genotype's
    from refsnn.nas.graph import decode, n_params
    assert t["n_params"] == n_params(decode(s["best_genotype"], (1, 28, 28), 4, 10))
    # resuming a finished run changes nothing
    s2 = nas_run(replace(a, resume=True))
    assert s2["test_accuracy"] == s["test_accuracy"] and s2["best_genotype"] == s["best_genotype"]
    # moved, then resumed with one more epoch: the training continues from its checkpoint in the new place
    shutil.move(tmp_path / "r", tmp_path / "moved")
    s4 = nas_run(replace(a, out=str(tmp_path / "moved"), resume=True, train_epochs=2))
    two = nas_run(replace(a, out=str(tmp_path / "two"), train_epochs=2))
    assert s4["train_epochs"] == 2 and s4["test_accuracy"] == two["test_accuracy"]
    m = _rows(tmp_path / "moved" / "train" / "metrics.csv")
    assert [r["epoch"] for r in m] == ["1", "2"] and m == _rows(tmp_path / "two" / "train" / "metrics.csv")
    # --train-channels: the same winner, trained wider
    s3 = nas_run(replace(a, out=str(tmp_path / "w"), train_channels=6))
    t3 = json.loads((tmp_path / "w" / "train" / "summary.json").read_text())
    assert s3["best_genotype"] == s["best_genotype"] and t3["arch"].endswith("@6") and s3["train_channels"] == 6
    assert t3["n_params"] == n_params(decode(s["best_genotype"], (1, 28, 28), 6, 10)) > t["n_params"]


def test_finalists_are_chosen_on_validation_and_resume(tmp_path, monkeypatch):
    a = replace(TINY, generations=1, out=str(tmp_path / "f"), finalists=3, finalist_epochs=1, train_subset=60,
                val=20, train_batch_size=20)
    s = nas_run(a)
    rows = list(csv.DictReader(open(tmp_path / "f" / "finalists.csv")))
    assert list(rows[0]) == list(FINALIST_COLUMNS)
    assert [r["rank"] for r in rows] == ["1", "2", "3"] and s["n_finalists"] == 3
    fits = [float(r["fitness"]) for r in rows]
    assert fits == sorted(fits, reverse=True) and rows[0]["genotype"] == s["fittest_genotype_str"]
    accs = [float(r["val_accuracy"]) for r in rows]
    kept = rows[s["finalist_rank"] - 1]
    assert float(kept["val_accuracy"]) == max(accs) == pytest.approx(s["finalist_val_accuracy"], abs=5e-5)
    assert s["finalist_rank"] == 1 + accs.index(max(accs))  # ties: the fitter
    assert kept["genotype"] == s["best_genotype_str"] and "validation" in s["selected_by"]
    t = json.loads((tmp_path / "f" / "finalists" / "01" / "train" / "summary.json").read_text())
    assert t["n_train"] == 40 and t["n_test"] == 20 and t["evaluated_on"].startswith("validation")
    # resuming a finished run, also after moving it, trains nothing again and keeps the choice
    monkeypatch.setattr("refsnn.commands.nas.train", lambda *x, **k: pytest.fail("retrained a finished finalist"))
    s2 = nas_run(replace(a, resume=True))
    assert s2["best_genotype"] == s["best_genotype"] and s2["finalist_rank"] == s["finalist_rank"]
    shutil.move(tmp_path / "f", tmp_path / "g")
    s3 = nas_run(replace(a, out=str(tmp_path / "g"), resume=True))
    assert s3["best_genotype"] == s["best_genotype"] and s3["finalist_rank"] == s["finalist_rank"]


def test_finalists_on_a_worker_pool_match_in_process(tmp_path):
    # --workers 2 trains the finalists in the command's process pool; the choice and every
    # finalist's figures must equal the in-process run's (only the wall times differ)
    base = replace(TINY, generations=1, finalists=2, finalist_epochs=1, train_subset=40, val=20,
                   train_batch_size=20)
    s0 = nas_run(replace(base, out=str(tmp_path / "w0")))
    s2 = nas_run(replace(base, out=str(tmp_path / "w2"), workers=2))

    def rows(d):
        return [{k: v for k, v in r.items() if k != "seconds"}
                for r in csv.DictReader(open(tmp_path / d / "finalists.csv"))]

    assert rows("w2") == rows("w0") and len(rows("w0")) == 2
    assert s2["best_genotype"] == s0["best_genotype"] and s2["finalist_rank"] == s0["finalist_rank"]


def test_cli_entry_config_and_demo(tmp_path, capsys):
    from refsnn.cli import main as cli_main

    assert CONFIG is NASConfig
    text = build_parser(NASConfig, prog="refsnn nas").format_help()
    for h in ("--finalist-epochs", "--overwrite", "--resume", "bie-max", "(default: 80)"):
        assert h in text
    argv = ["--generations", "1", "--population", "3", "--cells", "1", "--channels", "2", "--finalists", "0",
            "--fitness-batch", "4", "--fitness-batches", "1", "--fitness", "logdet"]
    cfg = parse(NASConfig, argv + ["--out", str(tmp_path / "p")])
    assert (cfg.generations, cfg.fitness, cfg.max_neurons, cfg.overwrite) == (1, "logdet", 30000, False)
    assert main(cfg) == 0
    assert "gen   1/1" in capsys.readouterr().out
    with pytest.raises(ValueError, match="elites"):
        parse(NASConfig, ["--population", "2", "--elites", "2"])
    rc = cli_main(["nas"] + argv + ["--out", str(tmp_path / "c")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "gen   1/1" in out and "best genotype" in out

    d = demo_nas(tmp_path / "demo", quiet=True)
    assert d["generations"] == 3 and len(d["best_genotype"]) == 2 * 9 + 2
    assert np.isfinite(d["best_fitness"])
    assert demo_nas(tmp_path / "demo", quiet=True)["best_genotype"] == d["best_genotype"]  # runs again


def test_worker_processes_give_the_same_search(tmp_path):
    s0 = nas_run(replace(TINY, generations=1, out=str(tmp_path / "w0")))
    s2 = nas_run(replace(TINY, generations=1, out=str(tmp_path / "w2"), workers=2))
    assert s0["best_genotype"] == s2["best_genotype"] and s0["best_fitness"] == s2["best_fitness"]
    assert (tmp_path / "w0" / "search_state.json").read_text() == (tmp_path / "w2" / "search_state.json").read_text()


def _load_example(name):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_budget_comparison_example_tiny_and_rerun_reuses(tmp_path, capsys):
    """examples/nas_budget_comparison.py end to end on a tiny budget: the three contestants are trained
    with one recipe, the figures are the winner's and the fixed network's accuracy at their better
    learning rate and the random genotypes' median; a second call reuses every finished training."""
    nas_run(replace(TINY, out=str(tmp_path / "nas")))
    ex = _load_example("nas_budget_comparison")
    argv = ["--nas-dir", str(tmp_path / "nas"), "--out", str(tmp_path / "cmp"), "--cells", "2", "--channels", "4",
            "--epochs", "1", "--n-random", "3", "--n-train", "64", "--n-test", "40", "--workers", "0",
            "--lrs", "4e-3,2e-2", "--seeds", "0"]
    r1 = ex.main(argv)
    out = tmp_path / "cmp"
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["group"] for r in rows] == ["winner", "winner", "fixed", "fixed", "random", "random", "random"]
    assert len({r["genotype"] for r in rows if r["group"] == "random"}) == 3
    acc = {r["name"]: float(r["test_accuracy"]) for r in rows}
    assert r1["winner_accuracy"] == max(acc["winner_lr0.004_s0"], acc["winner_lr0.02_s0"])
    assert r1["fixed_accuracy"] == max(acc["fixed_lr0.004_s0"], acc["fixed_lr0.02_s0"])
    assert r1["random_median_accuracy"] == sorted(acc[f"random0{i}"] for i in range(3))[1]
    assert r1["n_test"] == 40 and (out / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    # paired by seed: one seed gives one difference and no standard error
    assert r1["paired_differences"] == [r1["winner_accuracy"] - r1["fixed_accuracy"]]
    assert r1["paired_difference_se"] is None
    md = (out / "comparison.md").read_text().splitlines()
    assert md[2].endswith(f"| {100 * r1['winner_accuracy']:.2f} % |") and f"{100 * r1['fixed_accuracy']:.2f} %" in md[3]
    assert f"{100 * r1['random_median_accuracy']:.2f} %" in md[4] and "on 40 test images" in md[-1]
    # the search's own fitness marks which random genotypes it could have picked
    fin = [float(r["test_accuracy"]) for r in rows
           if r["group"] == "random" and math.isfinite(float(r["search_fitness"]))]
    assert r1["n_random_valid"] == len(fin) and math.isfinite(float(rows[0]["search_fitness"]))
    if fin:
        assert r1["random_valid_median_accuracy"] == statistics.median(fin)
    assert json.loads((out / "comparison.json").read_text())["winner_genotype"] == \
        json.loads((tmp_path / "nas" / "best_genotype.json").read_text())["flat"]
    capsys.readouterr()
    r2 = ex.main(argv)
    assert capsys.readouterr().out.count("(reused)") == 7
    assert {k: v for k, v in r2.items() if k != "wall_seconds"} == {k: v for k, v in r1.items() if k != "wall_seconds"}
    with pytest.raises(ValueError, match="different training"):
        ex.main(argv + ["--batch-size", "16"])
    # --train-channels: winner and random genotypes trained wider, the fixed network's runs reused
    capsys.readouterr()
    r3 = ex.main(argv + ["--train-channels", "6"])
    assert capsys.readouterr().out.count("(reused)") == 2 and r3["fixed_accuracy"] == r1["fixed_accuracy"]
    assert r3["train_channels"] == 6 and r3["n_params"]["winner"][0] > r1["n_params"]["winner"][0]
    assert (out / "comparison_c6.json").is_file() and len(list((out / "runs").glob("winner_*_c6_lr*_s0"))) == 2
    # a second seed: seed 0's trainings reused, the paired difference gets a standard error over seeds
    capsys.readouterr()
    r4 = ex.main(argv[:-1] + ["0,1"])
    assert capsys.readouterr().out.count("(reused)") == 7
    assert r4["paired_differences"][0] == r1["paired_differences"][0] and len(r4["paired_differences"]) == 2
    assert r4["paired_difference_se"] == pytest.approx(statistics.stdev(r4["paired_differences"]) / math.sqrt(2))
    # the image bootstrap ran on per-image re-evaluations that matched every summary (else it raises)
    assert r4["paired_difference_image_se"] > 0.0


def test_paired_image_bootstrap_matches_the_analytic_standard_error():
    """Resampling images: the standard error of a mean per-image difference is std(d)/sqrt(n)."""
    ex = _load_example("nas_budget_comparison")
    rng = np.random.default_rng(5)
    w = [rng.random(1000) < 0.985 for _ in range(3)]
    f = [rng.random(1000) < 0.98 for _ in range(3)]
    d = np.mean([a.astype(float) - b for a, b in zip(w, f)], axis=0)
    se = ex._paired_image_bootstrap(w, f, n_boot=20000)
    assert se == pytest.approx(d.std() / np.sqrt(len(d)), rel=0.03)
    assert ex._paired_image_bootstrap(w, w) == 0.0  # the same network twice: no difference at all


@pytest.fixture(scope="module")
def tiny_cv(tmp_path_factory):
    """One tiny run of examples/nas_crossval.py (2 folds, 1 epoch), shared by the tests of it and of
    examples/nas_noise_energy.py (which only reads it): ``(tmp_path, argv, result)``."""
    tmp_path = tmp_path_factory.mktemp("cv")
    tiny = ["--generations", "1", "--population", "4", "--cells", "2", "--channels", "4", "--finalists", "0",
            "--train-subset", "48"]
    argv = ["--folds", "2", "--epochs", "1", "--fixed-arch", "c4-p", "--workers", "0",
            "--out", str(tmp_path / "cv")] + tiny
    return tmp_path, argv, _load_example("nas_crossval").main(argv)


def test_crossval_example_tiny_reuses_and_pairs_per_image(tiny_cv, capsys):
    """examples/nas_crossval.py on a tiny budget: per fold a search on that fold's training images
    and a fixed network, both re-evaluated image by image; the pooled figures are the per-image
    means over all folds' test images; a second call reuses every run; the official split stands in
    for the last fold only if its settings match."""
    ex = _load_example("nas_crossval")
    tmp_path, argv, r = tiny_cv
    assert [f["fold"] for f in r["folds"]] == [0, 1] and [f["official"] for f in r["folds"]] == [False, True]
    assert all(f["n"] == 2500 for f in r["folds"]) and r["pooled"]["n"] == 5000
    for f in r["folds"]:
        s = json.loads((tmp_path / "cv" / f"fold{f['fold']}" / "nas" / "train" / "summary.json").read_text())
        assert f["winner"] == s["test_accuracy"] and s["n_train"] == 48
        assert json.loads((tmp_path / "cv" / f"fold{f['fold']}" / "nas" / "config.json").read_text())["data"] == \
            f"mnist5k[fold={f['fold']}/2]"
    p = r["pooled"]
    assert p["winner"] == pytest.approx(np.mean([f["winner"] for f in r["folds"]]))
    assert p["diff"] == pytest.approx(p["winner"] - p["fixed"])
    assert p["only_winner"] == sum(f["only_winner"] for f in r["folds"]) and 0.0 <= p["mcnemar_p"] <= 1.0
    assert (tmp_path / "cv" / "crossval.png").read_bytes()[:4] == b"\x89PNG"
    assert "| all 5000 images |" in (tmp_path / "cv" / "crossval.md").read_text()
    capsys.readouterr()
    r2 = ex.main(argv)
    assert capsys.readouterr().out.count("(reused)") == 4 and r2["pooled"] == r["pooled"]
    # the last fold of 2 is not mnist5k's official split (4,000 / 1,000), so no run may stand in for it
    with pytest.raises(SystemExit, match="not its official split"):
        ex.main(argv + ["--official-nas", str(tmp_path / "cv" / "fold1" / "nas")])


def test_paired_stats():
    from refsnn.stats import paired_mean_se, paired_stats
    w = np.array([1, 1, 0, 1, 0, 1], bool)
    f = np.array([1, 0, 0, 1, 1, 0], bool)
    s = paired_stats(w, f)
    d = w.astype(float) - f
    assert (s["only_winner"], s["only_fixed"], s["n"]) == (2, 1, 6)
    assert s["diff"] == pytest.approx(d.mean()) and s["se_images"] == pytest.approx(d.std(ddof=1) / np.sqrt(6))
    assert s["mcnemar_p"] == pytest.approx(1.0)  # 2 vs 1 discordant: no evidence either way
    assert paired_stats(np.ones(30, int), np.r_[np.zeros(10, int), np.ones(20, int)])["mcnemar_p"] == \
        pytest.approx(2 * 0.5 ** 10)  # 10 vs 0 discordant
    assert paired_mean_se(d) == pytest.approx((d.mean(), d.std(ddof=1) / np.sqrt(6)))
    assert _load_example("nas_crossval").paired_stats is paired_stats
    with pytest.raises(ValueError, match="hit vectors"):
        paired_stats(w, f[:3])
    with pytest.raises(ValueError, match="fixed: a 1-D vector of 0/1"):
        paired_stats(w, f * 2)
    with pytest.raises(ValueError, match="d: a finite"):
        paired_mean_se([1.0])


def test_noise_energy_example_on_a_tiny_crossval(tiny_cv, capsys):
    """examples/nas_noise_energy.py re-evaluates nas_crossval.py's checkpoints: its clean row is the
    cross-validation's pooled comparison, each noisy accuracy is evaluate_with_noise of that fold's
    network with the fold index as noise seed, the drop difference is the difference of the
    differences, the cost is energy_report's; a second call reuses the cached evaluations."""
    from refsnn.commands.train import load_run
    from refsnn.snn.energy import energy_report, evaluate_with_noise

    tmp_path, _, r_cv = tiny_cv
    ex = _load_example("nas_noise_energy")
    argv = ["--cv-dir", str(tmp_path / "cv"), "--sigmas", "0.2,1.5", "--workers", "0"]
    r = ex.main(argv)
    rows = r["noise"]
    assert [x["sigma"] for x in rows] == [0.0, 0.2, 1.5] and all(x["n"] == 5000 for x in rows)
    assert {k: rows[0][k] for k in r_cv["pooled"] if k != "se_folds"} == \
        {k: v for k, v in r_cv["pooled"].items() if k != "se_folds"}
    runs = {(k, "winner"): tmp_path / "cv" / f"fold{k}" / "nas" / "train" for k in (0, 1)}
    runs.update({(k, "fixed"): tmp_path / "cv" / f"fold{k}" / "fixed_c4-p" for k in (0, 1)})
    acc = {}
    for (k, kind), run in runs.items():
        net, ds, cfg = load_run(run)
        acc[k, kind] = evaluate_with_noise(net, ds, 0.2, seed=k, batch_size=cfg.eval_batch_size)
        assert r["cost_per_fold"][k][kind] == pytest.approx(energy_report(net, ds, batch_size=cfg.eval_batch_size))
    assert rows[1]["winner"] == pytest.approx((acc[0, "winner"] + acc[1, "winner"]) / 2)
    assert rows[1]["fixed"] == pytest.approx((acc[0, "fixed"] + acc[1, "fixed"]) / 2)
    for row in rows[1:]:
        assert row["drop_diff"] == pytest.approx(row["diff"] - rows[0]["diff"])
        assert row["drop_diff_se"] > 0.0
    assert "deciding" not in r  # 0.3 was not asked for
    e = [c["winner"]["energy_per_sample_nj"] for c in r["cost_per_fold"]]
    assert r["cost_mean"]["winner"]["energy_per_sample_nj"] == pytest.approx(np.mean(e))
    out = tmp_path / "cv" / "noise_energy"
    assert (out / "noise_energy.png").read_bytes()[:4] == b"\x89PNG"
    md = (out / "noise_energy.md").read_text()
    assert "| 1.5 |" in md and "| mean |" in md
    capsys.readouterr()
    r2 = ex.main(argv)
    assert capsys.readouterr().out.count("(reused)") == 4
    assert r2["noise"] == rows and r2["cost_per_fold"] == r["cost_per_fold"]
    r3 = ex.main(argv[:-3] + ["0.3", "--workers", "0"])  # other sigmas: evaluated afresh
    assert capsys.readouterr().out.count("(reused)") == 0 and r3["noise"][0] == rows[0]
    assert r3["deciding"]["sigma"] == 0.3
    for bad in ("0.3,0.2", "0,0.1", "x"):
        with pytest.raises(SystemExit, match="--sigmas"):
            ex.main(argv[:-3] + [bad])
    with pytest.raises(SystemExit, match="--cv-dir"):
        ex.main(["--cv-dir", str(tmp_path / "nothing")])


def test_noise_energy_random_control(tmp_path):
    """The random-genotype control of examples/nas_noise_energy.py: run directories found from
    nas_budget_comparison.py's results.csv; per sigma the medians (all, and those with a finite search
    fitness) beside the official fold's networks; refused when tested on other images."""
    ex = _load_example("nas_noise_energy")
    rows = [("random", "1 0 2", "A", "0.01", "0", "3.5"), ("random", "2 2 1", "B", "0.01", "0", "inf"),
            ("fixed", "csnn", "", "0.01", "0", ""), ("random", "0 0 1", "C", "0.01", "0", "1.0")]
    (tmp_path / "results.csv").write_text("group,genotype,genotype_str,lr,seed,search_fitness\n"
                                          + "".join(",".join(r) + "\n" for r in rows))
    with pytest.raises(SystemExit, match="no finished training"):
        ex._random_runs(tmp_path)
    for key in ("102", "221", "001"):
        d = tmp_path / "runs" / f"random_{key}_lr0.01_s0"
        d.mkdir(parents=True)
        (d / "summary.json").write_text("{}")
    runs = ex._random_runs(tmp_path)
    assert [r["key"] for r in runs] == ["102", "221", "001"] and [r["genotype"] for r in runs] == ["A", "B", "C"]
    assert runs[1]["search_fitness"] == math.inf
    hit = lambda *v: np.array(v, bool)  # noqa: E731
    res = {(4, "winner"): {"clean": hit(1, 1, 1, 1), "noisy": np.stack([hit(1, 1, 0, 0)]), "test_sha256": "x"},
           (4, "fixed"): {"clean": hit(1, 1, 1, 0), "noisy": np.stack([hit(0, 0, 0, 0)]), "test_sha256": "x"},
           (4, "random00"): {"clean": hit(1, 0, 0, 0), "noisy": np.stack([hit(1, 0, 0, 0)]), "test_sha256": "x"},
           (4, "random01"): {"clean": hit(1, 1, 0, 0), "noisy": np.stack([hit(1, 1, 1, 0)]), "test_sha256": "x"},
           (4, "random02"): {"clean": hit(1, 1, 1, 0), "noisy": np.stack([hit(0, 0, 0, 0)]), "test_sha256": "x"}}
    c = ex._random_control(res, runs, 4, [0.5])
    assert c["n_valid"] == 2 and c["n_test"] == 4 and [r["sigma"] for r in c["rows"]] == [0.0, 0.5]
    r0, r1 = c["rows"]
    assert (r0["winner"], r0["fixed"], r0["random"], r0["random_median"]) == (1.0, 0.75, [0.25, 0.5, 0.75], 0.5)
    assert r0["random_valid_median"] == 0.5 and (r0["random_min"], r0["random_max"]) == (0.25, 0.75)  # A, C
    assert (r1["winner"], r1["fixed"], r1["random_median"], r1["random_valid_median"]) == (0.5, 0.0, 0.25, 0.125)
    res[4, "random01"]["test_sha256"] = "y"
    with pytest.raises(SystemExit, match="not tested on fold 4"):
        ex._random_control(res, runs, 4, [0.5])
