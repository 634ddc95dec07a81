"""Recording what happened to a run in ZenML: step metadata, failures and stops.

A step container that is killed (stopped, timed out, out of memory) cannot record its
own end in ZenML, so the coordinator does. It marks such step runs failed or stopped and
sets the pipeline run's final status. It also adds each step's container details to the
step's run metadata.
"""

from typing import Any, Dict, Optional
from uuid import UUID

from zenml.enums import ExecutionStatus
from zenml.logger import get_logger

logger = get_logger(__name__)


def step_metadata(report: Dict[str, Any], image: str) -> Dict[str, Any]:
    """Build the run metadata of one step from its final report.

    Args:
        report: The step's final report from the core.
        image: The step's image.

    Returns:
        Metadata values by key; values the core did not measure are left out.
    """
    metadata: Dict[str, Any] = {
        "image": image,
        "attempts": report.get("attempt", 0),
        "oom_killed": bool(report.get("oom_killed")),
        "timed_out": bool(report.get("timed_out")),
    }
    optional = {
        "container_id": report.get("container_id"),
        "exit_code": report.get("exit_code"),
        "started_at": report.get("started_at"),
        "finished_at": report.get("finished_at"),
        "peak_memory_bytes": report.get("peak_memory_bytes"),
    }
    metadata.update({key: value for key, value in optional.items() if value is not None})
    return metadata


def publish_step_metadata(
    pipeline_run_id: UUID,
    orchestrator_id: UUID,
    step_name: str,
    metadata: Dict[str, Any],
) -> None:
    """Attach a step's container details to its latest step run in ZenML.

    Args:
        pipeline_run_id: The pipeline run.
        orchestrator_id: The orchestrator component, under which the metadata shows.
        step_name: The step.
        metadata: The values to record.
    """
    from zenml.client import Client
    from zenml.orchestrators import publish_utils

    step_run = Client().get_pipeline_run(pipeline_run_id).steps.get(step_name)
    if step_run is None:
        # The container ended before the step entrypoint created its step run.
        logger.debug("No step run of `%s` in run %s for metadata.", step_name, pipeline_run_id)
        return
    publish_utils.publish_step_run_metadata(
        step_run_id=step_run.id,
        step_run_metadata={orchestrator_id: metadata},
    )


def record_run_end(
    pipeline_run_id: UUID,
    final_steps: Dict[str, Dict[str, Any]],
    stopped_by_request: bool,
) -> None:
    """Mark the step runs that killed containers left unfinished, then end the run.

    Args:
        pipeline_run_id: The pipeline run.
        final_steps: Final report of each step from the core.
        stopped_by_request: True when a stop request ended the run; the run then ends
            as stopped, else as failed.
    """
    from zenml.client import Client
    from zenml.orchestrators import publish_utils

    run = Client().get_pipeline_run(pipeline_run_id)
    for name, step_run in run.steps.items():
        if step_run.status.is_finished:
            continue
        state: Optional[str] = final_steps.get(name, {}).get("state")
        if state == "stopped" or (stopped_by_request and state != "failed"):
            publish_utils.publish_stopped_step_run(step_run.id)
        else:
            publish_utils.publish_failed_step_run(step_run.id)

    if run.status.is_finished:
        # ZenML already ended the run, for instance when a step's own signal handling
        # recorded a failure; a finished run's status cannot change any more.
        return
    if stopped_by_request:
        # ZenML computes a stopping run's status from its steps: once every step run
        # has finished, the run becomes stopped.
        publish_utils.publish_pipeline_run_status_update(
            pipeline_run_id=pipeline_run_id,
            status=ExecutionStatus.STOPPING,
            status_reason="Stopped by request.",
        )
    else:
        publish_utils.publish_failed_pipeline_run(pipeline_run_id)
