"""Following a run of the Rust core: logging its events, handling interrupts, recording the end.

The core runs the containers on its own threads; this module only waits for batches of
events (with the GIL released), logs them, and, on Ctrl-C or SIGTERM, cancels the run
and waits until every container of it is stopped and removed.
"""

import contextlib
import signal
import threading
import time
from types import FrameType
from typing import Any, Dict, Iterator, Optional
from uuid import UUID

from zenml.logger import get_logger

logger = get_logger(__name__)

# How long one wait for events lasts; Ctrl-C is noticed between two waits.
EVENT_WAIT_SECONDS = 0.2

# Time allowed, beyond the longest stop grace period, for the core to stop and
# remove every container after a cancel.
CLEANUP_MARGIN_SECONDS = 30.0


class RunCancelledError(RuntimeError):
    """The run was interrupted; its containers were stopped and removed."""


class RunFailedError(RuntimeError):
    """At least one step failed; the message has each failed step's cause."""


class _Terminated(BaseException):
    """Raised in the main thread by the SIGTERM handler while a run is followed."""


class RunMonitor:
    """Follows one run of the core until it ends."""

    def __init__(self, handle: Any, spec: Dict[str, Any], pipeline_run_id: Optional[UUID]):
        """Wrap a started run.

        Args:
            handle: The core's `RunHandle`.
            spec: The run spec the run was started with.
            pipeline_run_id: ZenML's id of the pipeline run, to record a failure.
        """
        self._handle = handle
        self._spec = spec
        self._pipeline_run_id = pipeline_run_id
        self._containers = {step["name"]: step["container"]["name"] for step in spec["steps"]}
        self._final_steps: Dict[str, Dict[str, Any]] = {}
        self._status: Optional[str] = None

    @classmethod
    def start(cls, spec: Dict[str, Any], pipeline_run_id: Optional[UUID] = None) -> "RunMonitor":
        """Start a run in the core.

        Args:
            spec: The run spec.
            pipeline_run_id: ZenML's id of the pipeline run.

        Returns:
            The monitor of the started run.
        """
        from zenml_docker_rs import _core

        logger.info(
            "Starting run `%s` with %d step container(s).", spec["run_id"], len(spec["steps"])
        )
        handle = _core.start_run(spec)
        return cls(handle, spec, pipeline_run_id)

    @property
    def status(self) -> Optional[str]:
        """Final status of the run (`succeeded`, `failed`, `cancelled`), once it ended."""
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
            RunFailedError: If a step failed.
        """
        started = time.monotonic()
        interrupted: Optional[str] = None
        with _sigterm_raises():
            try:
                self._follow(deadline=None)
            except (KeyboardInterrupt, _Terminated) as signal_received:
                interrupted = "SIGTERM" if isinstance(signal_received, _Terminated) else "Ctrl-C"

        if interrupted:
            self._cancel(interrupted)

        if self._status == "cancelled" or interrupted:
            self._record_failure()
            raise RunCancelledError(
                f"Run `{self._spec['run_id']}` was cancelled by {interrupted or 'a cancel request'}; "
                "its containers were stopped and removed."
            )
        if self._status != "succeeded":
            self._record_failure()
            raise RunFailedError(self._failure_summary())
        logger.info(
            "Run `%s` finished in %.1fs.", self._spec["run_id"], time.monotonic() - started
        )

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
                return
            for event in events:
                self._handle_event(event)
        logger.error(
            "Run `%s` did not finish cleaning up in time; check for leftover containers "
            "with `docker ps -a --filter label=io.zenml.run-id=%s`.",
            self._spec["run_id"],
            self._spec["run_id"],
        )

    def _handle_event(self, event: Dict[str, Any]) -> None:
        kind = event["kind"]
        if kind == "log":
            logger.info("[%s] %s", event["step"], event["line"])
        elif kind == "step":
            self._log_step_state(event)
        elif kind == "run_finished":
            self._status = event["status"]
            self._final_steps = event["steps"]

    def _log_step_state(self, event: Dict[str, Any]) -> None:
        step = event["step"]
        state = event["state"]
        message = event.get("message")
        if state == "running":
            logger.info("Step `%s` started in container `%s`.", step, self._containers[step])
        elif state == "succeeded":
            logger.info("Step `%s` succeeded.", step)
        elif state == "failed":
            logger.error("%s", message)
        elif state in ("stopped", "skipped"):
            logger.warning("Step `%s` %s: %s", step, state, message)

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
        summary = f"Run `{self._spec['run_id']}` failed.\n" + "\n\n".join(failed)
        if not_run:
            summary += f"\n\nSteps stopped or not run: {', '.join(sorted(not_run))}."
        return summary

    def _record_failure(self) -> None:
        """Mark step runs that the killed containers left unfinished, and the run, as failed.

        A step that was stopped or killed could not record its own end in ZenML.
        """
        if self._pipeline_run_id is None:
            return
        try:
            _record_run_failure(self._pipeline_run_id, self._final_steps)
        except Exception as error:  # noqa: BLE001 - the run's own error matters more
            logger.warning(
                "Could not record the failure of pipeline run %s in ZenML: %s",
                self._pipeline_run_id,
                error,
            )


def _record_run_failure(pipeline_run_id: UUID, final_steps: Dict[str, Dict[str, Any]]) -> None:
    from zenml.client import Client
    from zenml.orchestrators import publish_utils

    run = Client().get_pipeline_run(pipeline_run_id)
    for name, step_run in run.steps.items():
        if step_run.status.is_finished:
            continue
        if final_steps.get(name, {}).get("state") == "stopped":
            publish_utils.publish_stopped_step_run(step_run.id)
        else:
            publish_utils.publish_failed_step_run(step_run.id)
    publish_utils.publish_failed_pipeline_run(pipeline_run_id)


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into an exception in the main thread while the block runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_terminated(signum: int, frame: Optional[FrameType]) -> None:
        raise _Terminated()

    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)

