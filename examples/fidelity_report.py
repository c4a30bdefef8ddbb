"""The measured differences between refsnn and the EC authors' own code (the table of docs/fidelity.md).

Runs the comparisons of ``tests/test_original_ec.py`` (which assert the tolerances) and prints, per
component and dtype, the largest difference seen, relative to ``max(1, max|authors|)`` as the tests
measure it, over every comparison that is made (float32 RSNN runs up to their first rounding-chaos
spike flip, as in the tests). Needs the environment of ``.ci/original.sh``::

    bash .ci/original.sh            # builds .venv-original and runs the tests
    REFSNN_EC_REPO=../shared/third_party/EvolvingConnectivity \\
        .venv-original/bin/python examples/fidelity_report.py
"""

import collections
import pathlib
import sys
from dataclasses import dataclass

import numpy as np

from refsnn.commands.config import parse

WORST: dict = collections.defaultdict(float)
COUNT: dict = collections.defaultdict(int)
LABEL = [""]
_ASSERT_VALUES_CLOSE = []   # the tests' own check, replaced by _recording while the report runs


def _tests():
    """``tests/test_original_ec.py``: the comparison code of the tests, not a copy of it (imported only
    when the report runs: it needs the environment of ``.ci/original.sh``)."""
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
    import test_original_ec

    return test_original_ec


def _recording(name, got, want, tol):
    """The tests' check, recording the relative difference of every comparison that passes."""
    _ASSERT_VALUES_CLOSE[0](name, got, want, tol)
    err = float(np.max(np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64)), initial=0.0))
    scale = max(1.0, float(np.max(np.abs(want), initial=0.0)))
    label = LABEL[0] + (": rho where the estimate is 0 up to rounding (Adam's 1/eps slope)"
                        if "estimate 0" in name else "")
    WORST[label] = max(WORST[label], err / scale)
    COUNT[label] += 1


@dataclass
class Options:
    """No options (declared as ``refsnn``'s commands declare theirs, so ``--help`` works): what is compared
    is what ``tests/test_original_ec.py`` compares, in the environment of ``.ci/original.sh``."""


def main(argv=None) -> int:
    parse(Options, argv, description=__doc__.splitlines()[0])
    T = _tests()
    _ASSERT_VALUES_CLOSE[:] = [T.assert_values_close]
    T.assert_values_close = _recording
    for dtype in T.DTYPES:
        dn = np.dtype(dtype).name
        for impl in T.IMPLS:
            LABEL[0] = f"RSNN env step, {impl} ({dn})"
            for case in range(len(T.RSNN_CASES)):
                T.test_rsnn_step_matches_connsnn(impl, case, dtype)
        LABEL[0] = f"normaliser ({dn})"
        for merge in ("batch", "per_row"):
            T.test_running_norm_matches_brax_running_statistics(dtype, merge)
        for ties in T.nes.RANK_TIES:
            LABEL[0] = f"NES + Adam + clip, 3 generations, distinct returns, ties {ties} ({dn})"
            T.check_update_against_authors(dtype, T.RETURNS_DISTINCT, 3, ties, N=33)
        LABEL[0] = f"NES + Adam + clip, 2 generations, tied returns, ties ordinal ({dn})"
        T.check_update_against_authors(dtype, T.RETURNS_TIED, 2, "ordinal")
    LABEL[0] = "deployed network, action (float64)"
    T.test_deployed_network_float64_matches_authors_deterministic_member()
    print("| comparison | values compared | max difference / max(1, max abs) |")
    print("|---|---|---|")
    for k in WORST:
        print(f"| {k} | {COUNT[k]} arrays | {WORST[k]:.2g} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
