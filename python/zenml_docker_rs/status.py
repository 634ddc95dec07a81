"""Status of a run rebuilt from its containers and its run record, for any process.

The coordinator removes a step container once its output and exit status are
collected, so the containers that remain are the running ones, failed ones kept for
debugging, and those of a run whose coordinator died. Together with the run record
(is the coordinator alive, what did it record at the end) that is enough to give
ZenML the run's status, even after the client and the coordinator are gone.
"""

from typing import Any, Dict, Iterable, List, Optional

from zenml.enums import ExecutionStatus

from zenml_docker_rs.runs import FORCEFUL, GRACEFUL, RunRecord

LABEL_STEP = "io.zenml.step"

_ACTIVE_STATES = {"created", "running", "restarting", "paused", "removing"}

# Final run statuses of the core, as ZenML statuses.
_RESULT_STATUSES = {
    "succeeded": ExecutionStatus.COMPLETED,
    "failed": ExecutionStatus.FAILED,
    "cancelled": ExecutionStatus.FAILED,
    "stopped": ExecutionStatus.STOPPED,
}


def is_active(container: Dict[str, Any]) -> bool:
    """Return whether a container still runs, or is about to.

    Args:
        container: A container from `_core.find_containers`.

    Returns:
        True unless the container has exited.
    """
    return container["state"] in _ACTIVE_STATES


def container_status(container: Dict[str, Any]) -> ExecutionStatus:
    """Return the ZenML status of the step attempt a container ran.

    Args:
        container: A container from `_core.find_containers`.

    Returns:
        RUNNING while it runs, then COMPLETED for exit code 0, else FAILED.
    """
    if is_active(container):
        return ExecutionStatus.RUNNING
    return ExecutionStatus.COMPLETED if container.get("exit_code") == 0 else ExecutionStatus.FAILED


def step_statuses(containers: Iterable[Dict[str, Any]]) -> Dict[str, ExecutionStatus]:
    """Return each step's status from its latest container.

    A step that was retried has one container per attempt left at most; the one that
    started last gives the step's state.

    Args:
        containers: The run's containers.

    Returns:
        Status by step name, for the steps that still have a container.
    """
    latest: Dict[str, Dict[str, Any]] = {}
    for container in containers:
        step = container["labels"].get(LABEL_STEP)
        if step is None:
            continue
        known = latest.get(step)
        if known is None or (container.get("started_at") or "") > (known.get("started_at") or ""):
            latest[step] = container
    return {step: container_status(container) for step, container in latest.items()}


def run_status(
    current: ExecutionStatus, containers: List[Dict[str, Any]], record: RunRecord
) -> Optional[ExecutionStatus]:
    """Return the run's status, or None when ZenML's own status should stand.

    Args:
        current: The status ZenML has for the run.
        containers: The run's containers.
        record: The run's record.

    Returns:
        The status to record in ZenML, or None to leave it.
    """
    if current.is_finished:
        return None
    any_active = any(is_active(container) for container in containers)
    coordinator_alive = record.coordinator_alive()
    stop_request = record.stop_request()

    if coordinator_alive is not False:
        # The coordinator (or one this host cannot see) still drives the run and
        # records its end itself.
        if stop_request in (GRACEFUL, FORCEFUL):
            return ExecutionStatus.STOPPING
        if any_active and current in (ExecutionStatus.INITIALIZING, ExecutionStatus.PROVISIONING):
            return ExecutionStatus.RUNNING
        return None

    if any_active:
        # Orphaned steps still run; the run ends once they are gone.
        return ExecutionStatus.STOPPING if stop_request else ExecutionStatus.RUNNING

    result = record.result()
    if result is not None:
        return _RESULT_STATUSES.get(result, ExecutionStatus.FAILED)
    if stop_request is not None:
        return ExecutionStatus.STOPPED
    # The coordinator died before it recorded an end: the run cannot go on.
    return ExecutionStatus.FAILED


def orphaned_step_status(
    current: ExecutionStatus, container_state: Optional[ExecutionStatus], coordinator_alive: Optional[bool]
) -> Optional[ExecutionStatus]:
    """Return the status of a step whose run may have lost its coordinator.

    Args:
        current: ZenML's status of the step run.
        container_state: Status from the step's latest container, if it has one.
        coordinator_alive: Whether the run's coordinator still runs.

    Returns:
        The status to record, or None to leave ZenML's.
    """
    if current.is_finished:
        return None
    if container_state is not None:
        return container_state if container_state != current else None
    if coordinator_alive is False:
        # No container and no coordinator to start one: the step will never finish.
        return ExecutionStatus.FAILED
    return None
