"""``examples/authors_ec.py``: the EC authors' own training loop (their ``ec.py``, unmodified) run on a
CPU with refsnn's metrics columns (marker ``original``; :mod:`original_support` says when it skips).

* The env-step counter (:class:`CountingEnv` around the env that ``ec._runnner_run`` steps) counts
  exactly the lock-step iterations of the authors' ``while_loop``: on a stand-in env whose episodes
  all last ``L`` steps, one generation is ``L`` iterations, and the next one ``L`` again.
* A two-generation Brax v1 hopper run (population 16, 2 eval members): ``metrics.csv`` has
  refsnn's columns, 2 rows, finite returns, increasing env steps that are multiples of the
  population and match ``summary.json``'s iterations; ``summary.json`` and the PNG are written.

Both run in subprocesses: the authors' ``ec.py`` sets JAX's PRNG for the whole process, the example
must run in float32, and ``original_support.load`` imports their code once per process
(``test_original_ec`` does so in this one).
"""
from __future__ import annotations

import csv
import importlib.metadata
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import original_support as support
import pytest

from refsnn.commands.ec_progress import COLUMNS

pytestmark = [pytest.mark.original, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "authors_ec.py"


def _require_authors_code() -> Path:
    """The authors' checkout (``REFSNN_EC_REPO``) with JAX/flax/optax/chex and Brax v1 installed, else
    skip (or fail with ``REFSNN_REQUIRE_ORIGINAL=1``)."""
    repo = os.environ.get(support.ENV_REPO, "")
    if not repo:
        support.require_or_skip(f"{support.ENV_REPO} is not set (the path of the EC authors' checkout)")
    path = Path(repo).resolve()
    if not (path / "ec.py").is_file() or not (path / "networks" / "conn_snn.py").is_file():
        support.require_or_skip(f"{support.ENV_REPO}={repo}: no ec.py and networks/conn_snn.py there")
    for name in ("jax", "flax", "optax", "chex", "brax"):
        if importlib.util.find_spec(name) is None:
            support.require_or_skip(f"{name} is not installed (.ci/original.sh installs the pinned versions)")
    brax = importlib.metadata.version("brax")
    if int(brax.split(".")[0]) > 0 or int(brax.split(".")[1]) >= 9:
        support.require_or_skip(f"brax {brax} is installed; the authors' ec.py needs Brax v1 (brax 0.1.2)")
    return path


def _python(args: list[str], repo: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, **{support.ENV_REPO: str(repo)})
    env.pop("JAX_ENABLE_X64", None)
    proc = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


#: one stand-in generation run twice through the authors' runner, counted by the example's CountingEnv
COUNT_SCRIPT = """
import json, sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
import original_support as support
import authors_ec
from jax.experimental import disable_x64
O = support.load()
P, E, L = 6, 2, int(sys.argv[3])
env, factory = support.make_runner_standins(O, obs_dim=3, act_dim=2, returns=range(P), episode_len=L)
counting = authors_ec.CountingEnv(env)
out = {"calls": [], "fitness": []}
with disable_x64():
    conf = O.ec.ESConfig(network_cls=factory(4, O.jnp.float32), optim_cls=O.optax.sgd(0.1), env_cls=counting,
                         pop_size=P, eval_size=E)
    k1, k2 = O.jax.random.split(O.jax.random.PRNGKey(0))
    runner = O.ec._runner_init(k1, k2, conf)
    out["calls"].append(counting.calls)
    for gen in (1, 2):
        runner, metrics = O.ec._runnner_run(runner, conf)
        metrics = O.jax.device_get(metrics)
        O.jax.effects_barrier()
        out["calls"].append(counting.calls)
        out["fitness"].append(float(metrics["fitness"]))
print(json.dumps(out))
"""


def test_counting_env_counts_the_lock_step_iterations():
    repo = _require_authors_code()
    for L in (1, 5):
        proc = _python(["-c", COUNT_SCRIPT, str(ROOT / "tests"), str(ROOT / "examples"), str(L)], repo)
        got = json.loads(proc.stdout.strip().splitlines()[-1])
        assert got["calls"] == [0, L, 2 * L]                      # every member's episode lasts L steps
        assert got["fitness"] == [pytest.approx(1.5)] * 2          # sampled members 0..3 return 0..3


def test_authors_ec_two_generations_on_hopper(tmp_path):
    repo = _require_authors_code()
    out = tmp_path / "run"
    P = 16
    proc = _python([str(EXAMPLE), "--task", "hopper", "--population", str(P), "--eval-size", "2",
                    "--generations", "2", "--seed", "1", "--out", str(out)], repo)
    gen_lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("gen ")]
    assert len(gen_lines) == 2 and all("elapsed" in ln and "ETA" in ln for ln in gen_lines)

    with (out / "metrics.csv").open() as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == COLUMNS
        rows = list(reader)
    assert [int(r["generation"]) for r in rows] == [1, 2]
    for r in rows:
        assert math.isfinite(float(r["mean_return"])) and math.isfinite(float(r["det_return"]))
        assert math.isnan(float(r["max_return"])) and math.isnan(float(r["rho_entropy"]))
    steps = [int(r["env_steps"]) for r in rows]
    assert 0 < steps[0] < steps[1] and all(s % P == 0 for s in steps)

    summary = json.loads((out / "summary.json").read_text())
    its = summary["iterations_per_generation"]
    assert len(its) == 2 and all(1 <= i <= 1000 for i in its)
    assert steps == [its[0] * P, (its[0] + its[1]) * P] and summary["env_steps"] == steps[1]
    assert summary["generations"] == 2 and summary["population"] == P and summary["eval_members"] == 2
    assert summary["final_deterministic_return"] == pytest.approx(float(rows[1]["det_return"]), rel=1e-5)
    assert (out / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
