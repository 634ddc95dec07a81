"""Coordinating a run of the Rust core: logging its events, acting on interrupts and stop
requests, and recording the end in ZenML.

The core runs the containers on its own threads. This module waits for batches of
events (with the GIL released) and logs them. On Ctrl-C or SIGTERM it cancels the run
and waits until every container of it is stopped and removed. It also reads the run
record for stop requests from other processes: a graceful one stops new steps from
starting, a forceful one cancels the run. The process running this loop is the run's
coordinator: the client for a synchronous run, a background process for a detached one.
"""

import contextlib
import signal
import threading
import time
from types import FrameType
from typing import Any, Dict, Iterator, Optional, Tuple
from uuid import UUID

from zenml.logger import get_logger

from zenml_docker_rs import reporting
from zenml_docker_rs.runs import FORCEFUL, GRACEFUL, RunRecord

logger = get_logger(__name__)

# How long one wait for events lasts; Ctrl-C is noticed between two waits.
EVENT_WAIT_SECONDS = 0.2

# How often the run record is read for stop requests from other processes.
STOP_REQUEST_POLL_SECONDS = 1.0

# A line longer than this is logged in parts of about this size, which bounds the
# memory held for a step that prints without ever ending a line. The core delivers
# such lines in 64 KiB pieces, and the monitor joins pieces up to this length.
MAX_JOINED_LINE_CHARS = 4 * 1024 * 1024

# Time allowed, beyond the longest stop grace period, for the core to stop and
# remove every container after a cancel.
CLEANUP_MARGIN_SECONDS = 30.0


class RunCancelledError(RuntimeError):
    """The run was interrupted; its containers were stopped and removed."""


class RunStoppedError(RuntimeError):
    """The run was stopped by a stop request, from `zenml pipeline runs stop` or the API."""


class RunFailedError(RuntimeError):
    """At least one step failed; the message has each failed step's cause."""


class _Terminated(BaseException):
    """Raised in the main thread by the SIGTERM and SIGHUP handler while a run is followed."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signal_name = signal.Signals(signum).name


class RunMonitor:
    """Coordinates one run of the core until it ends."""

    def __init__(
        self,
        handle: Any,
        spec: Dict[str, Any],
        record: RunRecord,
        pipeline_run_id: Optional[UUID],
        orchestrator_id: Optional[UUID],
    ):
        """Wrap a started run.

        Args:
            handle: The core's `RunHandle`.
            spec: The run spec the run was started with.
            record: The run's record, for stop requests and the result.
            pipeline_run_id: ZenML's id of the pipeline run, to record the end.
            orchestrator_id: The orchestrator component, for step metadata.
        """
        self._handle = handle
        self._spec = spec
        self._record = record
        self._pipeline_run_id = pipeline_run_id
        self._orchestrator_id = orchestrator_id
        self._steps = {step["name"]: step for step in spec["steps"]}
        self._final_steps: Dict[str, Dict[str, Any]] = {}
        self._status: Optional[str] = None
        self._stop_mode: Optional[str] = None
        self._next_stop_check = 0.0
        # The start of a line whose rest is still to come, by step and stream.
        self._unfinished_lines: Dict[Tuple[str, str], str] = {}
        run_name = record.zenml_ids().get("pipeline_run_name")
        # How log lines and errors name the run: ZenML's name, which `zenml pipeline
        # runs` commands take, with this orchestrator's run id for `docker ps` filters.
        self._run_label = (
            f"Pipeline run `{run_name}` (docker_rs run id {spec['run_id']})"
            if run_name
            else f"Run `{spec['run_id']}`"
        )

    @classmethod
    def start(
        cls,
        spec: Dict[str, Any],
        record: RunRecord,
        pipeline_run_id: Optional[UUID] = None,
        orchestrator_id: Optional[UUID] = None,
    ) -> "RunMonitor":
        """Start a run in the core, with this process as its coordinator.

        Args:
            spec: The run spec.
            record: The run's record.
            pipeline_run_id: ZenML's id of the pipeline run.
            orchestrator_id: The orchestrator component.

        Returns:
            The monitor of the started run.
        """
        from zenml_docker_rs import _core

        run_name = record.zenml_ids().get("pipeline_run_name")
        logger.info(
            "Starting %s with %d step container(s) (%s run id `%s`).",
            f"pipeline run `{run_name}`" if run_name else "the run",
            len(spec["steps"]),
            "docker_rs",
            spec["run_id"],
        )
        record.claim_coordinator()
        handle = _core.start_run(spec)
        return cls(handle, spec, record, pipeline_run_id, orchestrator_id)

    @property
    def status(self) -> Optional[str]:
        """Final status of the run from the core, once it ended."""
        return self._status

    @property
    def steps(self) -> Dict[str, Dict[str, Any]]:
        """Final report of each step, by step name, once the run ended."""
        return self._final_steps

    def wait(self) -> None:
        """Follow the run to its end, logging its output and step states.

        Ctrl-C (SIGINT) and SIGTERM cancel the run: every running container is stopped,
        SIGTERM first and SIGKILL after the grace period, and removed before this
        raises.

        Raises:
            RunCancelledError: If the run was interrupted.
            RunStoppedError: If a stop request ended the run.
            RunFailedError: If a step failed.
        """
        started = time.monotonic()
        interrupted: Optional[str] = None
        with _sigterm_raises():
            try:
                self._follow(deadline=None)
            except (KeyboardInterrupt, _Terminated) as signal_received:
                interrupted = (
                    signal_received.signal_name
                    if isinstance(signal_received, _Terminated)
                    else "Ctrl-C"
                )

        if interrupted:
            self._cancel(interrupted)
        self._finish(interrupted)
        logger.info(
            "%s finished in %.1fs.", self._run_label, time.monotonic() - started
        )

    def _finish(self, interrupted: Optional[str]) -> None:
        """Record the run's end on disk and in ZenML, and raise if it did not succeed."""
        stopped_by_request = self._stop_mode is not None and self._status != "failed"
        if interrupted:
            result = "cancelled"
        elif stopped_by_request:
            result = "stopped"
        else:
            result = self._status or "failed"
        self._record.write_result(result)

        if result == "succeeded":
            return
        self._record_end(stopped_by_request=result == "stopped")
        if interrupted:
            raise RunCancelledError(
                f"{self._run_label} was cancelled by {interrupted}; its containers were "
                "stopped and removed."
            )
        if result == "stopped":
            raise RunStoppedError(
                f"{self._run_label} was stopped by a {self._stop_mode} stop request; no "
                "container of it remains."
            )
        raise RunFailedError(self._failure_summary())

    def _cancel(self, reason: str) -> None:
        """Cancel the run and wait until the core has cleaned up every container."""
        grace = max(step["container"].get("stop_grace_period_secs", 10) for step in self._spec["steps"])
        logger.warning(
            "%s received: stopping every container of run `%s` (grace period %ss).",
            reason,
            self._spec["run_id"],
            grace,
        )
        self._handle.cancel()
        deadline = time.monotonic() + grace + CLEANUP_MARGIN_SECONDS
        while True:
            try:
                with _sigterm_raises():
                    self._follow(deadline=deadline)
                return
            except (KeyboardInterrupt, _Terminated):
                logger.warning("Still stopping the containers of the run; please wait.")

    def _follow(self, deadline: Optional[float]) -> None:
        """Take events until the run ends, or until `deadline` (monotonic seconds)."""
        while deadline is None or time.monotonic() < deadline:
            events = self._handle.next_events(EVENT_WAIT_SECONDS)
            if events is None:
                self._log_unfinished_lines()
                return
            for event in events:
                self._handle_event(event)
            self._check_stop_request()
        logger.error(
            "Run `%s` did not finish cleaning up in time; check for leftover containers "
            "with `docker ps -a --filter label=io.zenml.run-id=%s`.",
            self._spec["run_id"],
            self._spec["run_id"],
        )

    def _check_stop_request(self) -> None:
        """Pass a stop request from the run record to the core, once per mode."""
        now = time.monotonic()
        if now < self._next_stop_check or self._stop_mode == FORCEFUL:
            return
        self._next_stop_check = now + STOP_REQUEST_POLL_SECONDS
        mode = self._record.stop_request()
        if mode is None or mode == self._stop_mode:
            return
        self._stop_mode = mode
        if mode == GRACEFUL:
            logger.warning(
                "Graceful stop requested: run `%s` starts no new step; running steps finish.",
                self._spec["run_id"],
            )
            self._handle.drain()
        else:
            logger.warning(
                "Forceful stop requested: stopping every container of run `%s`.",
                self._spec["run_id"],
            )
            self._handle.cancel()

    def _handle_event(self, event: Dict[str, Any]) -> None:
        kind = event["kind"]
        if kind == "log":
            self._log_output(event)
        elif kind == "step":
            self._log_unfinished_lines(event["step"])
            self._log_step_state(event)
            if event["state"] in ("succeeded", "failed", "stopped"):
                self._publish_step_metadata(event["step"], event)
        elif kind == "run_finished":
            self._status = event["status"]
            self._final_steps = event["steps"]

    def _log_output(self, event: Dict[str, Any]) -> None:
        """Log the output lines of one event as one record, each line with its prefix.

        A line that goes on in the next event is held back until it ends, or until it
        reaches MAX_JOINED_LINE_CHARS.
        """
        key = (event["step"], event["stream"])
        text = self._unfinished_lines.pop(key, "") + event["text"]
        if event["continued"]:
            finished, newline, unfinished = text.rpartition("\n")
            if len(unfinished) < MAX_JOINED_LINE_CHARS:
                self._unfinished_lines[key] = unfinished
                if not newline:
                    return
                text = finished
        _log_lines(event["step"], text)

    def _log_unfinished_lines(self, step: Optional[str] = None) -> None:
        """Log the lines held back for `step`, or for every step when it is None.

        Called when a step changes state and when the run ended. The core ends every
        attempt's output with a finished line, so this acts only if that end never
        came, and it keeps the held text from joining the next attempt's output.
        """
        for key in list(self._unfinished_lines):
            if step is None or key[0] == step:
                _log_lines(key[0], self._unfinished_lines.pop(key))

    def _log_step_state(self, event: Dict[str, Any]) -> None:
        step = event["step"]
        state = event["state"]
        message = event.get("message")
        if state == "running":
            attempt = event.get("attempt", 1)
            container = self._steps[step]["container"]["name"]
            suffix = ""
            if attempt > 1:
                # The core names the container of attempt n > 1 `<name>-retry<n-1>`.
                container = f"{container}-retry{attempt - 1}"
                suffix = f" (attempt {attempt})"
            logger.info("Step `%s` started in container `%s`%s.", step, container, suffix)
        elif state == "succeeded":
            logger.info("Step `%s` succeeded.", step)
        elif state in ("failed", "retrying"):
            logger.error("%s", _without_output_tail(message or f"step `{step}` {state}"))
        elif state in ("stopped", "skipped"):
            logger.warning("Step `%s` %s: %s", step, state, message)

    def _publish_step_metadata(self, step: str, report: Dict[str, Any]) -> None:
        if self._pipeline_run_id is None or self._orchestrator_id is None:
            return
        metadata = reporting.step_metadata(report, self._steps[step]["container"]["image"])
        try:
            reporting.publish_step_metadata(
                self._pipeline_run_id, self._orchestrator_id, step, metadata
            )
        except Exception as error:  # noqa: BLE001 - metadata must not break the run
            logger.warning("Could not record the metadata of step `%s`: %s", step, error)

    def _failure_summary(self) -> str:
        failed = [
            report.get("message") or f"step `{name}` failed"
            for name, report in self._final_steps.items()
            if report["state"] == "failed"
        ]
        not_run = [
            name
            for name, report in self._final_steps.items()
            if report["state"] in ("stopped", "skipped")
        ]
        summary = f"{self._run_label} failed.\n" + "\n\n".join(failed)
        if not_run:
            summary += f"\n\nSteps stopped or not run: {', '.join(sorted(not_run))}."
        return summary

    def _record_end(self, stopped_by_request: bool) -> None:
        """Record in ZenML how the run ended, for steps that could not record it."""
        if self._pipeline_run_id is None:
            return
        try:
            reporting.record_run_end(self._pipeline_run_id, self._final_steps, stopped_by_request)
        except Exception as error:  # noqa: BLE001 - the run's own error matters more
            logger.warning(
                "Could not record the end of pipeline run %s in ZenML: %s",
                self._pipeline_run_id,
                error,
            )


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into an exception in the main thread while the block runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_terminated(signum: int, frame: Optional[FrameType]) -> None:
        raise _Terminated(signum)

    # SIGHUP (the terminal closed) ends the client like SIGTERM, so it is handled the
    # same way: the run is cancelled and its containers removed before the exit.
    previous = {
        signum: signal.signal(signum, raise_terminated)
        for signum in (signal.SIGTERM, signal.SIGHUP)
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _log_lines(step: str, text: str) -> None:
    """Log the lines of `text` (joined with `\\n`) as one INFO record, each line
    prefixed with `[step] `, so they read as if each had its own record."""
    prefix = f"[{step}] "
    logger.info("%s%s", prefix, text.replace("\n", "\n" + prefix))


def _without_output_tail(message: str) -> str:
    """Return a step failure message without its last output lines.

    The lines were logged live just before, and the run's final error repeats them,
    so the log line of the failure itself names only the cause (and the retry, if any).
    """
    head, found, rest = message.partition(". Last ")
    if not found:
        return message
    retry_at = rest.find("\nRetrying in ")
    retry = rest[retry_at:] if retry_at >= 0 else ""
    return f"{head} (its last output lines are above).{retry}"
