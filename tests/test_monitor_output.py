"""How the run monitor logs the output events of the core, fed with events directly."""

import logging
from typing import Any, Dict, List

import pytest

from zenml_docker_rs import monitor as monitor_module
from zenml_docker_rs.monitor import RunMonitor
from zenml_docker_rs.runs import RunRecord

SPEC = {
    "run_id": "unit-monitor-output",
    "steps": [
        {"name": "a", "container": {"name": "c-a", "image": "img"}},
        {"name": "b", "container": {"name": "c-b", "image": "img"}},
    ],
}


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def logged():
    handler = _Records()
    monitor_module.logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        monitor_module.logger.removeHandler(handler)


def _monitor() -> RunMonitor:
    return RunMonitor(
        handle=None,
        spec=SPEC,
        record=RunRecord(SPEC["run_id"]),
        pipeline_run_id=None,
        orchestrator_id=None,
    )


def _output(step: str, text: str, continued: bool = False) -> Dict[str, Any]:
    return {"kind": "log", "step": step, "stream": "stdout", "text": text, "continued": continued}


def _state(step: str, state: str, message: str = "") -> Dict[str, Any]:
    return {"kind": "step", "step": step, "state": state, "message": message, "attempt": 1}


def test_lines_keep_step_prefix(logged):
    monitor = _monitor()
    monitor._handle_event(_output("a", "first\nsecond"))
    assert logged == ["[a] first\n[a] second"]


def test_pieces_join_into_one_line(logged):
    monitor = _monitor()
    monitor._handle_event(_output("a", "x" * 5, continued=True))
    monitor._handle_event(_output("a", "y" * 5))
    assert logged == ["[a] xxxxxyyyyy"]


def test_held_piece_logged_before_retry(logged):
    monitor = _monitor()
    monitor._handle_event(_output("a", "unfinished", continued=True))
    monitor._handle_event(_state("a", "retrying", "step `a` failed, retrying"))
    monitor._handle_event(_output("a", "second attempt"))
    assert logged[0] == "[a] unfinished"
    assert logged[-1] == "[a] second attempt"


def test_held_piece_stays_with_its_step(logged):
    monitor = _monitor()
    monitor._handle_event(_output("a", "from a", continued=True))
    monitor._handle_event(_state("b", "succeeded"))
    assert logged == ["Step `b` succeeded."]
    monitor._handle_event(_state("a", "succeeded"))
    assert logged[1:] == ["[a] from a", "Step `a` succeeded."]
