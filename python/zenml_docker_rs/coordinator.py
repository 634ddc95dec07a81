"""The detached coordinator: a background process that runs one run to its end.

`launch_detached` starts `python -m zenml_docker_rs.coordinator <run id>` in a new
session, so it survives the client's exit and a closed terminal (no SIGHUP reaches it),
with its output in the run record's `coordinator.log`. The process reads the spec from
the run record, runs it like a synchronous client would, records the end in ZenML
and exits.
"""

import os
import subprocess
import sys
from typing import List, Optional
from uuid import UUID

from zenml_docker_rs.runs import RunRecord


def launch_detached(record: RunRecord) -> int:
    """Start the coordinator of a run in the background.

    Args:
        record: The run's record, with its spec written.

    Returns:
        The coordinator's process id.
    """
    with open(record.log_path, "ab") as log, open(os.devnull, "rb") as no_input:
        process = subprocess.Popen(
            [sys.executable, "-m", "zenml_docker_rs.coordinator", record.run_id],
            stdin=no_input,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            env=os.environ.copy(),
        )
    # Recorded here, before the child has even imported zenml, so that a status query
    # or stop request in the meantime finds a live coordinator rather than a dead one.
    record.claim_coordinator(process.pid)
    return process.pid


def main(argv: Optional[List[str]] = None) -> int:
    """Run the run whose id is the only argument; the coordinator process's entry point.

    Args:
        argv: Command-line arguments without the program name.

    Returns:
        0 when the run succeeded, 1 otherwise, 2 for a usage error.
    """
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m zenml_docker_rs.coordinator RUN_ID", file=sys.stderr)
        return 2
    record = RunRecord(args[0])
    if not record.exists():
        print(f"error: no run record at {record.path}", file=sys.stderr)
        return 2

    from zenml.logger import get_logger

    from zenml_docker_rs.monitor import RunMonitor

    logger = get_logger("zenml_docker_rs.coordinator")
    ids = record.zenml_ids()
    pipeline_run_id = UUID(ids["pipeline_run_id"]) if ids["pipeline_run_id"] else None
    orchestrator_id = UUID(ids["orchestrator_id"]) if ids["orchestrator_id"] else None
    logger.info("Coordinator of run `%s` started (pid %d).", record.run_id, os.getpid())
    if record.stop_request() is not None:
        # Stopped before it started: start nothing.
        logger.info("Run `%s` was stopped before it started.", record.run_id)
        record.write_result("stopped")
        if pipeline_run_id is not None:
            from zenml_docker_rs import reporting

            reporting.record_run_end(pipeline_run_id, {}, stopped_by_request=True)
        return 0
    try:
        monitor = RunMonitor.start(record.spec(), record, pipeline_run_id, orchestrator_id)
    except Exception as error:  # noqa: BLE001 - the log is the only place it can go
        logger.error("Run `%s` could not start: %s", record.run_id, error)
        record.write_result("failed")
        if pipeline_run_id is not None:
            from zenml_docker_rs import reporting

            reporting.record_run_end(pipeline_run_id, {}, stopped_by_request=False)
        return 1
    try:
        monitor.wait()
    except Exception as error:  # noqa: BLE001 - the log is the only place it can go
        logger.error("Run `%s` did not succeed: %s", record.run_id, error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
