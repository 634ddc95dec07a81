"""Run control from outside the run: detached runs, status refresh, stop, garbage
collection, retries, timeouts and step metadata.

Pipelines come from tests/pipelines/run_control_pipeline.py. Its `gate` step runs until
the test writes a release marker into a bind-mounted directory, so each test decides
when the step ends: after the client exited, after the coordinator was killed, after a
stop request, or never.

A detached run's coordinator is a background process that outlives the client, so the
`run_processes` fixture stops every client and coordinator a test leaves running
(SIGTERM, which removes the run's containers, then SIGKILL).
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import pytest
from conftest import PIPELINES_DIR, run_pipeline, zenml_cli
from zenml.client import Client
from zenml.enums import ExecutionStatus
from zenml.models import PipelineRunResponse
from zenml.utils.run_utils import refresh_run_status

from zenml_docker_rs.runs import RunRecord, runs_root

PIPELINE_SCRIPT = "run_control_pipeline.py"

# Stop grace period of the pipelines: SIGTERM first, SIGKILL after this many seconds.
GRACE_SECONDS = 2

# Time the coordinator gets, beyond the grace period, to remove every container after a
# forceful stop (the bound that `zenml pipeline runs stop` promises).
FORCEFUL_STOP_MARGIN_SECONDS = 15

# Timeout of the sleepy step, and the time allowed beyond timeout + grace period until
# its container has exited. The timeout leaves the step entrypoint time to create its
# step run first. On 2 loaded cores that took from 3.7 to over 5 s after the container
# started (zenml 0.98.0), and over 20 s at a load average of 20. A container stopped
# before then leaves no step run to carry the step's metadata.
STEP_TIMEOUT_SECONDS = 45
TIMEOUT_MARGIN_SECONDS = 10

# Time for an image build and a step container to start on a loaded machine.
STARTUP_TIMEOUT_SECONDS = 300

# Time for a step container to finish, or a run to record its end, once nothing blocks it.
FINISH_TIMEOUT_SECONDS = 120

# Time for a coordinator or client process to exit once its run has ended.
EXIT_TIMEOUT_SECONDS = 60

# Every field the orchestrator records in each step's run metadata.
METADATA_FIELDS = {
    "container_id",
    "image",
    "exit_code",
    "attempts",
    "started_at",
    "finished_at",
    "peak_memory_bytes",
    "oom_killed",
    "timed_out",
}


# --- processes ---------------------------------------------------------------------


def process_stat(pid: int) -> Optional[List[str]]:
    """Return the fields of /proc/<pid>/stat from field 3 (state) on, or None if the
    process is gone.

    The command name (field 2) is in parentheses and may contain spaces, so the
    fields are split after its closing parenthesis.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()


def process_running(pid: int, start_ticks: Optional[int] = None) -> bool:
    """Whether process `pid` runs. A zombie (exited, not yet reaped) counts as exited.

    With `start_ticks` (field 22 of its stat), a process that reused the pid does not
    count.
    """
    fields = process_stat(pid)
    if fields is None or fields[0] in ("Z", "X", "x"):
        return False
    return start_ticks is None or int(fields[19]) == start_ticks


def parent_pid(pid: int) -> Optional[int]:
    """Return the parent process id of `pid` (field 4 of its stat), or None if it is gone."""
    fields = process_stat(pid)
    return None if fields is None else int(fields[1])


def coordinator_of(record: RunRecord) -> Dict[str, Any]:
    """Return the run's coordinator as recorded in coordinator.json (pid, start_ticks)."""
    return json.loads((record.path / "coordinator.json").read_text())


def coordinator_running(record: RunRecord) -> bool:
    """Whether the process recorded as the run's coordinator still runs."""
    try:
        coordinator = coordinator_of(record)
    except (OSError, ValueError):
        return False
    return process_running(int(coordinator["pid"]), coordinator.get("start_ticks"))


def end_process(pid: int, start_ticks: Optional[int], exited: Callable[[], bool]) -> None:
    """Send SIGTERM to `pid`, then SIGKILL unless `exited()` turns true within
    EXIT_TIMEOUT_SECONDS.

    SIGTERM lets a client or coordinator stop and remove its run's containers first.
    """
    if not process_running(pid, start_ticks):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + EXIT_TIMEOUT_SECONDS
    while process_running(pid, start_ticks) and time.monotonic() < deadline:
        if exited():
            return
        time.sleep(0.5)
    if process_running(pid, start_ticks):
        os.kill(pid, signal.SIGKILL)


class RunProcesses:
    """Client processes started by a test, and the cleanup of what they leave running."""

    def __init__(self) -> None:
        self.clients: List[subprocess.Popen] = []
        self.started = time.time()

    def start_client(self, log: Path, *args: str) -> subprocess.Popen:
        """Start run_control_pipeline.py with `args`, its output going to `log`."""
        with open(log, "w") as log_file:
            process = subprocess.Popen(
                [sys.executable, PIPELINE_SCRIPT, *args],
                cwd=PIPELINES_DIR,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=os.environ.copy(),
            )
        self.clients.append(process)
        return process

    def cleanup(self) -> None:
        """End the clients still running, then every coordinator of a run record
        written during the test that still runs."""
        for process in self.clients:
            if process.poll() is None:
                end_process(process.pid, None, lambda: process.poll() is not None)
                process.wait()
        root = runs_root()
        if not root.is_dir():
            return
        for path in root.iterdir():
            if path.stat().st_ctime < self.started - 1:
                continue
            record = RunRecord(path.name)
            if not coordinator_running(record):
                continue
            coordinator = coordinator_of(record)
            end_process(
                int(coordinator["pid"]),
                coordinator.get("start_ticks"),
                lambda: not coordinator_running(record),
            )


@pytest.fixture
def run_processes(zenml_stack):
    """Track the test's client processes and stop what a failed test leaves running."""
    processes = RunProcesses()
    yield processes
    processes.cleanup()


# --- polling and lookups -------------------------------------------------------------


def wait_until(
    condition: Callable[[], Any],
    timeout: float,
    event: str,
    details: Callable[[], str] = lambda: "",
) -> Any:
    """Poll `condition` until it returns a true value, and return that value.

    Fails the test, naming `event` and adding the output of `details`, after `timeout`
    seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{event} did not happen within {timeout:.0f}s.\n{details()}")
        time.sleep(0.5)


def run_containers(orchestrator_id: str, run_id: str, running_only: bool = False) -> List[str]:
    """Return the ids of the containers of one run of this session's orchestrator."""
    command = ["docker", "container", "ls", "-q", "--no-trunc"]
    if not running_only:
        command.append("-a")
    for label in (f"io.zenml.orchestrator-id={orchestrator_id}", f"io.zenml.run-id={run_id}"):
        command += ["--filter", f"label={label}"]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return output.split()


def container_states(container_ids: List[str]) -> List[str]:
    """Return Docker's state (running, exited, ...) of each container."""
    if not container_ids:
        return []
    output = subprocess.run(
        ["docker", "container", "inspect", "--format", "{{.State.Status}}", *container_ids],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return output.split()


def last_run(pipeline_name: str) -> PipelineRunResponse:
    """Return the latest run of the pipeline, read fresh from the store."""
    return Client().get_pipeline(pipeline_name).last_run


def fresh_run(run: PipelineRunResponse) -> PipelineRunResponse:
    """Return the run as the store has it now."""
    return Client().get_pipeline_run(run.id)


def step_statuses(run: PipelineRunResponse) -> Dict[str, ExecutionStatus]:
    """Return the status of each step run, by step name."""
    return {name: step.status for name, step in run.steps.items()}


def record_of(run: PipelineRunResponse) -> RunRecord:
    """Return the orchestrator's run record of a ZenML pipeline run."""
    assert run.orchestrator_run_id, f"run {run.id} has no orchestrator run id"
    return RunRecord(run.orchestrator_run_id)


def coordinator_log(record: RunRecord) -> str:
    """Return the detached coordinator's log, or a note that it has none."""
    try:
        return f"coordinator log:\n{record.log_path.read_text()}"
    except OSError:
        return f"no coordinator log at {record.log_path}"


def wait_for_marker(sync_dir: Path, name: str, details: Callable[[], str]) -> None:
    """Wait until a step has written the marker `name`."""
    wait_until(
        lambda: (sync_dir / name).exists(),
        STARTUP_TIMEOUT_SECONDS,
        f"marker {name}",
        details,
    )


def parse_docker_time(value: str) -> datetime:
    """Parse Docker's RFC 3339 time, dropping the digits past microseconds."""
    return datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", value))


def start_detached_gated_run(name: str, sync_dir: Path) -> PipelineRunResponse:
    """Submit a detached run of the gated pipeline and return it once the client exited."""
    result = run_pipeline(
        PIPELINE_SCRIPT,
        "--kind", "gated", "--name", name, "--sync-dir", str(sync_dir),
        "--detached", "--grace", str(GRACE_SECONDS),
        timeout=STARTUP_TIMEOUT_SECONDS,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "goes on in the background" in output, output
    return last_run(name)


# --- detached runs -----------------------------------------------------------------


def test_detached_run_outlives_client(zenml_stack, run_processes, tmp_path):
    name = "e2e_run_control_detached"
    orchestrator_id = zenml_stack["orchestrator_id"]
    sync_dir = tmp_path / "sync"
    sync_dir.mkdir()

    run = start_detached_gated_run(name, sync_dir)
    record = record_of(run)
    details = lambda: coordinator_log(record)  # noqa: E731

    # The client has exited, and the gate keeps the run open until the test releases it.
    assert not fresh_run(run).status.is_finished, details()
    assert coordinator_running(record), details()
    wait_for_marker(sync_dir, "gate.running", details)
    assert run_containers(orchestrator_id, run.orchestrator_run_id, running_only=True), details()
    assert fresh_run(run).status == ExecutionStatus.RUNNING, details()

    (sync_dir / "gate.release").write_text("{}")
    wait_until(
        lambda: not coordinator_running(record),
        FINISH_TIMEOUT_SECONDS + EXIT_TIMEOUT_SECONDS,
        "exit of the coordinator",
        details,
    )

    refresh = zenml_cli("pipeline", "runs", "refresh", str(run.id), "--include-steps")
    assert "Refreshed the status" in refresh.stdout + refresh.stderr
    finished = fresh_run(run)
    assert finished.status == ExecutionStatus.COMPLETED, details()
    assert step_statuses(finished) == {
        "gate": ExecutionStatus.COMPLETED,
        "after_gate": ExecutionStatus.COMPLETED,
    }
    assert (sync_dir / "after_gate.ran").exists()
    assert record.result() == "succeeded"
    assert "Step `after_gate` succeeded." in record.log_path.read_text()
    assert run_containers(orchestrator_id, run.orchestrator_run_id) == []


def test_killed_coordinator_fails_run_and_gc(zenml_stack, run_processes, tmp_path):
    name = "e2e_run_control_killed"
    orchestrator_id = zenml_stack["orchestrator_id"]
    sync_dir = tmp_path / "sync"
    sync_dir.mkdir()
    log = tmp_path / "client.log"

    # The client stays alive after submitting, as a notebook kernel would, so the
    # killed coordinator stays a zombie child of it instead of being reaped.
    client = run_processes.start_client(
        log, "--kind", "gated", "--name", name, "--sync-dir", str(sync_dir),
        "--detached", "--grace", str(GRACE_SECONDS), "--stay-until-marker", "client.exit",
    )
    wait_until(
        lambda: "client: staying alive" in log.read_text(),
        STARTUP_TIMEOUT_SECONDS,
        "submission of the detached run",
        log.read_text,
    )
    run = last_run(name)
    record = record_of(run)
    details = lambda: f"client output:\n{log.read_text()}\n{coordinator_log(record)}"  # noqa: E731
    wait_for_marker(sync_dir, "gate.running", details)

    coordinator_pid = int(coordinator_of(record)["pid"])
    assert parent_pid(coordinator_pid) == client.pid
    os.kill(coordinator_pid, signal.SIGKILL)
    wait_until(
        lambda: (process_stat(coordinator_pid) or ["gone"])[0] == "Z",
        EXIT_TIMEOUT_SECONDS,
        "the killed coordinator becoming a zombie of the client",
    )

    # The orphaned step still runs, so the run does too.
    refreshed = refresh_run_status(fresh_run(run), include_step_updates=True)
    assert refreshed.status == ExecutionStatus.RUNNING, details()

    (sync_dir / "gate.release").write_text("{}")
    containers = run_containers(orchestrator_id, run.orchestrator_run_id)
    assert containers, details()
    wait_until(
        lambda: set(container_states(containers)) == {"exited"},
        FINISH_TIMEOUT_SECONDS,
        "exit of the orphaned step containers",
        details,
    )

    refreshed = refresh_run_status(fresh_run(run), include_step_updates=True)
    assert refreshed.status == ExecutionStatus.FAILED, details()
    assert fresh_run(run).status == ExecutionStatus.FAILED
    assert "after_gate" not in fresh_run(run).steps
    assert not (sync_dir / "after_gate.ran").exists()

    gc_command = [sys.executable, "-m", "zenml_docker_rs", "gc"]
    dry_run = subprocess.run(
        [*gc_command, "--dry-run"], capture_output=True, text=True, cwd=tmp_path
    )
    assert dry_run.returncode == 0, dry_run.stdout + dry_run.stderr
    assert (
        f"run {run.orchestrator_run_id} ({len(containers)} container(s)), "
        "coordinator gone: removing" in dry_run.stdout
    ), dry_run.stdout
    for container in containers:
        assert container[:12] in dry_run.stdout, dry_run.stdout
    assert sorted(run_containers(orchestrator_id, run.orchestrator_run_id)) == sorted(containers)

    collected = subprocess.run(gc_command, capture_output=True, text=True, cwd=tmp_path)
    assert collected.returncode == 0, collected.stdout + collected.stderr
    assert re.search(r"removed [1-9]\d* container\(s\)", collected.stdout), collected.stdout
    assert run_containers(orchestrator_id, run.orchestrator_run_id) == []

    (sync_dir / "client.exit").write_text("{}")
    assert client.wait(timeout=EXIT_TIMEOUT_SECONDS) == 0, log.read_text()


# --- stop ----------------------------------------------------------------------------


def test_forceful_stop_removes_containers(zenml_stack, run_processes, tmp_path):
    name = "e2e_run_control_forceful"
    orchestrator_id = zenml_stack["orchestrator_id"]
    sync_dir = tmp_path / "sync"
    sync_dir.mkdir()

    run = start_detached_gated_run(name, sync_dir)
    record = record_of(run)
    details = lambda: coordinator_log(record)  # noqa: E731
    wait_for_marker(sync_dir, "gate.running", details)
    assert run_containers(orchestrator_id, run.orchestrator_run_id, running_only=True)

    zenml = Path(sys.executable).parent / "zenml"
    stop = subprocess.Popen(
        [str(zenml), "pipeline", "runs", "stop", str(run.id), "-y"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=os.environ.copy(),
    )
    try:
        # The bound counts from the moment the stop request reaches the run record.
        stop_file = record.path / "stop.json"
        wait_until(stop_file.exists, EXIT_TIMEOUT_SECONDS, "the stop request")
        requested_at = stop_file.stat().st_mtime
        removed_at = wait_until(
            lambda: not run_containers(orchestrator_id, run.orchestrator_run_id) and time.time(),
            FINISH_TIMEOUT_SECONDS,
            "removal of the run's containers",
            details,
        )
        stop_output, _ = stop.communicate(timeout=FINISH_TIMEOUT_SECONDS)
    finally:
        if stop.poll() is None:
            stop.kill()
            stop.wait()

    bound = GRACE_SECONDS + FORCEFUL_STOP_MARGIN_SECONDS
    assert removed_at - requested_at <= bound, (
        f"the run's containers were removed {removed_at - requested_at:.1f}s after the stop "
        f"request, more than {bound}s.\n{details()}"
    )
    assert stop.returncode == 0, stop_output
    assert "Force stopped pipeline run" in stop_output, stop_output

    wait_until(
        lambda: fresh_run(run).status.is_finished,
        FINISH_TIMEOUT_SECONDS,
        "the end of the run in ZenML",
        details,
    )
    stopped = fresh_run(run)
    assert stopped.status == ExecutionStatus.STOPPED, details()
    assert step_statuses(stopped) == {"gate": ExecutionStatus.STOPPED}
    assert not (sync_dir / "after_gate.ran").exists()
    wait_until(
        lambda: not coordinator_running(record),
        EXIT_TIMEOUT_SECONDS,
        "exit of the coordinator",
        details,
    )
    assert record.result() == "stopped"
    assert run_containers(orchestrator_id, run.orchestrator_run_id) == []


def test_graceful_stop_lets_step_finish(zenml_stack, run_processes, tmp_path):
    name = "e2e_run_control_graceful"
    orchestrator_id = zenml_stack["orchestrator_id"]
    sync_dir = tmp_path / "sync"
    sync_dir.mkdir()
    log = tmp_path / "client.log"

    client = run_processes.start_client(
        log, "--kind", "gated", "--name", name, "--sync-dir", str(sync_dir),
        "--grace", str(GRACE_SECONDS),
    )
    details = log.read_text
    wait_for_marker(sync_dir, "gate.running", details)
    assert client.poll() is None, details()
    run = last_run(name)

    stop = zenml_cli("pipeline", "runs", "stop", str(run.id), "--graceful", "-y")
    assert "Gracefully stopped pipeline run" in stop.stdout + stop.stderr
    # Release the gate only once the client has passed the request to the core, so
    # that the downstream step would be ready while the run drains.
    wait_until(
        lambda: "Graceful stop requested" in log.read_text(),
        EXIT_TIMEOUT_SECONDS,
        "the client's notice of the graceful stop",
        details,
    )
    assert run_containers(orchestrator_id, run.orchestrator_run_id, running_only=True), details()
    (sync_dir / "gate.release").write_text("{}")

    returncode = client.wait(timeout=FINISH_TIMEOUT_SECONDS)
    output = log.read_text()
    assert returncode != 0, output
    assert "was stopped by a graceful stop request" in output
    assert "Step `gate` succeeded." in output
    assert "Step `after_gate` skipped" in output
    assert not (sync_dir / "after_gate.ran").exists()

    stopped = fresh_run(run)
    assert stopped.status == ExecutionStatus.STOPPED, output
    assert step_statuses(stopped) == {"gate": ExecutionStatus.COMPLETED}
    assert record_of(run).result() == "stopped"
    assert run_containers(orchestrator_id, run.orchestrator_run_id) == []


# --- retries, timeouts and metadata ----------------------------------------------------


def test_retry_runs_new_container(zenml_stack, run_processes, tmp_path):
    name = "e2e_run_control_retry"
    orchestrator_id = zenml_stack["orchestrator_id"]
    sync_dir = tmp_path / "sync"
    sync_dir.mkdir()

    result = run_pipeline(
        PIPELINE_SCRIPT, "--kind", "flaky", "--name", name, "--sync-dir", str(sync_dir),
        timeout=STARTUP_TIMEOUT_SECONDS,
    )

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    lines = result.stdout.splitlines()

    def first_index(pattern: str) -> int:
        matches = [i for i, line in enumerate(lines) if re.search(pattern, line)]
        assert matches, f"no line matches {pattern!r}:\n{result.stdout}"
        return matches[0]

    first_output = first_index(r"^\[flaky\] flaky: first attempt, failing on purpose$")
    first_exit = first_index(r"^step `flaky` failed with exit code 1\b")
    retrying = first_index(r"^Retrying in 1s \(attempt 2 of 3\)\.$")
    second_start = first_index(
        r"^Step `flaky` started in container `e2e_run_control_retry-flaky-[0-9a-f]{12}-retry1` "
        r"\(attempt 2\)\.$"
    )
    second_output = first_index(r"^\[flaky\] flaky: a later attempt, succeeding$")
    assert first_output < first_exit < retrying < second_start < second_output

    run = last_run(name)
    assert run.status == ExecutionStatus.COMPLETED
    metadata = run.steps["flaky"].run_metadata
    assert metadata["attempts"] == 2, metadata
    assert metadata["exit_code"] == 0, metadata
    attempts = Client().list_run_steps(pipeline_run_id=run.id, name="flaky", size=10).items
    assert sorted(step.status for step in attempts) == sorted(
        [ExecutionStatus.RETRIED, ExecutionStatus.COMPLETED]
    )
    assert run_containers(orchestrator_id, run.orchestrator_run_id) == []


def test_timeout_stops_step(zenml_stack, run_processes, tmp_path):
    name = "e2e_run_control_timeout"
    orchestrator_id = zenml_stack["orchestrator_id"]
    sync_dir = tmp_path / "sync"
    sync_dir.mkdir()

    result = run_pipeline(
        PIPELINE_SCRIPT, "--kind", "sleepy", "--name", name, "--sync-dir", str(sync_dir),
        "--timeout", str(STEP_TIMEOUT_SECONDS), "--grace", str(GRACE_SECONDS),
        timeout=STARTUP_TIMEOUT_SECONDS,
    )

    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert f"step `sleepy` timed out after {STEP_TIMEOUT_SECONDS} s and was stopped" in output

    assert (sync_dir / "sleepy.running").exists(), (
        f"the step was stopped before its function ran:\n{output}"
    )
    run = last_run(name)
    assert run.status == ExecutionStatus.FAILED, output
    assert "sleepy" in run.steps, f"the step run was never created:\n{output}"
    step = run.steps["sleepy"]
    assert step.status == ExecutionStatus.FAILED
    metadata = step.run_metadata
    assert metadata["timed_out"] is True, metadata
    assert metadata["oom_killed"] is False, metadata
    assert metadata["attempts"] == 1, metadata
    ran_for = (
        parse_docker_time(metadata["finished_at"]) - parse_docker_time(metadata["started_at"])
    ).total_seconds()
    bound = STEP_TIMEOUT_SECONDS + GRACE_SECONDS + TIMEOUT_MARGIN_SECONDS
    assert ran_for <= bound, f"the step container ran {ran_for:.1f}s, more than {bound}s"
    assert run_containers(orchestrator_id, run.orchestrator_run_id) == []


def test_timeout_during_startup_fails_run(zenml_stack, run_processes, tmp_path):
    # The step entrypoint needs seconds to import zenml and create its step run (3.7 s
    # and more on 2 loaded cores), so a 1 s timeout stops the container before any step
    # run exists that could record the failure. The run must still end as failed. A
    # zero grace period kills it at once: until ZenML installs its signal handler the
    # entrypoint ignores SIGTERM, and on a quiet machine it reached the step function
    # within a 2 s grace period.
    name = "e2e_run_control_startup_timeout"
    orchestrator_id = zenml_stack["orchestrator_id"]
    sync_dir = tmp_path / "sync"
    sync_dir.mkdir()

    result = run_pipeline(
        PIPELINE_SCRIPT, "--kind", "sleepy", "--name", name, "--sync-dir", str(sync_dir),
        "--timeout", "1", "--grace", "0",
        timeout=STARTUP_TIMEOUT_SECONDS,
    )

    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "step `sleepy` timed out after 1 s and was stopped" in output
    assert not (sync_dir / "sleepy.running").exists()
    run = last_run(name)
    assert run.status == ExecutionStatus.FAILED, output
    assert run_containers(orchestrator_id, run.orchestrator_run_id) == []


def test_metadata_of_successful_run(zenml_stack, run_processes, tmp_path):
    name = "e2e_run_control_metadata"
    orchestrator_id = zenml_stack["orchestrator_id"]
    sync_dir = tmp_path / "sync"
    sync_dir.mkdir()
    (sync_dir / "gate.release").write_text("{}")

    result = run_pipeline(
        PIPELINE_SCRIPT, "--kind", "gated", "--name", name, "--sync-dir", str(sync_dir),
        timeout=STARTUP_TIMEOUT_SECONDS,
    )

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    run = last_run(name)
    assert run.status == ExecutionStatus.COMPLETED
    assert set(run.steps) == {"gate", "after_gate"}
    spec_images = {
        step["name"]: step["container"]["image"] for step in record_of(run).spec()["steps"]
    }
    container_ids = set()
    for step_name, step in run.steps.items():
        metadata = step.run_metadata
        missing = METADATA_FIELDS - set(metadata)
        assert not missing, f"step {step_name} lacks metadata {missing}: {metadata}"
        assert re.fullmatch(r"[0-9a-f]{64}", metadata["container_id"]), metadata
        container_ids.add(metadata["container_id"])
        assert metadata["image"] == spec_images[step_name], metadata
        assert metadata["exit_code"] == 0, metadata
        assert metadata["attempts"] == 1, metadata
        assert metadata["oom_killed"] is False, metadata
        assert metadata["timed_out"] is False, metadata
        assert metadata["peak_memory_bytes"] > 0, metadata
        started_at = parse_docker_time(metadata["started_at"])
        finished_at = parse_docker_time(metadata["finished_at"])
        assert started_at <= finished_at, metadata
    assert len(container_ids) == 2
    assert run_containers(orchestrator_id, run.orchestrator_run_id) == []
