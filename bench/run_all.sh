#!/usr/bin/env bash
# Run the whole benchmark suite and rewrite every section of BENCHMARKS.md.
#
# Each script also runs alone (`python bench/<name>.py --help`). This one installs
# the package with its benchmark dependencies into a virtual environment (.venv
# unless ZENML_DOCKER_RS_VENV names another), builds the two local images, then
# runs the benchmarks one after another, so that none disturbs another's numbers.
# The suite took 26 minutes on a quiet 2-core machine. Run it on a quiet machine,
# because other containers and builds change the numbers.
#
# Usage: bash bench/run_all.sh
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${ZENML_DOCKER_RS_VENV:-.venv}
if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet ".[bench]"

PYTHON="$venv/bin/python" bash scripts/build-base-image.sh
bash scripts/build-test-image.sh

for benchmark in scheduler_scaling launch_throughput log_streaming step_gap fan_out; do
    # Given the saved runs from before a change, these two sections keep their
    # before/after tables and profile notes.
    options=()
    case $benchmark in
        scheduler_scaling) options=(--before bench/results/scheduler_scaling_before.json) ;;
        step_gap) options=(--before bench/results/step_gap-47347e5.json) ;;
    esac
    echo "=== bench/$benchmark.py${options[*]:+ ${options[*]}}"
    status=0
    "$venv/bin/python" "bench/$benchmark.py" "${options[@]}" || status=$?
    if ((status != 0)); then
        echo "=== bench/$benchmark.py failed with exit code $status. The benchmarks after it did not run." >&2
        exit "$status"
    fi
done
echo "=== done: BENCHMARKS.md and bench/results/ were rewritten"
