#!/usr/bin/env bash
# Run the whole test suite against the real Docker engine: the Rust tests (unit and
# Docker), then the Python tests with real ZenML pipelines.
#
# Needs: a running Docker engine, cargo, python3 (3.10+) with venv, debootstrap and
# busybox-static. Installs the package and its test dependencies into .venv (created
# if missing) and builds the two local images the tests use (kept between runs).
#
# Usage: scripts/test.sh [extra pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${ZENML_DOCKER_RS_VENV:-.venv}
if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet ".[test]"

PYTHON="$venv/bin/python" bash scripts/build-base-image.sh
bash scripts/build-test-image.sh

cargo test --locked

# The package source sits under python/, off sys.path, so the tests import the
# wheel installed above.
"$venv/bin/python" -m pytest -p no:cacheprovider "$@"
