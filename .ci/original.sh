#!/usr/bin/env bash
# CI: refsnn's Evolving Connectivity against the EC authors' own JAX code (tests marked `original`,
# tests/test_original_ec.py). Run from the repository root (by .ci/run). A fresh virtual environment
# gets the era packages the authors' code runs with on a CPU (pinned below, all of them, so the run
# is reproducible), Brax v1 (brax 0.1.2: installed without its dependencies, whose pins fight the
# others, plus exactly what the modules ec.py imports need), refsnn and pytest. Then the `original`
# tests run with REFSNN_REQUIRE_ORIGINAL=1: a missing checkout or package fails instead of skipping.
# Fails if a test fails or errors, if nothing is collected, or if anything was skipped or nothing passed.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1

repo="../shared/third_party/EvolvingConnectivity"
if [[ ! -f "$repo/ec.py" || ! -f "$repo/networks/conn_snn.py" ]]; then
    echo "original.sh: the EC authors' checkout is missing at $repo (ec.py, networks/conn_snn.py)" >&2
    exit 1
fi
repo="$(cd "$repo" && pwd)"

venv=.venv-original
rm -rf "$venv"
python3 -m venv "$venv"
pip=("$venv/bin/python" -m pip install -q)

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
constraints="$work/constraints.txt"
cat > "$constraints" <<'EOF'
# the authors' stack (JAX era of the paper, CPU)
jax==0.4.13
jaxlib==0.4.13
flax==0.7.0
optax==0.1.5
chex==0.1.7
numpy==1.26.4
scipy==1.12.0
ml_dtypes==0.5.4
opt_einsum==3.4.0
orbax-checkpoint==0.5.16
tensorstore==0.1.86
msgpack==1.2.4
rich==15.0.0
markdown-it-py==4.3.0
mdurl==0.1.2
Pygments==2.21.0
PyYAML==6.0.4
typing_extensions==4.16.0
absl-py==2.5.1
dm-tree==0.1.10
etils==1.15.0
fsspec==2026.9.0
nest-asyncio==1.6.0
protobuf==7.36.2
toolz==1.2.0
wrapt==2.5.2
zipp==4.1.2
attrs==26.1.0
# what Brax v1's modules imported by ec.py need (brax/__init__, brax.envs, brax.training.acme)
trimesh==3.9.35
dm-env==1.6
gym==0.26.2
gym-notices==0.1.0
cloudpickle==3.1.3
# refsnn's own dependencies, versions that work with numpy 1.26.4
numba==0.60.0
llvmlite==0.43.0
pillow==10.4.0
gymnasium==1.0.0
mujoco==3.2.7
glfw==2.11.0
PyOpenGL==3.1.10
ImageIO==2.38.2
Farama-Notifications==0.0.6
# tests
pytest==8.3.4
hypothesis==6.122.3
sortedcontainers==2.4.0
iniconfig==2.3.1
packaging==26.4
pluggy==1.7.0
EOF

"${pip[@]}" -c "$constraints" jax jaxlib flax optax chex numpy scipy
"${pip[@]}" --no-deps brax==0.1.2
"${pip[@]}" -c "$constraints" trimesh dm-env gym
"${pip[@]}" -c "$constraints" -e . pytest hypothesis

report="$work/original.xml"
REFSNN_EC_REPO="$repo" REFSNN_REQUIRE_ORIGINAL=1 \
    "$venv/bin/python" -m pytest -m original -p no:cacheprovider --junitxml="$report" -q

# pytest exits non-zero on failures, errors and "no tests collected"; also refuse a skipped `original` test
# and zero passes. (A module that another optional extra needs, e.g. torch, is skipped while being
# collected, before `-m original` deselects its tests: such a skip has no class name and is not counted,
# unless it is an `original` module.)
"$venv/bin/python" - "$report" <<'EOF'
import sys
import xml.etree.ElementTree as ET

passed = failed = skipped = 0
for case in ET.parse(sys.argv[1]).getroot().iter("testcase"):
    tags = {child.tag for child in case}
    if "failure" in tags or "error" in tags:
        failed += 1
    elif "skipped" in tags:
        if case.get("classname") or "original" in case.get("name", ""):
            skipped += 1
    else:
        passed += 1
print(f"original: {passed} passed, {failed} failed, {skipped} skipped")
if passed < 1 or failed or skipped:
    sys.exit("original.sh: the cross-checks against the EC authors' code did not all run and pass")
EOF
