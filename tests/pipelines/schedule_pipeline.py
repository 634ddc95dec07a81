"""A one-step pipeline run with a schedule, which the docker_rs orchestrator rejects.

`--mode zenml` runs the pipeline with a schedule as a user does. ZenML itself rejects
it before building anything, because `is_schedulable` is False in the
orchestrator's config.

`--mode submit` bypasses that check: it stores a snapshot that carries a schedule,
as ZenML does for a schedulable orchestrator, and hands it to the orchestrator's
`submit_pipeline`, which must reject it with its own message.

Both modes exit with the exception's traceback and a non-zero status.

Usage: python schedule_pipeline.py --name NAME --mode zenml|submit
"""

import argparse

from zenml import pipeline, step
from zenml.client import Client
from zenml.config.schedule import Schedule
from zenml.models import PipelineSnapshotRequest, ScheduleRequest

SCHEDULE = Schedule(cron_expression="0 3 * * *")


@step
def scheduled_step() -> int:
    """Return a constant; the step never runs because the schedule is rejected."""
    return 1


def build_pipeline(name: str):
    """Return the one-step pipeline."""

    @pipeline(name=name, enable_cache=False)
    def scheduled() -> None:
        scheduled_step()

    return scheduled


def submit_with_schedule(scheduled_pipeline) -> None:
    """Store a snapshot with a schedule and submit it to the orchestrator directly.

    This uses ZenML's private `_compile`, pinned by the package's zenml version range.
    """
    client = Client()
    stack = client.active_stack
    scheduled_pipeline.prepare()
    compiled, _, _ = scheduled_pipeline._compile(schedule=SCHEDULE)
    pipeline_id = scheduled_pipeline.register().id
    schedule = client.zen_store.create_schedule(
        ScheduleRequest(
            project=client.active_project.id,
            pipeline_id=pipeline_id,
            orchestrator_id=stack.orchestrator.id,
            name=f"{scheduled_pipeline.name}-schedule",
            active=True,
            cron_expression=SCHEDULE.cron_expression,
        )
    )
    snapshot = client.zen_store.create_snapshot(
        PipelineSnapshotRequest(
            project=client.active_project.id,
            stack=stack.id,
            pipeline=pipeline_id,
            schedule=schedule.id,
            **compiled.model_dump(),
        )
    )
    stack.orchestrator.submit_pipeline(
        snapshot=snapshot,
        stack=stack,
        base_environment={},
        step_environments={},
        placeholder_run=None,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True, help="pipeline name, unique per test")
    parser.add_argument("--mode", required=True, choices=["zenml", "submit"])
    args = parser.parse_args()
    scheduled_pipeline = build_pipeline(args.name)
    if args.mode == "zenml":
        scheduled_pipeline.with_options(schedule=SCHEDULE)()
    else:
        submit_with_schedule(scheduled_pipeline)
