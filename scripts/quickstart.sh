#!/usr/bin/env bash
# Install zenml-docker-rs, register the docker_rs flavor and a stack, and run the
# example fan-out pipeline with every step in its own container.
#
# Uses the Python environment of $PYTHON if set, else the virtualenv .venv in this
# repository (created if missing). Registers into your normal ZenML configuration and
# makes docker_rs_stack the active stack; existing components of the same names are
# reused.
#
# Usage: scripts/quickstart.sh [arguments for examples/fan_out.py, e.g. --width 8]
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

say() { echo "[quickstart] $*"; }

if ! docker info >/dev/null 2>&1; then
    say "error: the Docker daemon does not answer (docker info failed)."
    say "Start it (for example 'sudo systemctl start docker', or run 'dockerd') and try again."
    exit 1
fi

if [[ -n "${PYTHON:-}" ]]; then
    python=$PYTHON
else
    [[ -x .venv/bin/python ]] || python3 -m venv .venv
    python=$repo/.venv/bin/python
fi
bin_dir=$(dirname "$python")
say "installing zenml-docker-rs into $("$python" -c 'import sys; print(sys.prefix)') (builds the Rust core)"
"$python" -m pip install --quiet .
zenml=$bin_dir/zenml

parent_image=$("$python" -c '
import sys, zenml
print(f"zenmldocker/zenml:{zenml.__version__}-py{sys.version_info[0]}.{sys.version_info[1]}")')
if docker image inspect "$parent_image" >/dev/null 2>&1; then
    say "ZenML parent image $parent_image is present"
elif docker pull "$parent_image" >/dev/null 2>&1; then
    say "pulled ZenML parent image $parent_image"
else
    say "cannot pull ZenML's parent image $parent_image (no registry reachable):"
    say "building it locally from Debian packages and PyPI instead; this takes a few minutes"
    PYTHON="$python" bash scripts/build-base-image.sh
fi

exists() { "$zenml" "$@" >/dev/null 2>&1; }
exists orchestrator flavor describe docker_rs ||
    "$zenml" orchestrator flavor register zenml_docker_rs.DockerRsOrchestratorFlavor
exists orchestrator describe docker_rs || "$zenml" orchestrator register docker_rs -f docker_rs
exists image-builder describe local_builder || "$zenml" image-builder register local_builder -f local
if exists stack describe docker_rs_stack; then
    "$zenml" stack set docker_rs_stack
else
    "$zenml" stack register docker_rs_stack -o docker_rs -a default -i local_builder --set
fi

say "running examples/fan_out.py${*:+ $*} on docker_rs_stack"
cd examples
"$python" fan_out.py "$@"
say "done. Activate the environment with: source $bin_dir/activate"
