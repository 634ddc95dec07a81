"""Pipeline with two long-running steps, for the tests that interrupt a run.

    sleeper  ──┐
               ├──> after_both
    stubborn ──┘

`sleeper` sleeps and lets SIGTERM end it. `stubborn` ignores SIGTERM and SIGINT, so
only SIGKILL at the end of the stop grace period ends it. Both write a marker file
into the shared directory `--sync-dir` once they run, and the test sends its signal
only after both markers exist. `after_both` must never run.

Usage: python interrupt_pipeline.py --name NAME --sync-dir DIR --grace SECONDS
"""

import argparse
import signal
import time

from sync_files import write_marker
from zenml import pipeline, step

from zenml_docker_rs import DockerRsOrchestratorSettings

# Far longer than the test waits: these steps end only when they are stopped.
SLEEP_SECONDS = 300.0


@step
def sleeper(sync_dir: str) -> int:
    """Sleep until stopped; SIGTERM ends it."""
    write_marker(sync_dir, "sleeper.running", {"time": time.time()})
    print("sleeper: running", flush=True)
    time.sleep(SLEEP_SECONDS)
    return 1


@step
def stubborn(sync_dir: str) -> int:
    """Sleep until killed: SIGTERM and SIGINT are ignored."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    write_marker(sync_dir, "stubborn.running", {"time": time.time()})
    print("stubborn: running, ignoring SIGTERM and SIGINT", flush=True)
    time.sleep(SLEEP_SECONDS)
    return 2


@step
def after_both(first: int, second: int, sync_dir: str) -> None:
    """Downstream of both long steps: must never run."""
    write_marker(sync_dir, "after_both.ran", {"time": time.time()})


def build_pipeline(name: str, sync_dir: str, grace: int):
    """Return the pipeline with `sync_dir` mounted and a stop grace period of `grace` seconds."""
    settings = DockerRsOrchestratorSettings(
        volumes=[f"{sync_dir}:{sync_dir}"], stop_grace_period=grace
    )

    @pipeline(name=name, enable_cache=False, settings={"orchestrator": settings})
    def interrupt() -> None:
        after_both(sleeper(sync_dir), stubborn(sync_dir), sync_dir)

    return interrupt


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True, help="pipeline name, unique per test")
    parser.add_argument("--sync-dir", required=True, help="host directory shared with the steps")
    parser.add_argument("--grace", type=int, required=True, help="stop grace period, in seconds")
    args = parser.parse_args()
    build_pipeline(args.name, args.sync_dir, args.grace)()
