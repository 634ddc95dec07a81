"""Pipelines for the tests of detached runs, stops, retries, timeouts and metadata.

`--kind gated`:

    gate ──> after_gate

`gate` writes the marker `gate.running` into the shared directory `--sync-dir`, then
waits until the test writes `gate.release`, and returns. So the test decides when the
step ends: after the client exited, after a stop request, or never. `after_gate` writes
`after_gate.ran`, so the test can tell whether it started.

`--kind flaky`: one step, retried by the orchestrator (`max_retries=2`, `delay=1`). Its
first attempt writes `flaky.first_attempt`, prints FIRST_ATTEMPT_LINE and raises; the
next attempt finds the marker and succeeds.

`--kind sleepy`: one step that sleeps SLEEPY_SECONDS, far longer than its timeout of
`--timeout` seconds, so the orchestrator stops it.

The shared directory is bind-mounted into every step container at the same path.

With `--stay-until-marker NAME`, the process stays alive after the pipeline call
returns, until the test writes NAME into the shared directory. A detached run's
coordinator is a child of this process, so it stays a zombie once it exits, as under a
long-lived client such as a notebook kernel.

Usage: python run_control_pipeline.py --kind gated|flaky|sleepy --name NAME
       --sync-dir DIR [--detached] [--grace SECONDS] [--timeout SECONDS]
       [--stay-until-marker NAME]
"""

import argparse
import os
import time

from sync_files import wait_for_marker, write_marker
from zenml import pipeline, step
from zenml.config.retry_config import StepRetryConfig

from zenml_docker_rs import DockerRsOrchestratorSettings

FIRST_ATTEMPT_LINE = "flaky: first attempt, failing on purpose"
FIRST_ATTEMPT_ERROR = "the first attempt of the flaky step raises on purpose"
SECOND_ATTEMPT_LINE = "flaky: a later attempt, succeeding"

# Far longer than the timeout of the step, so only the timeout ends it.
SLEEPY_SECONDS = 120.0


@step
def gate(sync_dir: str) -> int:
    """Run until the test writes the release marker."""
    write_marker(sync_dir, "gate.running", {"time": time.time()})
    print("gate: running, waiting for the release marker", flush=True)
    wait_for_marker(sync_dir, "gate.release")
    print("gate: released", flush=True)
    return 1


@step
def after_gate(value: int, sync_dir: str) -> int:
    """Downstream of the gate: records that it started."""
    write_marker(sync_dir, "after_gate.ran", {"time": time.time()})
    print("after_gate: ran", flush=True)
    return value + 1


@step(retry=StepRetryConfig(max_retries=2, delay=1))
def flaky(sync_dir: str) -> int:
    """Fail on the first attempt, succeed on the next."""
    if not os.path.exists(os.path.join(sync_dir, "flaky.first_attempt")):
        write_marker(sync_dir, "flaky.first_attempt", {"time": time.time()})
        print(FIRST_ATTEMPT_LINE, flush=True)
        raise RuntimeError(FIRST_ATTEMPT_ERROR)
    print(SECOND_ATTEMPT_LINE, flush=True)
    return 2


@step
def sleepy(sync_dir: str) -> int:
    """Sleep far longer than the step's timeout."""
    write_marker(sync_dir, "sleepy.running", {"time": time.time()})
    print(f"sleepy: sleeping {SLEEPY_SECONDS:.0f}s", flush=True)
    time.sleep(SLEEPY_SECONDS)
    return 3


def build_pipeline(
    kind: str, name: str, sync_dir: str, detached: bool, grace: int, timeout: int
):
    """Return the pipeline of `kind` with `sync_dir` mounted into its steps."""
    settings = DockerRsOrchestratorSettings(
        volumes=[f"{sync_dir}:{sync_dir}"],
        stop_grace_period=grace,
        synchronous=not detached,
        timeout=timeout if kind == "sleepy" else None,
    )

    if kind == "gated":

        @pipeline(name=name, enable_cache=False, settings={"orchestrator": settings})
        def gated() -> None:
            after_gate(gate(sync_dir), sync_dir)

        return gated

    if kind == "flaky":

        @pipeline(name=name, enable_cache=False, settings={"orchestrator": settings})
        def retried() -> None:
            flaky(sync_dir)

        return retried

    @pipeline(name=name, enable_cache=False, settings={"orchestrator": settings})
    def timed() -> None:
        sleepy(sync_dir)

    return timed


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kind", required=True, choices=["gated", "flaky", "sleepy"])
    parser.add_argument("--name", required=True, help="pipeline name, unique per test")
    parser.add_argument("--sync-dir", required=True, help="host directory shared with the steps")
    parser.add_argument(
        "--detached", action="store_true", help="return once submitted (synchronous=False)"
    )
    parser.add_argument(
        "--grace", type=int, default=2, help="stop grace period of the steps, in seconds"
    )
    parser.add_argument(
        "--timeout", type=int, default=5, help="timeout of the sleepy step, in seconds"
    )
    parser.add_argument(
        "--stay-until-marker",
        help="after the pipeline call, wait until this marker exists in the shared directory",
    )
    args = parser.parse_args()
    build_pipeline(
        args.kind, args.name, args.sync_dir, args.detached, args.grace, args.timeout
    )()
    if args.stay_until_marker:
        print("client: staying alive until the marker appears", flush=True)
        wait_for_marker(args.sync_dir, args.stay_until_marker)
