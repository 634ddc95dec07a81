"""Measure how many no-op containers per second three Docker clients launch.

Without ZenML, the script runs COUNT containers of a tiny local image (command
`true`) at each parallelism of a list, through three clients:

- core: the product's Rust core, `zenml_docker_rs._core.start_run` with COUNT
  independent steps and `max_parallelism` set to the parallelism, its events
  drained with `RunHandle.next_events` until it returns None;
- docker-py: docker-py's low-level `APIClient`, shared by a ThreadPoolExecutor of
  that many threads, each container created, started, waited for and removed;
- direct: a minimal Engine API client, raw HTTP/1.1 over the daemon's Unix socket
  with one keep-alive connection per worker thread, the same four calls and nothing
  else. It is the reference for the best any client can do on this daemon.

A measurement is COUNT / wall time, from just before the first create request to
the end of the last removal. The clients alternate (core, docker-py, direct, core,
...) so that drift of the machine's load hits all of them alike. Every container
must exit with code 0 and be removed, or the script fails.

Every container carries the label `io.zenml.docker-rs.bench=<random id of this
benchmark run>`. At the end, even after a failure, the script removes every
container with that label and touches no other Docker object.

The medians, their ratios to the direct client and every single measurement replace
this script's section of BENCHMARKS.md; the raw numbers go to
bench/results/launch_throughput.json. When bench/results/launch_throughput_before_fix.json
exists (a run of this script before the fix described in the section) and used the
same container count, parallelisms and repeats, the section compares its medians with
the new ones.
"""

import argparse
import http.client
import json
import logging
import signal
import socket
import statistics
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402 - the path above makes common importable
    BENCH_LABEL,
    RESULTS_DIR,
    Machine,
    command_line,
    docker,
    require_image,
    require_modules,
    save_results,
    setup_logger,
    utc_now,
    write_section,
)

NAME = "launch_throughput"
IMAGE = "zenml-docker-rs-test/busybox:latest"
COMMAND = ["true"]
SOCKET_PATH = "/var/run/docker.sock"
CLIENTS = ("core", "docker-py", "direct")
BASELINE_PATH = RESULTS_DIR / f"{NAME}_before_fix.json"

# Target on the 2-core machine this benchmark was written for: the core at
# parallelism 8 reaches this fraction of the direct client's containers per second.
TARGET_PARALLELISM = 8
TARGET_RATIO_TO_DIRECT = 0.95

# Seconds `next_events` waits for a batch before the drain loop checks again.
EVENT_POLL_SECS = 1.0

API_CALLS = """\
Docker Engine API calls per container:

| client | calls per container |
|---|---|
| core | `POST /containers/create`, `POST /containers/{id}/attach` (stdout and stderr, before the start, so no output is lost), `POST /containers/{id}/start`, `GET /containers/{id}/stats?stream=1` (memory samples for the peak memory of the step, opened 500 ms after the start and only if the container still runs then, so not for these `true` containers), `POST /containers/{id}/wait`, `GET /containers/{id}/json` (inspect: OOM kill, start and end times), `DELETE /containers/{id}?force=1&v=1` |
| docker-py | `POST /containers/create`, `POST /containers/{id}/start`, `POST /containers/{id}/wait`, `DELETE /containers/{id}` (`APIClient` calls; the high-level `containers.create` would add an inspect) |
| direct | `POST /containers/create`, `POST /containers/{id}/start`, `POST /containers/{id}/wait`, `DELETE /containers/{id}` |

The core's wall time also covers what `start_run` does before the first create: it
negotiates the API version, pings the daemon and inspects the image, three requests
per run rather than per container. The core's container body sets a few more fields
(empty mounts, devices and extra hosts, `privileged: false`, a stop timeout), as the
product does for every step.
"""

FINDINGS = """\
### What the profile showed and what changed

- Python side: py-spy (`py-spy record -r 50 -d 20`) on this script during a core run
  at parallelism 1 found 42 busy samples out of 1000, all in `next_events`. The
  Python process mostly waits with the GIL released, so there is nothing to gain in
  Python.
- Rust side: timing each call of `run_container` in a debug build (8 containers one
  after another, load average about 16) gave create 16 to 115 ms, attach up to 15 ms,
  start 330 to 800 ms, wait including the end of the output 100 to 280 ms, inspect
  1 to 18 ms and remove 15 to 70 ms. `MemorySampler::finish`, the end of memory
  sampling after the wait, took 500 ms every time.
- Cause: Docker 20.10 does not end a container's stats stream when the container
  exits. It keeps sending empty samples once a second until the container is
  removed (seen with `curl` on the socket), so `finish` always ran into its 500 ms
  timeout. Each container held its parallelism slot for that half second while the
  daemon had nothing to do for it. `perf` was not needed to find this.

The fix (`src/engine/docker.rs`): the sampler ends as soon as the wait returns. It
first takes the samples that already arrived, then drops the stream. After the fix
the same timing showed `finish` at 0 to 1 ms. A sample taken after the exit carries
no memory figure, so no peak is lost. Docker 20.10 collects stats once a second, so
a container that runs for less than about a second may get no sample and report no
peak memory, before the fix as after it. For longer steps nothing changes. The
attach before the start, the OOM flag and exit times from the inspect, stop, cancel
and `keep_if_failed` work as before (`cargo test --test docker_engine` covers them).

A quiet run of this script at commit b621780 still had the core at 0.986 of
docker-py's rate at parallelism 8 (6.61 against 6.70 containers/s, direct 6.75). The
core then opened a stats stream for every container, at its start. Docker sends the
first sample about a second after the stream opens, so a container that exits
sooner gets no sample anyway. Since commit f145039 the stream opens 500 ms after the
start, and only for a container still running then. With cgroup v1 each sample
carries the kernel's peak since the container started, so longer steps lose
nothing. That leaves the attach and the inspect as the requests the direct client
does not make, and the table above, measured after that change, has the core ahead
of both other clients at parallelism 8.
"""


@dataclass
class Measurement:
    """One batch of COUNT containers through one client."""

    client: str
    parallelism: int
    repeat: int
    seconds: float
    containers_per_second: float
    load_before: float
    load_after: float


def load_average() -> float:
    """Return the 1-minute load average."""
    with open("/proc/loadavg") as loadavg:
        return float(loadavg.read().split()[0])


def container_name(run_id: str, client: str, parallelism: int, repeat: int, index: int) -> str:
    """Return a container name unique to this benchmark run."""
    return f"zdr-launch-{run_id}-{client}-p{parallelism}-r{repeat}-{index}"


# --- core -------------------------------------------------------------------------


def run_core(names: List[str], labels: Dict[str, str], parallelism: int) -> float:
    """Run one container per name through the Rust core; return the wall time."""
    from zenml_docker_rs import _core

    steps = [
        {
            "name": name,
            "upstream": [],
            "container": {"name": name, "image": IMAGE, "command": COMMAND, "labels": labels},
        }
        for name in names
    ]
    spec = {
        "run_id": f"{names[0]}-run",
        "execution_mode": "continue_on_failure",
        "max_parallelism": parallelism,
        "steps": steps,
    }

    start = time.perf_counter()
    handle = _core.start_run(spec)
    finished = None
    while True:
        events = handle.next_events(EVENT_POLL_SECS)
        if events is None:
            break
        for event in events:
            if event["kind"] == "run_finished":
                finished = event
    seconds = time.perf_counter() - start

    if finished is None:
        raise RuntimeError("the core's event stream ended without a run_finished event")
    if finished["status"] != "succeeded":
        failed = {
            step: report.get("message")
            for step, report in finished["steps"].items()
            if report["state"] != "succeeded"
        }
        raise RuntimeError(f"the core's run ended as {finished['status']}: {failed}")
    return seconds


# --- docker-py --------------------------------------------------------------------


def run_docker_py(names: List[str], labels: Dict[str, str], parallelism: int) -> float:
    """Run one container per name through docker-py's APIClient; return the wall time."""
    import docker as docker_py

    # One client shared by all threads, with a connection pool as large as the
    # thread pool so that no thread waits for or discards a connection.
    client = docker_py.APIClient(
        base_url=f"unix://{SOCKET_PATH}", version="auto", max_pool_size=parallelism
    )

    def run_one(name: str) -> None:
        container = client.create_container(IMAGE, command=COMMAND, labels=labels, name=name)
        client.start(container["Id"])
        status = client.wait(container["Id"])["StatusCode"]
        client.remove_container(container["Id"])
        if status != 0:
            raise RuntimeError(f"container {name} exited with code {status}")

    try:
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=parallelism) as pool:
            # list() re-raises the first exception of a container, if any.
            list(pool.map(run_one, names))
        return time.perf_counter() - start
    finally:
        client.close()


# --- direct -----------------------------------------------------------------------


class UnixHTTPConnection(http.client.HTTPConnection):
    """An HTTP/1.1 keep-alive connection to the daemon's Unix socket."""

    def __init__(self, path: str):
        super().__init__("localhost")
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(self._path)
        self.sock = sock


def api_request(
    connection: UnixHTTPConnection, method: str, path: str, body: Optional[Dict[str, Any]] = None
) -> Any:
    """Send one request, read the whole response and return its JSON body, if any."""
    payload = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if payload is not None else {}
    connection.request(method, path, body=payload, headers=headers)
    response = connection.getresponse()
    data = response.read()
    if response.status >= 300:
        raise RuntimeError(f"{method} {path} failed with HTTP {response.status}: {data!r}")
    return json.loads(data) if data else None


def api_version() -> str:
    """Return the daemon's API version, for the `/v<version>` path prefix."""
    connection = UnixHTTPConnection(SOCKET_PATH)
    try:
        return api_request(connection, "GET", "/version")["ApiVersion"]
    finally:
        connection.close()


def run_direct(names: List[str], labels: Dict[str, str], parallelism: int) -> float:
    """Run one container per name over raw HTTP; return the wall time."""
    prefix = f"/v{api_version()}"
    pending = list(reversed(names))
    pending_lock = threading.Lock()
    errors: List[BaseException] = []

    def next_name() -> Optional[str]:
        with pending_lock:
            return pending.pop() if pending else None

    def worker() -> None:
        connection = UnixHTTPConnection(SOCKET_PATH)
        try:
            while (name := next_name()) is not None:
                body = {"Image": IMAGE, "Cmd": COMMAND, "Labels": labels}
                created = api_request(
                    connection, "POST", f"{prefix}/containers/create?name={name}", body
                )
                container = created["Id"]
                api_request(connection, "POST", f"{prefix}/containers/{container}/start")
                status = api_request(connection, "POST", f"{prefix}/containers/{container}/wait")
                api_request(connection, "DELETE", f"{prefix}/containers/{container}")
                if status["StatusCode"] != 0:
                    raise RuntimeError(f"container {name} exited with code {status['StatusCode']}")
        except BaseException as error:  # noqa: BLE001 - handed to the main thread
            errors.append(error)
        finally:
            connection.close()

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(parallelism)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    if errors:
        raise errors[0]
    return seconds


RUNNERS: Dict[str, Callable[[List[str], Dict[str, str], int], float]] = {
    "core": run_core,
    "docker-py": run_docker_py,
    "direct": run_direct,
}


# --- measurement and report -------------------------------------------------------


def own_containers(label: str) -> List[str]:
    """Return the ids of all containers, running or not, that carry `label`."""
    return docker("ps", "-aq", "--filter", f"label={label}").split()


def measure(
    run_id: str, count: int, parallelisms: List[int], repeats: int, logger: logging.Logger
) -> List[Measurement]:
    """Run every client at every parallelism `repeats` times, clients alternating."""
    labels = {BENCH_LABEL: run_id}
    label = f"{BENCH_LABEL}={run_id}"
    measurements = []
    for parallelism in parallelisms:
        for repeat in range(1, repeats + 1):
            for client in CLIENTS:
                names = [
                    container_name(run_id, client, parallelism, repeat, index)
                    for index in range(count)
                ]
                load_before = load_average()
                seconds = RUNNERS[client](names, labels, parallelism)
                left = own_containers(label)
                if left:
                    raise RuntimeError(
                        f"{client} left {len(left)} containers behind at parallelism "
                        f"{parallelism}: {left[:5]}"
                    )
                measurement = Measurement(
                    client=client,
                    parallelism=parallelism,
                    repeat=repeat,
                    seconds=seconds,
                    containers_per_second=count / seconds,
                    load_before=load_before,
                    load_after=load_average(),
                )
                logger.info(
                    "parallelism %d, repeat %d, %s: %.2f s, %.2f containers/s, load %.2f",
                    parallelism,
                    repeat,
                    client,
                    seconds,
                    measurement.containers_per_second,
                    measurement.load_after,
                )
                measurements.append(measurement)
    return measurements


def medians(measurements: List[Dict[str, Any]]) -> Dict[int, Dict[str, float]]:
    """Return the median containers per second by parallelism and client."""
    table: Dict[int, Dict[str, List[float]]] = {}
    for item in measurements:
        table.setdefault(item["parallelism"], {}).setdefault(item["client"], []).append(
            item["containers_per_second"]
        )
    return {
        parallelism: {client: statistics.median(values) for client, values in row.items()}
        for parallelism, row in table.items()
    }


def target_verdict(median: Dict[int, Dict[str, float]]) -> str:
    """Return whether the core met each condition of its target, as sentences."""
    row = median.get(TARGET_PARALLELISM)
    goal = (
        f"Target: at parallelism {TARGET_PARALLELISM}, the core reaches at least "
        f"{TARGET_RATIO_TO_DIRECT:.2f} of the direct client's containers/s and is not "
        "below docker-py's."
    )
    if row is None:
        return f"{goal} Not measured: this run did not include parallelism {TARGET_PARALLELISM}."
    to_direct = row["core"] / row["direct"]
    to_docker_py = row["core"] / row["docker-py"]

    def verdict(met: bool) -> str:
        return "met" if met else "**missed**"

    return (
        f"{goal} Measured: {to_direct:.3f} of direct (target ≥ "
        f"{TARGET_RATIO_TO_DIRECT:.2f}: {verdict(to_direct >= TARGET_RATIO_TO_DIRECT)}), "
        f"{to_docker_py:.3f} of docker-py (target ≥ 1.00: {verdict(to_docker_py >= 1.0)})."
    )


def repeats_text(repeats: int) -> str:
    """Say what the summary table shows, without calling a single value a median."""
    if repeats == 1:
        return "One measurement per client and parallelism"
    return f"Medians over {repeats} repeats"


def statistic_text(repeats: int) -> str:
    """Name what the summary tables show: medians, or single values for one repeat."""
    return "medians" if repeats > 1 else "single measurements"


# The settings a before/after comparison needs to be equal in both runs, as results
# keys with the option each one comes from.
COMPARED_SETTINGS = {"count": "--containers", "parallelisms": "--parallelism", "repeats": "--repeats"}


def before_after_table(data: Dict[str, Any], median: Dict[int, Dict[str, float]]) -> List[str]:
    """Compare the core's medians with those of the saved run before the fix.

    Returns no table, only a sentence, when the saved run used other settings,
    because its rates would then not be comparable.
    """
    if not BASELINE_PATH.exists():
        return []
    baseline = json.loads(BASELINE_PATH.read_text())
    differing = [key for key in COMPARED_SETTINGS if baseline.get(key) != data[key]]
    if differing:
        settings = ", ".join(
            f"{COMPARED_SETTINGS[key]} {baseline.get(key)} (this run: {data[key]})"
            for key in differing
        )
        return [
            f"No before/after table: the saved run before the fix "
            f"(bench/results/{BASELINE_PATH.name}) used other settings: {settings}. "
            "Run this script with the same settings to compare them."
        ]

    before = medians(baseline["measurements"])
    lines = [
        f"Before and after the fix ({statistic_text(data['repeats'])} in containers/s; "
        f"before: commit {baseline['machine']['commit']}, {baseline['date']}, load "
        f"{baseline['load_start']:.2f} to {baseline['load_end']:.2f}; the raw numbers are "
        f"in bench/results/{BASELINE_PATH.name}). The absolute rates follow the machine's "
        "load, which differed between the two runs, so compare the ratios to the direct "
        "client:",
        "",
        "| parallelism | core before | core after | core/direct before | core/direct after |",
        "|---:|---:|---:|---:|---:|",
    ]
    for parallelism, row in sorted(median.items()):
        old = before.get(parallelism)
        if old is None:
            continue
        lines.append(
            f"| {parallelism} | {old['core']:.2f} | {row['core']:.2f} | "
            f"{old['core'] / old['direct']:.2f} | {row['core'] / row['direct']:.2f} |"
        )
    return lines


def render_section(data: Dict[str, Any]) -> str:
    """Build the Markdown section of this benchmark from its results."""
    machine = Machine(**data["machine"])
    median = medians(data["measurements"])
    lines = [
        "## Launch throughput: the core against docker-py and raw HTTP",
        "",
        f"Written by `bench/{NAME}.py`. Run it again to replace this section.",
        "",
        f"{data['count']} containers of `{IMAGE}` running `{' '.join(COMMAND)}`, at "
        f"parallelism {', '.join(map(str, data['parallelisms']))}, through three clients: "
        "the product's Rust core (`_core.start_run`, independent steps, "
        "`max_parallelism`), docker-py's `APIClient` in a thread pool of that size, and a "
        "minimal client that speaks HTTP/1.1 over the daemon's Unix socket with one "
        "keep-alive connection per worker thread (the direct client, the reference). "
        "Containers/s is the container count divided by the wall time from the first "
        f"create to the last removal. {repeats_text(data['repeats'])}, the clients "
        "alternating. Within each repeat they run in the same order, so a load that keeps "
        "falling (or rising) during one parallelism favours the last (or first) client. "
        "The table of runs gives the load of each run.",
        "",
        *machine.markdown_lines(data["command"], data["date"]),
        f"- Load: 1-minute load average {data['load_start']:.2f} at the start and "
        f"{data['load_end']:.2f} at the end; the table of runs below gives it for each run",
        "",
        "| parallelism | core (containers/s) | docker-py | direct | core / direct | "
        "docker-py / direct |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for parallelism, row in sorted(median.items()):
        lines.append(
            f"| {parallelism} | {row['core']:.2f} | {row['docker-py']:.2f} | "
            f"{row['direct']:.2f} | {row['core'] / row['direct']:.2f} | "
            f"{row['docker-py'] / row['direct']:.2f} |"
        )
    lines += ["", target_verdict(median), "", API_CALLS, FINDINGS]
    comparison = before_after_table(data, median)
    if comparison:
        lines += [*comparison, ""]
    lines += [
        "Every run, in the order it ran (load: 1-minute load average before and after):",
        "",
        "| parallelism | repeat | client | wall time (s) | containers/s | load before | "
        "load after |",
        "|---:|---:|---|---:|---:|---:|---:|",
    ]
    for item in data["measurements"]:
        lines.append(
            f"| {item['parallelism']} | {item['repeat']} | {item['client']} | "
            f"{item['seconds']:.2f} | {item['containers_per_second']:.2f} | "
            f"{item['load_before']:.2f} | {item['load_after']:.2f} |"
        )
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--containers", type=int, default=100, help="containers per measurement (default 100)"
    )
    parser.add_argument(
        "--parallelism",
        type=int,
        nargs="+",
        default=[1, 8, 32],
        help="parallelism values to measure: threads, connections or max_parallelism "
        "(default 1 8 32)",
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="measurements per client and parallelism (default 3)"
    )
    args = parser.parse_args()
    if args.containers < 1:
        parser.error(f"--containers must be 1 or more, got {args.containers}")
    if args.repeats < 1:
        parser.error(f"--repeats must be 1 or more, got {args.repeats}")
    if any(value < 1 for value in args.parallelism):
        parser.error(f"every --parallelism value must be 1 or more, got {args.parallelism}")
    return args


def main() -> None:
    args = parse_args()
    require_modules("zenml_docker_rs", "docker")
    require_image(IMAGE, "bash scripts/build-test-image.sh")
    logger = setup_logger(NAME)
    run_id = uuid.uuid4().hex[:12]
    label = f"{BENCH_LABEL}={run_id}"
    logger.info("benchmark run %s, containers labelled %s", run_id, label)

    # SIGTERM raises SystemExit, so the cleanup below runs on `kill` too.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    # Describe the machine and commit before measuring: they are what was measured.
    machine = Machine.describe()
    date = utc_now()
    load_start = load_average()
    try:
        measurements = measure(run_id, args.containers, args.parallelism, args.repeats, logger)
    finally:
        left = own_containers(label)
        if left:
            logger.info("removing %d containers left by this run", len(left))
            docker("rm", "-f", "-v", *left)

    data = {
        "name": NAME,
        "run_id": run_id,
        "date": date,
        "command": command_line(),
        "machine": machine,
        "count": args.containers,
        "parallelisms": args.parallelism,
        "repeats": args.repeats,
        "load_start": load_start,
        "load_end": load_average(),
        "measurements": measurements,
    }
    path = save_results(NAME, data)
    data = json.loads(path.read_text())
    write_section(NAME, render_section(data))
    logger.info("results in %s; section %s written to BENCHMARKS.md", path, NAME)


if __name__ == "__main__":
    main()
