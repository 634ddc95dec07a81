"""Eight step containers writing to the default local SQLite store at the same time.

With the default store, every step container opens the same SQLite file through the
bind-mounted local stores path. This test runs an 8-wide fan-out several times in a
row and checks that no write was lost to SQLite's locking: every run and step completed,
every artifact holds the right value, and no container logged `database is locked`.
The step containers log at DEBUG level, so the heartbeat errors that ZenML only logs
at that level are checked too.
"""

import re
import uuid

import pytest

from conftest import run_pipeline

pytestmark = pytest.mark.docker

WIDTH = 8
RUNS = 5
LOCK_ERROR = "database is locked"
_RUN_ID_LINE = re.compile(r"^pipeline run id: ([0-9a-f-]{36})$", re.MULTILINE)


def _branch_value(index: int) -> int:
    """Return what branch `index` of tests/pipelines/sqlite_fan_out.py produces."""
    return (index + 1) * 10


def _lock_error_lines(output: str) -> list:
    return [line for line in output.splitlines() if LOCK_ERROR in line]


def test_sqlite_fan_out_repeated_runs(zenml_stack):
    from zenml.client import Client
    from zenml.enums import ExecutionStatus

    branch_names = [f"branch_{i}" for i in range(WIDTH)]
    expected_total = sum(_branch_value(index) for index in range(WIDTH))
    expected_steps = sorted(branch_names + ["join"])

    for attempt in range(1, RUNS + 1):
        result = run_pipeline(
            "sqlite_fan_out.py", "--width", str(WIDTH), "--step-log-level", "DEBUG"
        )
        output = result.stdout + result.stderr
        label = f"run {attempt} of {RUNS}"

        assert result.returncode == 0, f"{label} failed:\n{output[-6000:]}"
        lock_errors = _lock_error_lines(output)
        assert not lock_errors, (
            f"{label} logged {len(lock_errors)} SQLite lock errors:\n" + "\n".join(lock_errors[:20])
        )

        match = _RUN_ID_LINE.search(result.stdout)
        assert match, f"{label} printed no pipeline run id:\n{result.stdout[-2000:]}"
        run = Client().get_pipeline_run(uuid.UUID(match.group(1)))

        assert run.status == ExecutionStatus.COMPLETED, f"{label}: run status {run.status}"
        assert sorted(run.steps) == expected_steps, f"{label}: steps {sorted(run.steps)}"
        for name, step_run in run.steps.items():
            assert step_run.status == ExecutionStatus.COMPLETED, (
                f"{label}: step {name} is {step_run.status}"
            )

        for index, name in enumerate(branch_names):
            outputs = run.steps[name].outputs["output"]
            assert len(outputs) == 1, f"{label}: {name} has {len(outputs)} output artifacts"
            assert outputs[0].load() == _branch_value(index), f"{label}: wrong output of {name}"

        join_outputs = run.steps["join"].outputs["output"]
        assert len(join_outputs) == 1, f"{label}: join has {len(join_outputs)} output artifacts"
        assert join_outputs[0].load() == expected_total, f"{label}: wrong join output"
