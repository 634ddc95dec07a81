"""Pipeline whose one step allocates far more memory than its limit allows.

`hog_memory` runs with ResourceSettings(memory="64MB") and fills a 300 MB bytearray,
page by page, so the kernel's OOM killer ends the container.

NOTE: with zenml 0.98.0 the step entrypoint needs more than 64 MB to import zenml, so
the container may be killed before `hog_memory` starts. The orchestrator reports
the same out-of-memory error either way.

Usage: python oom_pipeline.py --name NAME
"""

import argparse

from zenml import pipeline, step
from zenml.config import ResourceSettings

MEMORY_LIMIT = "64MB"
ALLOCATION_BYTES = 300 * 1000 * 1000


@step(settings={"resources": ResourceSettings(memory=MEMORY_LIMIT)})
def hog_memory() -> int:
    """Touch every page of a buffer far larger than the step's memory limit."""
    print(f"allocating {ALLOCATION_BYTES} bytes with a limit of {MEMORY_LIMIT}", flush=True)
    buffer = bytearray(ALLOCATION_BYTES)
    for offset in range(0, ALLOCATION_BYTES, 4096):
        buffer[offset] = 1
    return len(buffer)


def build_pipeline(name: str):
    """Return the one-step pipeline that runs out of memory."""

    @pipeline(name=name, enable_cache=False)
    def out_of_memory() -> None:
        hog_memory()

    return out_of_memory


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True, help="pipeline name, unique per test")
    args = parser.parse_args()
    build_pipeline(args.name)()
