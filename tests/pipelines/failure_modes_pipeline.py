"""Pipeline with a failing step, for the tests of ZenML's execution modes.

    failing ──> after_failing
    sibling ──> after_sibling

`failing` waits until `sibling` runs, prints a last line and raises. What `sibling`
does depends on the test:

- `--sibling-waits-for-failure`: it waits until the process of `failing` has exited,
  then a few seconds more so that the orchestrator has seen the failure, and succeeds.
  Its downstream step becomes ready only after the failure.
- otherwise: it sleeps far longer than the test waits, so it finishes only if nothing
  stops it.

Each step writes a marker file into the shared directory `--sync-dir`, which is
bind-mounted into every step container at the same path, so the test can tell which
steps ran and how far.

Usage: python failure_modes_pipeline.py --name NAME --mode fail_fast|stop_on_failure|
       continue_on_failure --sync-dir DIR [--sibling-waits-for-failure]
"""

import argparse
import time

from sync_files import hold_lock_until_exit, wait_for_lock_release, wait_for_marker, write_marker
from zenml import pipeline, step
from zenml.enums import ExecutionMode

from zenml_docker_rs import DockerRsOrchestratorSettings

FAILING_LAST_LINE = "failing step: last line before the error"
FAILING_ERROR = "the failing step raises on purpose"

# Time the sibling lets the orchestrator take to notice that `failing` exited, before
# the sibling finishes and its downstream step becomes ready.
FAILURE_NOTICE_SECONDS = 3.0

# Sleep of a sibling that is meant to be stopped; far longer than the test waits.
SIBLING_SLEEP_SECONDS = 200.0


@step
def failing(sync_dir: str) -> int:
    """Fail once the sibling runs.

    The lock, held until this process exits, lets the sibling wait for that exit.
    """
    hold_lock_until_exit(sync_dir, "failing.lock")
    write_marker(sync_dir, "failing.started", {"time": time.time()})
    wait_for_marker(sync_dir, "sibling.started")
    print(FAILING_LAST_LINE, flush=True)
    raise RuntimeError(FAILING_ERROR)


@step
def sibling(sync_dir: str, waits_for_failure: bool) -> int:
    """Run next to `failing`: finish after its failure, or sleep until stopped."""
    write_marker(sync_dir, "sibling.started", {"time": time.time()})
    if waits_for_failure:
        wait_for_marker(sync_dir, "failing.started")
        wait_for_lock_release(sync_dir, "failing.lock")
        print("sibling: the failing step has exited", flush=True)
        time.sleep(FAILURE_NOTICE_SECONDS)
    else:
        print(f"sibling: sleeping {SIBLING_SLEEP_SECONDS:.0f}s", flush=True)
        time.sleep(SIBLING_SLEEP_SECONDS)
    write_marker(sync_dir, "sibling.finished", {"time": time.time()})
    return 1


@step
def after_failing(value: int, sync_dir: str) -> None:
    """Downstream of the failing step: must never run."""
    write_marker(sync_dir, "after_failing.ran", {"time": time.time()})


@step
def after_sibling(value: int, sync_dir: str) -> None:
    """Downstream of the sibling: runs only when the execution mode lets it."""
    write_marker(sync_dir, "after_sibling.ran", {"time": time.time()})
    print("after_sibling ran", flush=True)


def build_pipeline(name: str, mode: ExecutionMode, sync_dir: str, sibling_waits_for_failure: bool):
    """Return the pipeline, run in execution mode `mode` with `sync_dir` mounted."""
    settings = DockerRsOrchestratorSettings(volumes=[f"{sync_dir}:{sync_dir}"], stop_grace_period=2)

    @pipeline(name=name, enable_cache=False, settings={"orchestrator": settings})
    def failure_modes() -> None:
        after_failing(failing(sync_dir), sync_dir)
        after_sibling(sibling(sync_dir, sibling_waits_for_failure), sync_dir)

    return failure_modes.with_options(execution_mode=mode)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True, help="pipeline name, unique per test")
    parser.add_argument("--mode", required=True, choices=[m.value for m in ExecutionMode])
    parser.add_argument("--sync-dir", required=True, help="host directory shared with the steps")
    parser.add_argument("--sibling-waits-for-failure", action="store_true")
    args = parser.parse_args()
    build_pipeline(
        args.name, ExecutionMode(args.mode), args.sync_dir, args.sibling_waits_for_failure
    )()
