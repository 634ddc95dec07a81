"""Summarise ZenML's SQL store sessions and SQLite lock errors in pipeline run logs.

At DEBUG level (`ZENML_LOGGING_VERBOSITY=DEBUG` in the step containers), ZenML 0.98
logs one `sql.session.completed` line with a JSON payload for every SQL store
session. This script reads the client output of `docker_rs` runs, where each line of
a step container carries a `[step]` prefix. For each file it prints the number of
sessions, how many ended with an error and how many lines contain `database is
locked`. It also prints the median, 95th percentile and maximum session duration.

The duration covers waiting for SQLite's lock and the CPU time of the session, so on
a busy machine it is an upper bound on the lock wait.

Usage: python scripts/sql_session_stats.py RUN_LOG [RUN_LOG ...]
"""

import json
import re
import sys
from collections import defaultdict
from typing import Dict, List

_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
_SESSION_LINE = re.compile(r"sql\.session\.completed \| (\{.*\})")
LOCK_ERROR = "database is locked"


def _percentile(sorted_values: List[float], fraction: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * fraction))]


def summarise(path: str) -> str:
    """Return one summary line for the run log at `path`."""
    durations: List[float] = []
    errors = 0
    lock_lines = 0
    slowest_by_caller: Dict[str, float] = defaultdict(float)

    with open(path, errors="replace") as log:
        for raw_line in log:
            line = _ANSI_ESCAPE.sub("", raw_line)
            if LOCK_ERROR in line:
                lock_lines += 1
            match = _SESSION_LINE.search(line)
            if match is None:
                continue
            session = json.loads(match.group(1))
            durations.append(session["duration_ms"])
            errors += bool(session["error"])
            caller = session["caller"]
            slowest_by_caller[caller] = max(slowest_by_caller[caller], session["duration_ms"])

    summary = (
        f"{path}: {len(durations)} sessions, {errors} with an error, "
        f"{lock_lines} '{LOCK_ERROR}' lines"
    )
    if not durations:
        return (
            f"{summary} (no session lines: the steps logged above DEBUG level or "
            "failed before their first session)"
        )

    durations.sort()
    slowest = sorted(slowest_by_caller.items(), key=lambda item: -item[1])[:3]
    return (
        f"{summary}; duration ms p50 {_percentile(durations, 0.5):.0f}, "
        f"p95 {_percentile(durations, 0.95):.0f}, max {durations[-1]:.0f}; slowest: "
        + ", ".join(f"{caller} {ms:.0f}" for caller, ms in slowest)
    )


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for log_path in sys.argv[1:]:
        print(summarise(log_path))
