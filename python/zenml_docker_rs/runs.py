"""Run records: what any process on the Docker host can learn about a run from disk.

Each run gets a folder `<local stores path>/docker_rs/runs/<orchestrator run id>/`:

- `spec.json`: the run spec the coordinator runs;
- `run.json`: the ZenML ids of the pipeline run and of the orchestrator;
- `coordinator.json`: which process coordinates the run (pid, its start time, host);
- `coordinator.log`: the log of a detached coordinator;
- `stop.json`: a stop request from another process (`graceful` or `forceful`);
- `result.json`: how the run ended, written by the coordinator when it exits.

The folder sits in ZenML's local stores path, like the rest of the run's local state,
so the client, a detached coordinator and later `zenml` commands on the same host all
find it. Docker labels (see `status.py`) show what the containers do. These files
show whether a process still coordinates the run and which stop was requested.
"""

import json
import os
import re
import socket
from pathlib import Path
from typing import Any, Dict, Optional

from zenml.config.global_config import GlobalConfiguration

# Run ids are uuids; the pattern keeps any id from naming a path outside the runs folder.
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")

GRACEFUL = "graceful"
FORCEFUL = "forceful"

# States in /proc/<pid>/stat of a process that has exited: zombie and dead (proc(5)).
_EXITED_PROCESS_STATES = {"Z", "X", "x"}


def runs_root() -> Path:
    """Return the folder that contains every run record of this ZenML configuration.

    Returns:
        `<local stores path>/docker_rs/runs`.
    """
    return Path(GlobalConfiguration().local_stores_path) / "docker_rs" / "runs"


def _process_start_ticks(pid: int) -> Optional[int]:
    """Return the start time of process `pid` in clock ticks since boot, or None.

    Together with the pid it identifies a process even after the pid is reused. A
    process that has exited but was not yet reaped by its parent (a zombie) counts as
    gone and gives None.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces, so the
    # fields are counted from after its closing parenthesis: state is field 3, start
    # time is field 22.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in _EXITED_PROCESS_STATES:
        return None
    return int(fields[19])


def _write_json(path: Path, content: Dict[str, Any]) -> None:
    """Write a JSON file atomically, so a reader never sees half of it."""
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps(content, indent=2))
    temporary.replace(path)


def _read_json(path: Path) -> Optional[Dict[str, Any]]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class RunRecord:
    """The on-disk record of one run."""

    def __init__(self, orchestrator_run_id: str):
        """Point at the record of a run; nothing is created until written.

        Args:
            orchestrator_run_id: The run's orchestrator run id.
        """
        if not _RUN_ID.fullmatch(orchestrator_run_id):
            raise ValueError(
                f"invalid run id {orchestrator_run_id!r}: run ids of this orchestrator are "
                "made of letters, digits and '-'"
            )
        self.run_id = orchestrator_run_id
        self.path = runs_root() / orchestrator_run_id

    @property
    def log_path(self) -> Path:
        """Log file of a detached coordinator."""
        return self.path / "coordinator.log"

    def create(
        self,
        spec: Dict[str, Any],
        pipeline_run_id: Optional[str],
        orchestrator_id: Optional[str],
        pipeline_run_name: Optional[str] = None,
    ) -> None:
        """Create the record with the run's spec and its ZenML ids.

        Args:
            spec: The run spec.
            pipeline_run_id: ZenML's id of the pipeline run.
            orchestrator_id: The orchestrator component's id.
            pipeline_run_name: ZenML's name of the pipeline run, for log lines.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        _write_json(self.path / "spec.json", spec)
        _write_json(
            self.path / "run.json",
            {
                "pipeline_run_id": pipeline_run_id,
                "orchestrator_id": orchestrator_id,
                "pipeline_run_name": pipeline_run_name,
            },
        )

    def zenml_ids(self) -> Dict[str, Optional[str]]:
        """Read the run's ZenML ids.

        Returns:
            `pipeline_run_id`, `orchestrator_id` and `pipeline_run_name`, each None
            when unknown.
        """
        ids = _read_json(self.path / "run.json") or {}
        return {
            "pipeline_run_id": ids.get("pipeline_run_id"),
            "orchestrator_id": ids.get("orchestrator_id"),
            "pipeline_run_name": ids.get("pipeline_run_name"),
        }

    def spec(self) -> Dict[str, Any]:
        """Read the run's spec.

        Returns:
            The run spec.

        Raises:
            FileNotFoundError: If the record has no spec.
        """
        spec = _read_json(self.path / "spec.json")
        if spec is None:
            raise FileNotFoundError(f"run record {self.path} has no readable spec.json")
        return spec

    def claim_coordinator(self, pid: Optional[int] = None) -> None:
        """Record a process as the run's coordinator.

        Args:
            pid: The coordinator's process id; default this process.
        """
        pid = os.getpid() if pid is None else pid
        _write_json(
            self.path / "coordinator.json",
            {"pid": pid, "start_ticks": _process_start_ticks(pid), "host": socket.gethostname()},
        )

    def coordinator_alive(self) -> Optional[bool]:
        """Tell whether the run's coordinator process still runs.

        Returns:
            True or False when known; None when the coordinator runs on another host,
            where this process cannot look.
        """
        coordinator = _read_json(self.path / "coordinator.json")
        if coordinator is None:
            return False
        if coordinator.get("host") != socket.gethostname():
            return None
        start_ticks = _process_start_ticks(int(coordinator["pid"]))
        return start_ticks is not None and start_ticks == coordinator.get("start_ticks")

    def request_stop(self, mode: str) -> None:
        """Ask the coordinator to stop the run.

        Args:
            mode: `graceful` (start no new step) or `forceful` (stop every container).
        """
        if mode not in (GRACEFUL, FORCEFUL):
            raise ValueError(f"invalid stop mode {mode!r}: use {GRACEFUL!r} or {FORCEFUL!r}")
        self.path.mkdir(parents=True, exist_ok=True)
        current = self.stop_request()
        # A forceful request is never downgraded by a later graceful one.
        if current == FORCEFUL:
            return
        _write_json(self.path / "stop.json", {"mode": mode})

    def stop_request(self) -> Optional[str]:
        """Return the stop mode requested for the run, if any.

        Returns:
            `graceful`, `forceful` or None.
        """
        request = _read_json(self.path / "stop.json")
        return request.get("mode") if request else None

    def write_result(self, status: str) -> None:
        """Record how the run ended.

        Args:
            status: The run's final status from the core.
        """
        _write_json(self.path / "result.json", {"status": status})

    def result(self) -> Optional[str]:
        """Return how the run ended, if its coordinator recorded it.

        Returns:
            The final status, or None.
        """
        result = _read_json(self.path / "result.json")
        return result.get("status") if result else None

    def exists(self) -> bool:
        """Return whether the run has a record on this host."""
        return self.path.is_dir()
