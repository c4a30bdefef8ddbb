#!/usr/bin/env bash
# refsnn's MSE-NAS neuron beside BrainCog's LIFNode, the MSE-NAS authors' own neuron
# (tests/test_braincog.py, marker `braincog`). Run from the repository root.
#
# A fresh virtual environment (.venv-braincog, or $REFSNN_BRAINCOG_VENV) with:
#   * torch==2.13.0 — the CPU build this kind of machine serves (installed first, so nothing pulls a
#     CUDA build);
#   * braincog==0.2.7.19 with --no-deps: its declared dependencies (torchvision, torchaudio, timm,
#     tonic, dv, pygame, ...) are those of the whole toolbox. The tests load only
#     braincog/base/node/node.py and braincog/base/strategy/surrogate.py, which import torch, numpy
#     and einops; the PyPI torchvision wheels are linked against CUDA torch and do not import with
#     the CPU build, so the package's own __init__ chain cannot be imported here at all (the test
#     module's docstring says how it loads those two files);
#   * einops==0.8.2, refsnn itself (-e ., its own dependencies as setup.cfg says), pytest==9.2.0 and
#     hypothesis==6.170.29.
# Then the `braincog` tests run with REFSNN_REQUIRE_BRAINCOG=1 (a missing dependency is an error, not
# a skip). Any failing, erroring or skipped test, or no test at all, fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1

venv="${REFSNN_BRAINCOG_VENV:-.venv-braincog}"
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install -q torch==2.13.0
"$venv/bin/pip" install -q --no-deps braincog==0.2.7.19
"$venv/bin/pip" install -q einops==0.8.2 -e . pytest==9.2.0 hypothesis==6.170.29
"$venv/bin/python" -c "import torch; assert torch.__version__.split('+')[0] == '2.13.0', torch.__version__"

report="$(mktemp -d)/braincog-junit.xml"
REFSNN_REQUIRE_BRAINCOG=1 "$venv/bin/python" -m pytest -m braincog -p no:cacheprovider --junitxml="$report"

# pytest exits 0 when the selected tests are skipped; here a skip means the comparison did not happen.
# (Other modules skipped while being collected, e.g. for a missing optional checkout, show up as skips
# with an empty class name; they are not `braincog` tests unless their name says so.)
"$venv/bin/python" - "$report" <<'EOF'
import sys
import xml.etree.ElementTree as ET

root = ET.parse(sys.argv[1]).getroot()
selected = [tc for tc in root.iter("testcase") if tc.get("classname") or "braincog" in tc.get("name", "")]
outcome = {id(tc): [c.tag for c in tc if c.tag in ("skipped", "failure", "error")] for tc in selected}
not_passed = [f"{tc.get('classname')}::{tc.get('name')} ({outcome[id(tc)][0]})"
              for tc in selected if outcome[id(tc)]]
print(f"braincog: {len(selected)} tests selected, {len(selected) - len(not_passed)} passed")
if not selected or not_passed:
    sys.exit("braincog: the BrainCog comparison did not run completely: "
             + ("no test ran" if not selected else "; ".join(not_passed)))
EOF
