"""Measure how fast step output reaches Python logging, and check that none is lost.

One step container runs bench/log_producer.py (bind-mounted read-only), which writes
a seeded stream to stdout. The stream is BYTES rounded down to whole 1 MiB pages,
plus one 1 MiB line. The pages hold log lines of mixed length, progress bars redrawn
with `\\r` and CRLF lines. The client side is the product's own path:
`RunMonitor.start` calls `_core.start_run`, and `RunMonitor.wait` takes the events
with `RunHandle.next_events` and logs each output line with its `[step]` prefix
through the monitor's logger. The run has no ZenML pipeline run, so the monitor
records nothing in ZenML; everything else is what a synchronous run does.

A counting handler on the root logger, where a user's console handler would be,
receives the records. It strips the prefixes, counts the content bytes and lines and
hashes the contents in order (sha256). The producer's module computes the same
numbers from the seed, so any lost, repeated or reordered byte shows. ZenML's console
handler writes to /dev/null during the measurement, so the speed of the terminal does
not set the number; ZenML's other root handler stays as it is.

Reported per run: the rate from the first to the last output line that reaches the
handler (content bytes, 1 MB = 10^6 bytes), the rate over the whole run (container
start and removal included), and the client's peak RSS growth. The peak comes from
the kernel: writing 5 to /proc/self/clear_refs resets VmHWM to the current RSS before
the run, and VmHWM minus that RSS after the run is the growth.

Before the runs, the script measures the producer alone in the same image, writing
to /dev/null and to a pipe, to show that it is not the limit. The runs alternate
between the Docker logging drivers given with --log-drivers (the daemon's default
and `none`), which the orchestrator's `log_driver` setting selects.

Every container carries the label io.zenml.docker-rs.bench=<random id of this
benchmark run>, and the script removes the containers with that label at the end,
also after a failure.
"""

import argparse
import hashlib
import logging
import os
import re
import statistics
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

import log_producer  # noqa: E402
from common import (  # noqa: E402
    BENCH_LABEL,
    Machine,
    command_line,
    docker,
    require_image,
    require_modules,
    save_results,
    setup_logger,
    throwaway_zenml_config,
    utc_now,
    write_section,
)

NAME = "log_streaming"
IMAGE = "zenmldocker/zenml:0.98.0-py3.11"
IMAGE_BUILD_COMMAND = "bash scripts/build-base-image.sh 0.98.0 3.11"
PYTHON_IN_IMAGE = "/opt/venv/bin/python"
BENCH_DIR = Path(__file__).resolve().parent
PRODUCER_MOUNT = "/opt/zenml-docker-rs-bench"
STEP = "producer"
MONITOR_LOGGER = "zenml_docker_rs.monitor"

TARGET_MB_PER_S = 100.0
TARGET_RSS_GROWTH_MB = 50.0

logger = setup_logger(NAME)


# The producer writes whole 1 MiB pages, BYTES // PAGE_BYTES of them, so a smaller
# size would still stream one page.
MIN_BYTES = log_producer.PAGE_BYTES
# The --log-drivers value that sets no driver, so the daemon's default applies.
DEFAULT_DRIVER = "default"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--bytes",
        type=int,
        default=200_000_000,
        help=f"size of the producer's stream in bytes, rounded down to whole 1 MiB pages, "
        f"plus one 1 MiB line; at least {MIN_BYTES} (default: 200000000)",
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="number of measured runs (default: 3)"
    )
    parser.add_argument(
        "--seed", type=int, default=2026, help="seed of the stream (default: 2026)"
    )
    parser.add_argument(
        "--log-drivers",
        nargs="+",
        default=[DEFAULT_DRIVER, "none"],
        help="Docker logging drivers of the producer container to measure, each "
        f"REPEATS times, alternating; `{DEFAULT_DRIVER}` keeps the daemon's default "
        f"(default: {DEFAULT_DRIVER} none)",
    )
    parser.add_argument(
        "--no-write",
        action="store_true",
        help="print the results only; leave BENCHMARKS.md and bench/results alone",
    )
    args = parser.parse_args()
    if args.bytes < MIN_BYTES:
        parser.error(f"--bytes must be at least {MIN_BYTES} (1 MiB), not {args.bytes}")
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, not {args.repeats}")
    return args


class CountingHandler(logging.Handler):
    """Counts and hashes the step output that reaches the logging handlers.

    A record may carry several output lines, one per text line, each with the step
    prefix. Records of other loggers, and monitor records without the prefix (step
    state changes), are not output and are skipped.
    """

    def __init__(self, step: str):
        super().__init__(level=logging.INFO)
        self.prefix = f"[{step}] "
        self.separator = "\n" + self.prefix
        self.reset()

    def reset(self) -> None:
        self.digest = hashlib.sha256()
        self.content_bytes = 0
        self.lines = 0
        self.records = 0
        self.malformed_records = 0
        self.first: Optional[float] = None
        self.last: Optional[float] = None

    def emit(self, record: logging.LogRecord) -> None:
        if record.name != MONITOR_LOGGER:
            return
        message = record.getMessage()
        if not message.startswith(self.prefix):
            return
        now = time.monotonic()
        if self.first is None:
            self.first = now
        self.last = now

        body = message[len(self.prefix) :]
        content = body.replace(self.separator, "")
        if "\n" in content:
            # A text line without the prefix: its bytes are counted but make the
            # checksum and the byte count disagree, and this count shows why.
            self.malformed_records += 1
        data = content.encode()
        self.digest.update(data)
        self.content_bytes += len(data)
        self.lines += body.count(self.separator) + 1
        self.records += 1


@dataclass
class ProducerCheck:
    """The producer's own write rate in the image, in MB/s."""

    to_dev_null: float
    to_pipe: float


@dataclass
class Run:
    """One measured run."""

    log_driver: str
    streaming_seconds: float
    total_seconds: float
    streaming_mb_per_s: float
    total_mb_per_s: float
    rss_before_mb: float
    rss_peak_mb: float
    rss_growth_mb: float
    content_bytes: int
    sha256: str
    lines: int
    records: int
    malformed_records: int
    status: Optional[str]
    load_before: float
    load_after: float


def read_status_kib(field: str) -> int:
    """Return a memory field of /proc/self/status (VmRSS, VmHWM) in KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field} field")


def reset_peak_rss() -> None:
    """Reset VmHWM to the current RSS (Linux 4.0 or newer)."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def producer_command(args: argparse.Namespace, *extra: str) -> List[str]:
    return [
        PYTHON_IN_IMAGE,
        f"{PRODUCER_MOUNT}/log_producer.py",
        "--seed",
        str(args.seed),
        "--bytes",
        str(args.bytes),
        *extra,
    ]


def measure_producer(args: argparse.Namespace, bench_id: str) -> ProducerCheck:
    """Run the producer alone in the image, writing to /dev/null and to a pipe."""
    rates = {}
    for target, redirect in (("dev_null", "> /dev/null"), ("pipe", "| cat > /dev/null")):
        script = " ".join(producer_command(args, "--report")) + f" {redirect}"
        output = docker(
            "run",
            "--rm",
            "--label",
            f"{BENCH_LABEL}={bench_id}",
            "--name",
            f"zenml-docker-rs-bench-{bench_id}-producer-{target.replace('_', '-')}",
            "-v",
            f"{BENCH_DIR}:{PRODUCER_MOUNT}:ro",
            "--entrypoint",
            "sh",
            IMAGE,
            "-c",
            f"exec 2>&1; {script}",
        )
        match = re.search(r"([0-9.]+) MB/s", output)
        if match is None:
            raise RuntimeError(f"the producer printed no rate: {output!r}")
        rates[target] = float(match.group(1))
        logger.info("producer alone, stdout to %s: %s MB/s", target, rates[target])
    return ProducerCheck(to_dev_null=rates["dev_null"], to_pipe=rates["pipe"])


def run_spec(
    args: argparse.Namespace, bench_id: str, index: int, log_driver: str
) -> Dict[str, Any]:
    run_id = str(uuid.uuid4())
    return {
        "run_id": run_id,
        "steps": [
            {
                "name": STEP,
                "container": {
                    "name": f"zenml-docker-rs-bench-{bench_id}-logs-{index}",
                    "image": IMAGE,
                    "entrypoint": producer_command(args),
                    "labels": {BENCH_LABEL: bench_id},
                    "log_driver": None if log_driver == DEFAULT_DRIVER else log_driver,
                    "mounts": [
                        {
                            "kind": "bind",
                            "source": str(BENCH_DIR),
                            "target": PRODUCER_MOUNT,
                            "read_only": True,
                        }
                    ],
                },
            }
        ],
    }


def measure_run(
    args: argparse.Namespace,
    bench_id: str,
    index: int,
    log_driver: str,
    handler: CountingHandler,
) -> Run:
    """Run the producer as a step through RunMonitor and measure what reaches logging."""
    from zenml_docker_rs.monitor import RunMonitor
    from zenml_docker_rs.runs import RunRecord

    spec = run_spec(args, bench_id, index, log_driver)
    record = RunRecord(spec["run_id"])
    record.create(spec, pipeline_run_id=None, orchestrator_id=None)
    handler.reset()

    load_before = os.getloadavg()[0]
    reset_peak_rss()
    rss_before = read_status_kib("VmRSS")
    started = time.monotonic()
    monitor = RunMonitor.start(spec, record)
    monitor.wait()
    total_seconds = time.monotonic() - started
    rss_peak = read_status_kib("VmHWM")

    if handler.first is None or handler.last is None:
        raise RuntimeError("no output line reached the logging handler")
    streaming_seconds = handler.last - handler.first
    return Run(
        log_driver=log_driver,
        streaming_seconds=streaming_seconds,
        total_seconds=total_seconds,
        streaming_mb_per_s=handler.content_bytes / streaming_seconds / 1e6,
        total_mb_per_s=handler.content_bytes / total_seconds / 1e6,
        rss_before_mb=rss_before / 1024,
        rss_peak_mb=rss_peak / 1024,
        rss_growth_mb=(rss_peak - rss_before) / 1024,
        content_bytes=handler.content_bytes,
        sha256=handler.digest.hexdigest(),
        lines=handler.lines,
        records=handler.records,
        malformed_records=handler.malformed_records,
        status=monitor.status,
        load_before=load_before,
        load_after=os.getloadavg()[0],
    )


def remove_containers(bench_id: str) -> int:
    """Remove every container of this benchmark run; return how many there were."""
    ids = docker("ps", "-aq", "--filter", f"label={BENCH_LABEL}={bench_id}").split()
    if ids:
        docker("rm", "-f", "-v", *ids)
    return len(ids)


def silence_zenml_console() -> None:
    """Send ZenML's console handler to /dev/null, so the terminal does not set the rate."""
    from zenml.logger import ZenMLConsoleHandler

    handlers = [h for h in logging.getLogger().handlers if isinstance(h, ZenMLConsoleHandler)]
    if not handlers:
        raise RuntimeError("ZenML's console handler is not on the root logger")
    for handler in handlers:
        handler.setStream(open(os.devnull, "w"))


def no_bytes_lost(run: Run, expected: log_producer.Expected) -> bool:
    """Tell whether the run succeeded and every content byte arrived, in order."""
    return (
        run.status == "succeeded"
        and run.content_bytes == expected.content_bytes
        and run.sha256 == expected.sha256
        and run.malformed_records == 0
    )


def lines_intact(run: Run, expected: log_producer.Expected) -> bool:
    """Tell whether each output line reached logging as one line, the long one too."""
    return run.lines == expected.lines


def mix_text(expected: log_producer.Expected) -> str:
    """Describe the line mix as shares of the line count."""
    parts = [
        f"{kind} {count / expected.lines:.1%}" if count > 1 else f"{kind}: {count} line"
        for kind, count in sorted(expected.mix.items(), key=lambda item: -item[1])
    ]
    return ", ".join(parts)


def median(runs: List[Run], field: str) -> float:
    return statistics.median(getattr(run, field) for run in runs)


# Profile findings and the changes they led to, with the numbers this script measured
# before and after. Written by hand, so rewrite it when the code changes.
PROFILE_NOTES = """\
### Profile and changes

Before the change (commit 47347e5), `python bench/log_streaming.py --bytes 20000000
--repeats 1` measured 4.8 MB/s, with one log record per line event (115,782
records), and the 1 MiB line reached logging as 17 lines of at most 64 KiB. The
load average was 9.6. A `py-spy record --native` of that run put 82% of the
monitor's loop in `logger.info` with one call per output line: record creation,
`findCaller`, ZenML's two root handlers with their filters, and ZenML's console
formatter. Converting the events with pythonize in `next_events` took 2.5%.

The changes:

- The core joins consecutive output lines of one step and stream into one `text`
  per `log` event, built as a dict without serde. The monitor logs that text as one
  INFO record, with the `[step] ` prefix on every line, so the console shows the
  same lines. A batch of events stops at 1 MiB of output.
- The event says whether its last line goes on, and the monitor joins the 64 KiB
  pieces of a long line again, up to 4 MiB, so the 1 MiB line is one line.
- The line splitter finds terminators with memchr and reuses its buffer, and the
  output tail strips colour codes from the first 500 characters of a line only,
  which was the busiest function of the core in a `perf` profile.

After the change, the same 20 MB command measured 24.9 MB/s with 386 records, at a
load average of 13.5. A second `py-spy` profile showed the monitor's loop waiting in
`next_events` for most of its samples, so Python logging is no longer the limit.
`perf record -a` during a 60 MB run put the core's own threads at about 1% of the
samples; the rest went to other processes on the machine, to dockerd and to
containerd-shim, which carry the output from the container to the client.

dockerd's share depends on its logging driver. On a quiet machine (2026-12-05,
3 runs each), `docker run` of the producer with its output to /dev/null, so through
the same attach endpoint and without this client, took 3.19 to 3.45 s for the
200 MB stream with the daemon's default json-file driver (58 to 63 MB/s, container
start included), and 1.34 to 1.48 s with `--log-driver none` (135 to 149 MB/s). So
at the daemon's default the limit is dockerd writing every line to its JSON log
file, and the orchestrator's `log_driver` setting lets a chatty step turn that off.
"""


def log_run(index: int, run: Run, expected: log_producer.Expected) -> None:
    logger.info(
        "run %d (log driver %s): %.1f MB/s (%.1f MB/s whole run), RSS growth %.1f MB, "
        "no bytes lost: %s, lines intact: %s, %d records",
        index + 1,
        run.log_driver,
        run.streaming_mb_per_s,
        run.total_mb_per_s,
        run.rss_growth_mb,
        no_bytes_lost(run, expected),
        lines_intact(run, expected),
        run.records,
    )
    if not no_bytes_lost(run, expected):
        logger.error("run %d does not match the stream: %s", index + 1, run)


def render_section(
    args: argparse.Namespace,
    machine: Machine,
    date: str,
    producer: ProducerCheck,
    expected: log_producer.Expected,
    runs: List[Run],
) -> str:
    drivers = list(dict.fromkeys(run.log_driver for run in runs))
    by_driver = {d: [run for run in runs if run.log_driver == d] for d in drivers}

    def verdict(met: bool) -> str:
        return "met" if met else "**missed**"

    def summary_row(label: str, cell, target: str = "") -> str:
        cells = " | ".join(cell(by_driver[d]) for d in drivers)
        return f"| {label} | {cells} | {target} |"

    def rate_cell(driver_runs: List[Run]) -> str:
        rate = median(driver_runs, "streaming_mb_per_s")
        return f"{rate:.1f} ({verdict(rate >= TARGET_MB_PER_S)})"

    def growth_cell(driver_runs: List[Run]) -> str:
        growth = median(driver_runs, "rss_growth_mb")
        return f"{growth:.1f} ({verdict(growth < TARGET_RSS_GROWTH_MB)})"

    def lost_cell(driver_runs: List[Run]) -> str:
        lossless = all(no_bytes_lost(run, expected) for run in driver_runs)
        return "none (met)" if lossless else "some (**missed**)"

    def intact_cell(driver_runs: List[Run]) -> str:
        intact = all(lines_intact(run, expected) for run in driver_runs)
        return "yes (met)" if intact else "no (**missed**)"

    def driver_name(driver: str) -> str:
        if driver == DEFAULT_DRIVER:
            return "daemon default"
        return f"`{driver}`"

    repeats = len(by_driver[drivers[0]])
    # One run has no median, so the columns then show that run's values.
    statistic = f"medians of {repeats} runs each" if repeats > 1 else "one run each"
    header = " | ".join(f"log driver: {driver_name(d)}" for d in drivers)
    lines = [
        "## Log streaming: step output to Python logging",
        "",
        f"Written by `bench/{NAME}.py`. Run it again to replace this section.",
        "",
        f"One step container runs `bench/log_producer.py` in `{IMAGE}` and writes "
        f"{expected.stream_bytes:,} bytes to stdout (seed {args.seed}): log lines, short "
        "and empty lines, JSON-like lines, CRLF lines, progress bars redrawn with a lone "
        "`\\r` (10 to 50 redraws, then a line ending with `\\n`), a numbered header "
        "line for each 1 MiB page, and exactly one line of 1 MiB. The mix by line count: "
        f"{mix_text(expected)}. In total {expected.lines:,} lines and "
        f"{expected.content_bytes:,} content bytes (terminators not counted); the core "
        f"sends {expected.pieces:,} line events, because it cuts lines over 64 KiB into "
        "pieces.",
        "",
        "The client is the product's path: `RunMonitor.start` (which calls "
        "`_core.start_run`), then `RunMonitor.wait`, which takes events with "
        "`RunHandle.next_events` and logs the output through the monitor's logger. A "
        "handler on the root logger, where a user's console handler would be, counts the "
        "content bytes and lines and computes the sha256 of the contents in order. "
        "ZenML's console handler writes to /dev/null during the runs, so the terminal's "
        "speed does not set the rate. ZenML's other root handler "
        "(`ZenMLLoggingHandler`) stays. The run has no ZenML pipeline run, so no log is "
        "stored in the artifact store and no step metadata is recorded.",
        "",
        *machine.markdown_lines(command_line(), date),
        f"- Load: 1-minute load average {runs[0].load_before:.2f} before the first run, "
        f"{runs[-1].load_after:.2f} after the last; the table gives it for each run",
        "",
        f"The producer alone, in the same image: {producer.to_dev_null:.0f} MB/s to "
        f"/dev/null and {producer.to_pipe:.0f} MB/s to a pipe, so it is not the limit.",
        "",
        "The producer container runs with each Docker logging driver in turn. The "
        "core reads the output through `attach` whatever the driver. With the "
        "daemon's default (json-file here, as `docker info` reports) dockerd also "
        "encodes every line into its log file, and `log_driver=none` (an orchestrator "
        "setting) spares it that.",
        "",
        f"| {statistic} | {header} | target |",
        "|---|" + "---:|" * len(drivers) + "---|",
        summary_row(
            "rate, first to last output line (MB/s)", rate_cell, f"≥ {TARGET_MB_PER_S:.0f}"
        ),
        summary_row(
            "rate over the whole run, container start and removal included (MB/s)",
            lambda r: f"{median(r, 'total_mb_per_s'):.1f}",
        ),
        summary_row(
            "client peak RSS growth (MB)", growth_cell, f"< {TARGET_RSS_GROWTH_MB:.0f}"
        ),
        summary_row("bytes lost", lost_cell, "none"),
        summary_row(
            "output lines logged as written (the 1 MiB line as one line)", intact_cell, "yes"
        ),
        "",
        "RSS is the client process's peak resident set size (VmHWM, reset through "
        "`/proc/self/clear_refs` before each run) minus its RSS before the run. "
        "1 MB = 10^6 bytes.",
        "",
        f"Expected: {expected.content_bytes:,} content bytes, {expected.lines:,} lines, "
        f"sha256 `{expected.sha256[:16]}…`.",
        "",
        "| # | log driver | output (MB/s) | whole run (MB/s) | output time (s) | "
        "RSS growth (MB) | content bytes | lines | log records | sha256 | bytes lost | "
        "load before | load after |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---:|",
    ]
    for number, run in enumerate(runs, start=1):
        lines.append(
            f"| {number} | {driver_name(run.log_driver)} | {run.streaming_mb_per_s:.1f} | "
            f"{run.total_mb_per_s:.1f} | "
            f"{run.streaming_seconds:.2f} | {run.rss_growth_mb:.1f} | "
            f"{run.content_bytes:,} | {run.lines:,} | {run.records:,} | "
            f"`{run.sha256[:16]}…` | {'none' if no_bytes_lost(run, expected) else '**some**'} | "
            f"{run.load_before:.2f} | {run.load_after:.2f} |"
        )
    return "\n".join(lines) + "\n\n" + PROFILE_NOTES


def main() -> int:
    args = parse_args()
    require_modules("zenml", "zenml_docker_rs")
    require_image(IMAGE, IMAGE_BUILD_COMMAND)
    bench_id = uuid.uuid4().hex[:12]
    logger.info("benchmark run id %s", bench_id)

    expected = log_producer.expected(args.seed, args.bytes)
    logger.info("expected: %s", expected)

    runs: List[Run] = []
    with throwaway_zenml_config(logger):
        import zenml  # noqa: F401 - sets up ZenML's root handlers

        silence_zenml_console()
        handler = CountingHandler(STEP)
        logging.getLogger().addHandler(handler)
        try:
            machine = Machine.describe()
            date = utc_now()
            producer = measure_producer(args, bench_id)
            for repeat in range(args.repeats):
                for log_driver in args.log_drivers:
                    index = len(runs)
                    run = measure_run(args, bench_id, index, log_driver, handler)
                    runs.append(run)
                    log_run(index, run, expected)
        finally:
            logging.getLogger().removeHandler(handler)
            leftovers = remove_containers(bench_id)
            logger.info("removed %d leftover container(s)", leftovers)

    section = render_section(args, machine, date, producer, expected, runs)
    print(section)
    if not args.no_write:
        write_section(NAME, section)
        save_results(
            NAME,
            {
                "command": command_line(),
                "date": date,
                "machine": machine,
                "seed": args.seed,
                "expected": asdict(expected),
                "producer_mb_per_s": producer,
                "runs": runs,
                "targets": {
                    "mb_per_s": TARGET_MB_PER_S,
                    "rss_growth_mb": TARGET_RSS_GROWTH_MB,
                },
            },
        )
    return 0 if all(no_bytes_lost(run, expected) for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
