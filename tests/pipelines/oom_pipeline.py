"""Pipeline whose one step allocates far more memory than its limit allows.

`hog_memory` runs with ResourceSettings(memory="400MB") and fills a 1 GB bytearray,
page by page, so the kernel's OOM killer ends the container.

The limit leaves room for the step entrypoint itself: with zenml 0.98.0 a step
container peaked at about 245 MB (memory.max_usage_in_bytes of a trivial step). Below
that, the entrypoint thrashes on page cache while it imports zenml, and the kernel
kills it after anything from a minute to many minutes, before the step runs.

Usage: python oom_pipeline.py --name NAME
"""

import argparse

from zenml import pipeline, step
from zenml.config import ResourceSettings

MEMORY_LIMIT = "400MB"
ALLOCATION_BYTES = 1000 * 1000 * 1000


@step(settings={"resources": ResourceSettings(memory=MEMORY_LIMIT)})
def hog_memory() -> int:
    """Touch every page of a buffer far larger than the step's memory limit."""
    print(f"allocating {ALLOCATION_BYTES} bytes with a limit of {MEMORY_LIMIT}", flush=True)
    buffer = bytearray(ALLOCATION_BYTES)
    for offset in range(0, ALLOCATION_BYTES, 4096):
        buffer[offset] = 1
    print("the allocation succeeded, so the memory limit was not applied", flush=True)
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
