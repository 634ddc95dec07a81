"""Interrupting a running pipeline process with SIGINT (Ctrl-C) or SIGTERM.

The process must stop and remove every container of the run within the stop grace
period plus 5 seconds, including a step that ignores SIGTERM and needs SIGKILL, exit
non-zero, and leave the run failed in ZenML instead of running.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import pytest
from conftest import PIPELINES_DIR
from zenml.client import Client
from zenml.enums import ExecutionStatus

# Stop grace period of the pipeline: SIGTERM first, SIGKILL after this many seconds.
GRACE_SECONDS = 2

# Time allowed, beyond the grace period, until no container of the run is left.
CLEANUP_SECONDS = 5

# Time for the image build and for both long-running steps to start, on a loaded machine.
STARTUP_TIMEOUT_SECONDS = 480


def run_containers(label_filters: List[str], include_stopped: bool) -> List[str]:
    """Return the ids of containers carrying all the labels, running ones only unless asked."""
    command = ["docker", "container", "ls", "-q"]
    if include_stopped:
        command.append("-a")
    for label in label_filters:
        command += ["--filter", f"label={label}"]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return output.split()


def wait_until_steps_run(
    process: subprocess.Popen, sync_dir: Path, label_filters: List[str], log: Path
) -> None:
    """Wait until both long-running steps run in their containers, with their signal
    handling in place, or fail if the process ends or takes too long."""
    markers = [sync_dir / "sleeper.running", sync_dir / "stubborn.running"]
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while True:
        if process.poll() is not None:
            pytest.fail(f"the pipeline ended before it was interrupted:\n{log.read_text()}")
        running = run_containers(label_filters, include_stopped=False)
        if len(running) == 2 and all(marker.exists() for marker in markers):
            return
        if time.monotonic() > deadline:
            pytest.fail(
                f"the long-running steps did not start within {STARTUP_TIMEOUT_SECONDS}s "
                f"(running containers: {running}):\n{log.read_text()}"
            )
        time.sleep(0.5)


@pytest.mark.parametrize(
    ("signal_number", "announcement"),
    [(signal.SIGINT, "Ctrl-C received"), (signal.SIGTERM, "SIGTERM received")],
    ids=["sigint", "sigterm"],
)
def test_signal_removes_run_containers(zenml_stack, tmp_path, signal_number, announcement):
    name = f"e2e_interrupt_{signal.Signals(signal_number).name.lower()}"
    sync_dir = tmp_path / "sync"
    sync_dir.mkdir()
    log = tmp_path / "pipeline.log"
    label_filters = [
        f"io.zenml.orchestrator-id={zenml_stack['orchestrator_id']}",
        f"io.zenml.pipeline={name}",
    ]

    with open(log, "w") as log_file:
        process = subprocess.Popen(
            [
                sys.executable, "interrupt_pipeline.py", "--name", name,
                "--sync-dir", str(sync_dir), "--grace", str(GRACE_SECONDS),
            ],
            cwd=PIPELINES_DIR,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=os.environ.copy(),
        )
    try:
        wait_until_steps_run(process, sync_dir, label_filters, log)
        process.send_signal(signal_number)

        # Every container of the run, running or not, is gone within grace + 5 s.
        deadline = time.monotonic() + GRACE_SECONDS + CLEANUP_SECONDS
        remaining = run_containers(label_filters, include_stopped=True)
        while remaining and time.monotonic() < deadline:
            time.sleep(0.2)
            remaining = run_containers(label_filters, include_stopped=True)
        assert not remaining, (
            f"containers {remaining} of the run still exist {GRACE_SECONDS + CLEANUP_SECONDS}s "
            f"after {signal.Signals(signal_number).name}:\n{log.read_text()}"
        )

        returncode = process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = log.read_text()
    assert returncode != 0, output
    assert announcement in output
    assert "was cancelled by" in output

    run = Client().get_pipeline(name).last_run
    assert run.status == ExecutionStatus.FAILED, output
    statuses = {step_name: step.status for step_name, step in run.steps.items()}
    for step_name in ("sleeper", "stubborn"):
        assert statuses[step_name].is_finished, statuses
        assert statuses[step_name] != ExecutionStatus.COMPLETED, statuses
    assert "after_both" not in statuses
    assert not (sync_dir / "after_both.ran").exists()
