"""Run and step status from containers and run records, without Docker.

The containers here are dicts shaped like `_core.find_containers` results; the run
records are real files under the test session's ZenML configuration.
"""

import subprocess
import sys
import uuid

import pytest
from zenml.enums import ExecutionStatus

from zenml_docker_rs import status
from zenml_docker_rs.runs import FORCEFUL, GRACEFUL, RunRecord


def container(step: str, state: str, exit_code=None, started_at="2026-01-01T00:00:00Z"):
    return {
        "id": uuid.uuid4().hex,
        "name": step,
        "labels": {status.LABEL_STEP: step},
        "state": state,
        "exit_code": exit_code,
        "started_at": started_at,
    }


@pytest.fixture
def record():
    run = RunRecord(f"status-test-{uuid.uuid4()}")
    run.create({"run_id": run.run_id, "steps": []}, pipeline_run_id=None, orchestrator_id=None)
    return run


@pytest.fixture
def dead_coordinator(record):
    """A record whose coordinator was a process that has exited."""
    claim = "import sys; from zenml_docker_rs.runs import RunRecord; RunRecord(sys.argv[1]).claim_coordinator()"
    subprocess.run([sys.executable, "-c", claim, record.run_id], check=True)
    assert record.coordinator_alive() is False
    return record


def test_coordinator_alive_for_own_process(record):
    record.claim_coordinator()
    assert record.coordinator_alive() is True


def test_coordinator_missing_counts_as_dead(record):
    assert record.coordinator_alive() is False


def test_live_coordinator_keeps_zenml_status(record):
    record.claim_coordinator()
    containers = [container("train", "running")]
    assert status.run_status(ExecutionStatus.RUNNING, containers, record) is None


def test_live_coordinator_moves_provisioning_to_running(record):
    record.claim_coordinator()
    containers = [container("train", "running")]
    result = status.run_status(ExecutionStatus.PROVISIONING, containers, record)
    assert result == ExecutionStatus.RUNNING


def test_stop_request_reports_stopping(record):
    record.claim_coordinator()
    record.request_stop(GRACEFUL)
    result = status.run_status(ExecutionStatus.RUNNING, [], record)
    assert result == ExecutionStatus.STOPPING


def test_dead_coordinator_with_running_steps_is_running(dead_coordinator):
    containers = [container("train", "running")]
    result = status.run_status(ExecutionStatus.RUNNING, containers, dead_coordinator)
    assert result == ExecutionStatus.RUNNING


def test_dead_coordinator_without_containers_is_failed(dead_coordinator):
    containers = [container("train", "exited", exit_code=0)]
    result = status.run_status(ExecutionStatus.RUNNING, containers, dead_coordinator)
    assert result == ExecutionStatus.FAILED


def test_recorded_result_wins(dead_coordinator):
    dead_coordinator.write_result("succeeded")
    result = status.run_status(ExecutionStatus.RUNNING, [], dead_coordinator)
    assert result == ExecutionStatus.COMPLETED


def test_dead_coordinator_after_stop_is_stopped(dead_coordinator):
    dead_coordinator.request_stop(FORCEFUL)
    result = status.run_status(ExecutionStatus.STOPPING, [], dead_coordinator)
    assert result == ExecutionStatus.STOPPED


def test_finished_run_is_left_alone(dead_coordinator):
    assert status.run_status(ExecutionStatus.COMPLETED, [], dead_coordinator) is None


def test_forceful_request_not_downgraded(record):
    record.request_stop(FORCEFUL)
    record.request_stop(GRACEFUL)
    assert record.stop_request() == FORCEFUL


def test_invalid_stop_mode_rejected(record):
    with pytest.raises(ValueError, match="invalid stop mode 'soon'"):
        record.request_stop("soon")


def test_step_status_uses_latest_attempt():
    containers = [
        container("train", "exited", exit_code=1, started_at="2026-01-01T00:00:00Z"),
        container("train", "running", started_at="2026-01-01T00:01:00Z"),
        container("eval", "exited", exit_code=0),
    ]
    statuses = status.step_statuses(containers)
    assert statuses["train"] == ExecutionStatus.RUNNING
    assert statuses["eval"] == ExecutionStatus.COMPLETED


def test_orphaned_step_without_container_fails():
    result = status.orphaned_step_status(ExecutionStatus.RUNNING, None, coordinator_alive=False)
    assert result == ExecutionStatus.FAILED


def test_step_with_live_coordinator_left_alone():
    result = status.orphaned_step_status(ExecutionStatus.RUNNING, None, coordinator_alive=True)
    assert result is None


def test_exited_container_fails_step():
    result = status.orphaned_step_status(
        ExecutionStatus.RUNNING, ExecutionStatus.FAILED, coordinator_alive=False
    )
    assert result == ExecutionStatus.FAILED
