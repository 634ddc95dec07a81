"""Example pipeline: one source step, N parallel branches, one join step.

Run it on a `docker_rs` stack with `python examples/fan_out.py`. Each step runs in its
own container, and the branches run at the same time.
"""

import argparse
import time
from typing import List

from zenml import pipeline, step


@step
def make_numbers(count: int) -> List[int]:
    """Produce the input that every branch reads."""
    return list(range(1, count + 1))


@step
def square_and_sum(numbers: List[int], branch: int, seconds: float) -> int:
    """One branch: sleeps to stand in for real work, then returns a checkable value."""
    print(f"branch {branch} working for {seconds}s")
    time.sleep(seconds)
    return branch * sum(n * n for n in numbers)


@step
def join(results: List[int]) -> int:
    """Add up the branch results."""
    total = sum(results)
    print(f"total of {len(results)} branches: {total}")
    return total


def build_fan_out(width: int, seconds: float):
    """Return a fan-out pipeline with `width` branches, each busy for `seconds`."""

    @pipeline(name=f"fan_out_{width}", enable_cache=False)
    def fan_out() -> int:
        numbers = make_numbers(count=10)
        results = [
            square_and_sum(numbers, branch=i, seconds=seconds, id=f"branch_{i}")
            for i in range(width)
        ]
        return join(results)

    return fan_out


def expected_total(width: int) -> int:
    """The value the join step must return for `width` branches."""
    return sum(range(width)) * sum(n * n for n in range(1, 11))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--width", type=int, default=4, help="number of parallel branches")
    parser.add_argument("--seconds", type=float, default=3.0, help="work time of each branch")
    args = parser.parse_args()
    build_fan_out(args.width, args.seconds)()
