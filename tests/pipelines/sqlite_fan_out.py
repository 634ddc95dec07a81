"""Fan-out pipeline for the SQLite concurrency test, with N parallel branches and one join.

The branches take no input, so all of them start at once and their containers open
the local SQLite store at the same time. Each one creates its step run, publishes an
output artifact, sends heartbeats and records its end. The join adds up the branch
values, so a lost or wrong artifact shows in its output.

Run it as `python sqlite_fan_out.py --width 8`. It ends by printing
`pipeline run id: <uuid>`, which the tests read to find the run.
"""

import argparse

from zenml import pipeline, step


@step
def branch_value(branch: int) -> int:
    """Return a value that identifies the branch."""
    return (branch + 1) * 10


@step
def join(values: list[int]) -> int:
    """Add up the branch values."""
    total = sum(values)
    print(f"total of {len(values)} branches: {total}")
    return total


def build_pipeline(width: int, step_log_level: str):
    """Return a pipeline with `width` parallel branches and one join step."""
    # The settings key with the flavor name, as a user writes it in a YAML config.
    settings = {
        "orchestrator.docker_rs": {"environment": {"ZENML_LOGGING_VERBOSITY": step_log_level}}
    }

    @pipeline(name=f"sqlite_fan_out_{width}", enable_cache=False, settings=settings)
    def sqlite_fan_out() -> int:
        values = [branch_value(branch=i, id=f"branch_{i}") for i in range(width)]
        return join(values)

    return sqlite_fan_out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--width", type=int, default=8, help="number of parallel branches")
    parser.add_argument(
        "--step-log-level",
        default="INFO",
        help="ZenML log level in the step containers. DEBUG also logs every SQL store "
        "session and the heartbeat errors that ZenML otherwise hides",
    )
    args = parser.parse_args()
    run = build_pipeline(args.width, args.step_log_level)()
    print(f"pipeline run id: {run.id}")
