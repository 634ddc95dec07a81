"""Coordination between step containers and the test through files in a shared directory.

The tests bind-mount one host directory into every step container of a pipeline (the
`volumes` setting) at the same path. Steps write marker files there that the test
reads, and wait for each other's markers, so that the order of events in a test does
not depend on how fast containers start on a loaded machine.

Waiting for another step's process to end uses `flock`: the step holds an exclusive
lock on a file until its process exits, and the kernel releases the lock at that
moment, even when the process is killed. The lock works across containers because
they share the host's kernel and the file's inode.
"""

import fcntl
import json
import os
import time
from typing import Any, Dict, List

# Long enough for sibling containers to start on a slow, loaded machine, and short
# enough that a step waiting for a sibling that never runs fails before the test's
# timeout.
WAIT_TIMEOUT_SECONDS = 240.0

# Open lock files of this process, kept so that the locks last until the process exits.
_held_locks: List[Any] = []


def write_marker(directory: str, name: str, content: Dict[str, Any]) -> None:
    """Write `name` into `directory` atomically, as JSON, so a reader never sees half of it."""
    path = os.path.join(directory, name)
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "w") as file:
        json.dump(content, file)
    os.replace(temporary, path)


def wait_for_marker(directory: str, name: str) -> None:
    """Block until `name` exists in `directory`.

    Raises:
        TimeoutError: If the marker does not appear within WAIT_TIMEOUT_SECONDS.
    """
    path = os.path.join(directory, name)
    deadline = time.monotonic() + WAIT_TIMEOUT_SECONDS
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"marker {path} did not appear within {WAIT_TIMEOUT_SECONDS:.0f}s: "
                "the step that writes it never ran at the same time as this one"
            )
        time.sleep(0.2)


def hold_lock_until_exit(directory: str, name: str) -> None:
    """Take an exclusive lock on `name` and keep it until this process exits."""
    file = open(os.path.join(directory, name), "w")
    fcntl.flock(file, fcntl.LOCK_EX)
    _held_locks.append(file)


def wait_for_lock_release(directory: str, name: str) -> None:
    """Block until the process holding the lock on `name` has exited.

    The caller must first wait for a marker that the holder writes after taking the
    lock, otherwise this may take the lock before the holder does.

    Raises:
        TimeoutError: If the lock is still held after WAIT_TIMEOUT_SECONDS.
    """
    path = os.path.join(directory, name)
    deadline = time.monotonic() + WAIT_TIMEOUT_SECONDS
    with open(path, "a") as file:
        while True:
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"the process holding {path} was still running after "
                        f"{WAIT_TIMEOUT_SECONDS:.0f}s"
                    ) from None
                time.sleep(0.2)
        fcntl.flock(file, fcntl.LOCK_UN)
