"""Pipeline whose one step prints output that is hard to split into lines.

The step prints progress updates separated by `\\r` only, then a line of about 300 KB.
The very last bytes of the container's output are a line without a newline. An
`atexit` handler writes them straight to file descriptor 1 when the step entrypoint
exits, after everything ZenML prints.

Usage: python output_pipeline.py --name NAME
"""

import argparse
import atexit
import os
import sys

from zenml import pipeline, step

PROGRESS_PERCENTAGES = (0, 25, 50, 75, 100)
LONG_LINE_ENTRIES = 45_000
FINAL_LINE = "final words of the container, without a newline"


def long_line() -> str:
    """Return a line of about 300 KB whose every piece can be checked: 000000,000001,..."""
    return "LONG-BEGIN " + ",".join(f"{i:06d}" for i in range(LONG_LINE_ENTRIES)) + " LONG-END"


def _write_final_line() -> None:
    os.write(1, FINAL_LINE.encode())


@step
def print_edge_cases() -> None:
    """Print `\\r` progress, a 300 KB line, and arrange a last line without a newline."""
    for percentage in PROGRESS_PERCENTAGES:
        sys.stdout.write(f"progress {percentage}%\r")
        sys.stdout.flush()
    sys.stdout.write("\n")
    print(long_line(), flush=True)
    print("after the long line", flush=True)
    atexit.register(_write_final_line)


def build_pipeline(name: str):
    """Return the one-step output pipeline."""

    @pipeline(name=name, enable_cache=False)
    def output_edge_cases() -> None:
        print_edge_cases()

    return output_edge_cases


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True, help="pipeline name, unique per test")
    args = parser.parse_args()
    build_pipeline(args.name)()
