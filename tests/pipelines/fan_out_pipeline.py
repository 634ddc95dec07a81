"""Fan-out pipeline for the end-to-end tests: one source step, N branches, one join.

Every step records `socket.gethostname()`, which Docker sets to the container id, as
ZenML run metadata under `hostname`. Every branch returns `time.time()` at its start
and end, taken inside its container.

With `--barrier`, each branch records its start time as ZenML run metadata and then
waits until every branch has recorded one. The branches pass that barrier only if
they run at the same time, so their intervals overlap however slowly the containers
start. A branch that waits in vain fails with a message saying so.

Usage: python fan_out_pipeline.py --name NAME [--width N] [--barrier]
       [--seconds S] [--max-parallelism K]
"""

import argparse
import socket
import time
from typing import Any, Dict, List, Optional

from zenml import get_step_context, log_metadata, pipeline, step
from zenml.client import Client

BARRIER_TIMEOUT_SECONDS = 240.0


@step
def make_numbers(count: int) -> List[int]:
    """Produce the input that every branch reads."""
    _record_hostname()
    print(f"make_numbers: numbers from 1 to {count}")
    return list(range(1, count + 1))


@step
def branch(
    numbers: List[int], index: int, width: int, barrier: bool, seconds: float
) -> Dict[str, Any]:
    """Return a checkable value and the start and end of the branch as Unix times."""
    start = time.time()
    _record_hostname()
    print(f"branch {index} started")
    if barrier:
        log_metadata(metadata={"branch_start": start})
        _wait_for_all_branches(width)
    time.sleep(seconds)
    value = index * sum(n * n for n in numbers)
    print(f"branch {index} computed {value}")
    return {"index": index, "start": start, "end": time.time(), "value": value}


def _record_hostname() -> None:
    log_metadata(metadata={"hostname": socket.gethostname()})


def _wait_for_all_branches(width: int) -> None:
    """Block until every branch of this run has logged its start time."""
    run_id = get_step_context().pipeline_run.id
    names = {f"branch_{i}" for i in range(width)}
    deadline = time.monotonic() + BARRIER_TIMEOUT_SECONDS
    while True:
        steps = Client().get_pipeline_run(run_id).steps
        started = {name for name in names if name in steps and "branch_start" in steps[name].run_metadata}
        if started == names:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"branches {sorted(names - started)} did not start within "
                f"{BARRIER_TIMEOUT_SECONDS:.0f}s of this one: the branches did not run in parallel"
            )
        time.sleep(0.5)


@step
def join(results: List[Dict[str, Any]]) -> int:
    """Add up the branch values."""
    _record_hostname()
    total = sum(result["value"] for result in results)
    print(f"join of {len(results)} branches: total {total}")
    return total


def build_pipeline(name: str, width: int, barrier: bool, seconds: float, max_parallelism: Optional[int]):
    """Return the fan-out pipeline with `width` branches named branch_0 ... branch_<width-1>."""
    settings = {}
    if max_parallelism is not None:
        # The settings key with the flavor name, as a user writes it in a YAML config.
        settings["orchestrator.docker_rs"] = {"max_parallelism": max_parallelism}

    @pipeline(name=name, enable_cache=False, settings=settings)
    def fan_out() -> None:
        numbers = make_numbers(count=10)
        results = [
            branch(numbers, index=i, width=width, barrier=barrier, seconds=seconds, id=f"branch_{i}")
            for i in range(width)
        ]
        join(results)

    return fan_out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True, help="pipeline name, unique per test")
    parser.add_argument("--width", type=int, default=4, help="number of parallel branches")
    parser.add_argument("--barrier", action="store_true", help="make the branches wait for each other")
    parser.add_argument("--seconds", type=float, default=1.0, help="sleep of each branch, in seconds")
    parser.add_argument("--max-parallelism", type=int, default=None, help="orchestrator setting")
    args = parser.parse_args()
    build_pipeline(args.name, args.width, args.barrier, args.seconds, args.max_parallelism)()
