"""``refsnn nas`` (SPEC §6.5, §8): outputs, progress lines, resume == uninterrupted, training hook."""
from __future__ import annotations

import csv
import json
from dataclasses import replace

import numpy as np
import pytest

from refsnn.nas.cli import NASArgs, demo_nas, search

TINY = NASArgs(generations=2, population=4, cells=2, channels=4, fitness_batch=8, fitness_batches=1,
               seed=3, quiet=True)
TIME_COLS = ("generation_seconds", "elapsed_seconds")


def _rows(path):
    with open(path) as f:
        return [{k: v for k, v in r.items() if k not in TIME_COLS} for r in csv.DictReader(f)]


def test_tiny_run_writes_everything_and_resume_matches(tmp_path):
    lines = []
    s_full = search(replace(TINY, out=str(tmp_path / "full")), log=lines.append)
    full = tmp_path / "full"
    for name in ("search_state.json", "metrics.csv", "summary.json", "fitness.png", "best_genotype.json",
                 "best_graph.json", "config.json"):
        assert (full / name).is_file(), name
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

    # interrupted after generation 1, then resumed to 2
    part = tmp_path / "part"
    search(replace(TINY, out=str(part), generations=1))
    with pytest.raises(ValueError, match="resume"):
        search(replace(TINY, out=str(part)))
    with pytest.raises(ValueError, match="different settings"):
        search(replace(TINY, out=str(part), channels=5, resume=True))
    s_res = search(replace(TINY, out=str(part), resume=True))
    for k in ("best_genotype", "best_fitness", "generations", "n_evaluations", "frac_inhibitory"):
        assert s_res[k] == s_full[k], k
    assert _rows(part / "metrics.csv") == rows
    st_full = json.loads((full / "search_state.json").read_text())
    st_part = json.loads((part / "search_state.json").read_text())
    assert st_full == st_part


def test_train_the_winner_through_refsnn_train(tmp_path):
    a = replace(TINY, generations=1, out=str(tmp_path / "r"), train_epochs=1, train_subset=64,
                train_batch_size=32)
    s = search(a)
    assert 0.0 <= s["test_accuracy"] <= 1.0 and s["train_epochs"] == 1
    assert s["wall_seconds"] >= s["search_seconds"]
    t = json.loads((tmp_path / "r" / "train" / "summary.json").read_text())
    assert t["test_accuracy"] == s["test_accuracy"] and t["arch"].startswith("genotype:")
    # the trained network is the genotype's
    from refsnn.nas.graph import decode, n_params
    assert t["n_params"] == n_params(decode(s["best_genotype"], (1, 28, 28), 4, 10))
    # resuming a finished run changes nothing
    s2 = search(replace(a, resume=True))
    assert s2["test_accuracy"] == s["test_accuracy"] and s2["best_genotype"] == s["best_genotype"]


def test_cli_entry_and_demo(tmp_path, capsys):
    from refsnn.cli import main

    rc = main(["nas", "--generations", "1", "--population", "3", "--cells", "1", "--channels", "2",
               "--fitness-batch", "4", "--fitness-batches", "1", "--fitness", "logdet",
               "--out", str(tmp_path / "c")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "gen   1/1" in out and "best genotype" in out

    d = demo_nas(tmp_path / "demo", quiet=True)
    assert d["generations"] == 3 and len(d["best_genotype"]) == 2 * 9 + 2
    assert np.isfinite(d["best_fitness"])


def test_worker_processes_give_the_same_search(tmp_path):
    s0 = search(replace(TINY, generations=1, out=str(tmp_path / "w0")))
    s2 = search(replace(TINY, generations=1, out=str(tmp_path / "w2"), workers=2))
    assert s0["best_genotype"] == s2["best_genotype"] and s0["best_fitness"] == s2["best_fitness"]
    assert (tmp_path / "w0" / "search_state.json").read_text() == (tmp_path / "w2" / "search_state.json").read_text()
