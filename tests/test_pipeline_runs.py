"""End-to-end runs of real ZenML pipelines on the docker_rs stack: a parallel fan-out,
a failing step in each of ZenML's execution modes, and max_parallelism.

The pipelines run as `python <script>` subprocesses from tests/pipelines/; results are
read back through ZenML's client from the same local store.
"""

import json
import re
import socket
import subprocess
from pathlib import Path
from typing import Dict

from conftest import run_pipeline
from zenml.client import Client
from zenml.enums import ExecutionStatus
from zenml.models import PipelineRunResponse

# Sum of n*n for n in 1..10: the source step's numbers as each branch uses them.
SQUARES_SUM = 385

FAILING_LAST_LINE = "failing step: last line before the error"
FAILING_ERROR = "RuntimeError: the failing step raises on purpose"


def combined_output(result: subprocess.CompletedProcess) -> str:
    """Return what the pipeline process printed: ZenML logs to stdout, tracebacks to stderr."""
    return result.stdout + result.stderr


def last_run(pipeline_name: str) -> PipelineRunResponse:
    """Return the newest run of the pipeline, read from the ZenML store."""
    return Client().get_pipeline(pipeline_name).last_run


def step_statuses(run: PipelineRunResponse) -> Dict[str, ExecutionStatus]:
    """Return the ZenML status of every step run that exists, by step name."""
    return {name: step.status for name, step in run.steps.items()}


def assert_never_ran(run: PipelineRunResponse, step: str, output: str, sync_dir: Path) -> None:
    """Assert that a step's container never ran: no step run in ZenML (or a skipped one),
    no output line and no marker file."""
    statuses = step_statuses(run)
    assert statuses.get(step, ExecutionStatus.SKIPPED) == ExecutionStatus.SKIPPED, statuses
    assert f"[{step}]" not in output
    assert not (sync_dir / f"{step}.ran").exists()


def run_failure_modes(
    name: str, mode: str, sync_dir: Path, sibling_waits_for_failure: bool
) -> subprocess.CompletedProcess:
    """Run tests/pipelines/failure_modes_pipeline.py in execution mode `mode`."""
    args = ["--name", name, "--mode", mode, "--sync-dir", str(sync_dir)]
    if sibling_waits_for_failure:
        args.append("--sibling-waits-for-failure")
    return run_pipeline("failure_modes_pipeline.py", *args, timeout=500)


def assert_failing_step_reported(result: subprocess.CompletedProcess) -> None:
    """Assert that the process failed with an error naming the failed step, its exit
    code and its last output lines."""
    output = combined_output(result)
    assert result.returncode != 0, output
    assert f"[failing] {FAILING_LAST_LINE}" in output
    error = result.stderr[result.stderr.find("RunFailedError") :]
    assert "RunFailedError" in error, output
    assert "step `failing` failed with exit code 1" in error
    tail = error[error.find("Last ") :]
    assert re.match(r"Last \d+ lines of its output:\n", tail), error
    assert FAILING_ERROR in tail


def test_fan_out_succeeds_in_parallel(zenml_stack):
    width = 4
    name = "e2e_fan_out"

    result = run_pipeline(
        "fan_out_pipeline.py", "--name", name, "--width", str(width), "--barrier", "--seconds", "1"
    )
    output = combined_output(result)
    assert result.returncode == 0, output

    run = last_run(name)
    assert run.status == ExecutionStatus.COMPLETED
    branch_names = [f"branch_{i}" for i in range(width)]
    step_names = ["make_numbers", *branch_names, "join"]
    assert sorted(run.steps) == sorted(step_names)
    for step in step_names:
        assert run.steps[step].status == ExecutionStatus.COMPLETED, step

    # Artifacts: every branch's output and the join's total.
    assert run.steps["make_numbers"].output.load() == list(range(1, 11))
    branches = [run.steps[branch].output.load() for branch in branch_names]
    for index, branch in enumerate(branches):
        assert branch["index"] == index
        assert branch["value"] == index * SQUARES_SUM
    assert run.steps["join"].output.load() == sum(range(width)) * SQUARES_SUM

    # One container per step: Docker sets the hostname to the container's short id.
    hostnames = {step: run.steps[step].run_metadata["hostname"] for step in step_names}
    for step, hostname in hostnames.items():
        assert re.fullmatch(r"[0-9a-f]{12}", hostname), (step, hostname)
    assert len(set(hostnames.values())) == len(step_names), hostnames
    assert socket.gethostname() not in hostnames.values()

    # The branches ran at the same time: every interval overlaps every other.
    latest_start = max(branch["start"] for branch in branches)
    earliest_end = min(branch["end"] for branch in branches)
    assert latest_start < earliest_end, branches

    # Step output reaches the client, prefixed with the step name.
    assert "[make_numbers] make_numbers: numbers from 1 to 10" in output
    for index, branch in enumerate(branch_names):
        assert f"[{branch}] branch {index} computed {index * SQUARES_SUM}" in output
    assert f"[join] join of {width} branches: total {sum(range(width)) * SQUARES_SUM}" in output


def test_fail_fast_stops_sibling(zenml_stack, tmp_path):
    name = "e2e_fail_fast"

    result = run_failure_modes(name, "fail_fast", tmp_path, sibling_waits_for_failure=False)
    output = combined_output(result)
    assert_failing_step_reported(result)

    # The sibling was running and was stopped before it could finish its sleep.
    assert (tmp_path / "sibling.started").exists()
    assert not (tmp_path / "sibling.finished").exists()
    assert "Step `sibling` stopped: step `failing` failed" in output

    run = last_run(name)
    assert run.status == ExecutionStatus.FAILED
    statuses = step_statuses(run)
    assert statuses["failing"] == ExecutionStatus.FAILED
    assert statuses["sibling"] == ExecutionStatus.STOPPED
    assert_never_ran(run, "after_failing", output, tmp_path)
    assert_never_ran(run, "after_sibling", output, tmp_path)


def test_stop_on_failure_lets_sibling_finish(zenml_stack, tmp_path):
    name = "e2e_stop_on_failure"

    result = run_failure_modes(name, "stop_on_failure", tmp_path, sibling_waits_for_failure=True)
    output = combined_output(result)
    assert_failing_step_reported(result)

    # The sibling finished after the failure. Its downstream step, ready only after
    # the failure, did not start.
    finished = json.loads((tmp_path / "sibling.finished").read_text())
    failing_started = json.loads((tmp_path / "failing.started").read_text())
    assert failing_started["time"] < finished["time"]
    assert "Step `sibling` succeeded." in output
    assert "Step `after_sibling` skipped: step `failing` failed" in output

    run = last_run(name)
    assert run.status == ExecutionStatus.FAILED
    statuses = step_statuses(run)
    assert statuses["failing"] == ExecutionStatus.FAILED
    assert statuses["sibling"] == ExecutionStatus.COMPLETED
    assert_never_ran(run, "after_failing", output, tmp_path)
    assert_never_ran(run, "after_sibling", output, tmp_path)


def test_continue_on_failure_skips_downstream(zenml_stack, tmp_path):
    name = "e2e_continue_on_failure"

    result = run_failure_modes(name, "continue_on_failure", tmp_path, sibling_waits_for_failure=True)
    output = combined_output(result)
    assert_failing_step_reported(result)

    # The independent branch went on after the failure, down to its last step.
    assert (tmp_path / "sibling.finished").exists()
    assert (tmp_path / "after_sibling.ran").exists()
    assert "[after_sibling] after_sibling ran" in output
    assert "Step `after_failing` skipped: upstream step `failing` failed" in output

    run = last_run(name)
    assert run.status == ExecutionStatus.FAILED
    statuses = step_statuses(run)
    assert statuses["failing"] == ExecutionStatus.FAILED
    assert statuses["sibling"] == ExecutionStatus.COMPLETED
    assert statuses["after_sibling"] == ExecutionStatus.COMPLETED
    assert_never_ran(run, "after_failing", output, tmp_path)


def test_max_parallelism_one_serializes(zenml_stack):
    width = 3
    name = "e2e_max_parallelism_1"

    result = run_pipeline(
        "fan_out_pipeline.py", "--name", name, "--width", str(width), "--seconds", "1",
        "--max-parallelism", "1",
    )
    output = combined_output(result)
    assert result.returncode == 0, output

    run = last_run(name)
    assert run.status == ExecutionStatus.COMPLETED
    branches = [run.steps[f"branch_{i}"].output.load() for i in range(width)]
    assert run.steps["join"].output.load() == sum(range(width)) * SQUARES_SUM

    # Each branch ended before the next one started.
    branches.sort(key=lambda branch: branch["start"])
    for earlier, later in zip(branches, branches[1:]):
        assert earlier["end"] < later["start"], branches
