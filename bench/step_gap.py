"""Measure the per-step overhead of `docker_rs` against ZenML's built-in `local_docker`.

The pipeline is a chain of trivial steps (bench/pipelines/step_chain.py), so each step
container starts only after the one before it exited. The gap between them is what the
orchestrator adds per step: collecting the exit, cleaning up, and creating and
starting the next container. The script measures it from Docker's own event
timestamps (`timeNano` of the Engine API's `/events`): for each pair of consecutive
steps, from the `die` event of the first step's container to the `start` event of the
next step's container.

It registers both stacks in a throwaway ZenML configuration, runs the chain once on
each stack as an untimed warm-up that builds the step image, then alternates
docker_rs, local_docker, docker_rs, ... REPEATS times each with the warm-up's build.
During each run it records the run's container events from the daemon, and then maps
the containers to the steps in chain order. The median and max gap per orchestrator,
every gap of every run, and where the gap goes (die, destroy, create, start) replace
this script's section of BENCHMARKS.md. The raw events go to bench/results/step_gap.json.

At the end, even after a failure, the script removes the throwaway configuration, the
containers it started and the images it built, found by labels and image repositories
that carry a random id of this benchmark run.
"""

import argparse
import json
import os
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402 - the folder must be on sys.path first
    BENCH_LABEL,
    ORCHESTRATORS,
    REPO_ROOT,
    Machine,
    ZenmlStacks,
    base_image_command,
    command_line,
    completed_run,
    median_and_max,
    require_image,
    require_modules,
    save_results,
    setup_logger,
    throwaway_zenml_config,
    utc_now,
    write_section,
    zenml_parent_image,
)

NAME = "step_gap"
PIPELINES_DIR = REPO_ROOT / "bench" / "pipelines"
TARGET_MEDIAN_MS = 50.0
# docker_rs labels each step container with its step name.
STEP_LABEL = "io.zenml.step"
# The container events that make up a gap, in the order Docker sends them for one
# container. local_docker leaves its containers behind, so it has no `destroy`.
ACTIONS = ("create", "attach", "start", "die", "destroy")

logger = setup_logger(NAME)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--steps", type=int, default=6, help="number of steps in the chain (default: 6)"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="timed runs per orchestrator, after one untimed warm-up each (default: 3)",
    )
    parser.add_argument(
        "--before",
        type=Path,
        help="results JSON of an earlier run of this script (for example on the commit "
        "before a change) to compare against in the section",
    )
    args = parser.parse_args()
    if args.steps < 2:
        parser.error(f"--steps must be at least 2 to have a gap, not {args.steps}")
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, not {args.repeats}")
    if args.before is not None and not args.before.is_file():
        parser.error(f"--before {args.before}: no such file; pass a step_gap results JSON")
    return args


@dataclass
class ContainerTimeline:
    """The Docker events of one step container, as Unix times in nanoseconds."""

    step: str
    container_id: str
    times: Dict[str, int] = field(default_factory=dict)

    def at(self, action: str) -> int:
        if action not in self.times:
            raise RuntimeError(
                f"no `{action}` event for the container {self.container_id[:12]} of "
                f"step {self.step}; events seen: {sorted(self.times)}"
            )
        return self.times[action]


@dataclass
class Gap:
    """The time from the exit of one step's container to the start of the next, in parts.

    Every value is in milliseconds and relative to the `die` event of the upstream
    container, so a negative value means it happened before that exit.
    """

    upstream: str
    downstream: str
    die_to_start: float
    die_to_create: float
    create_to_start: float
    die_to_destroy: Optional[float]


@dataclass
class Run:
    """One pipeline call: its wall time, its load and the gaps between its steps."""

    orchestrator: str
    timed: bool
    run_id: str
    wall_seconds: float
    load_before: float
    load_after: float
    gaps: List[Gap]
    containers: List[ContainerTimeline]


def ms(nanoseconds: int) -> float:
    return nanoseconds / 1e6


class EventRecorder:
    """Record the container events with one label while a run goes on.

    The daemon serves a `since` query only from a short buffer of recent events.
    Other jobs on the same daemon can push this run's events out of it before the run
    ends, so the events are read live, from a stream that opens before the run.
    """

    # Time the stream gets after the run for the daemon to deliver its last events.
    SETTLE_SECONDS = 1.0

    def __init__(self, client, label: str):
        self._stream = client.api.events(
            since=int(time.time()) - 1,
            filters={"type": "container", "label": label},
            decode=True,
        )
        self._events: List[Dict[str, Any]] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for event in self._stream:
                self._events.append(event)
        except Exception:  # noqa: BLE001 - closing the stream ends the read with an error
            pass

    def stop(self, start_ns: int, end_ns: int) -> List[Dict[str, Any]]:
        """Close the stream and return the events between two times, oldest first."""
        time.sleep(self.SETTLE_SECONDS)
        self._stream.close()
        self._thread.join(timeout=10)
        selected = [event for event in self._events if start_ns <= event["timeNano"] <= end_ns]
        return sorted(selected, key=lambda event: event["timeNano"])


def step_of_container(client, orchestrator: str, event: Dict[str, Any]) -> Optional[str]:
    """Return the step a container ran, or None for a container that ran no step.

    docker_rs puts the step in a label. local_docker only passes it as the
    `--step_name` argument of ZenML's step entrypoint, and leaves its containers
    behind, so their arguments can be read after the run.
    """
    attributes = event["Actor"].get("Attributes", {})
    if orchestrator == "docker_rs":
        return attributes.get(STEP_LABEL)
    arguments = client.api.inspect_container(event["Actor"]["ID"])["Args"]
    if "--step_name" not in arguments:
        return None
    return arguments[arguments.index("--step_name") + 1]


def container_timelines(
    client, orchestrator: str, events: List[Dict[str, Any]], steps: List[str]
) -> List[ContainerTimeline]:
    """Group the events by container and return one timeline per step, in chain order."""
    by_id: Dict[str, ContainerTimeline] = {}
    for event in events:
        container_id = event["Actor"]["ID"]
        if container_id not in by_id:
            step = step_of_container(client, orchestrator, event)
            if step is None:
                continue
            by_id[container_id] = ContainerTimeline(step, container_id)
        action = event["Action"]
        if action in ACTIONS:
            by_id[container_id].times.setdefault(action, event["timeNano"])

    by_step: Dict[str, ContainerTimeline] = {}
    for timeline in by_id.values():
        if timeline.step in by_step:
            raise RuntimeError(
                f"step {timeline.step} ran in more than one container on {orchestrator}; "
                "a retried step would distort the gaps"
            )
        by_step[timeline.step] = timeline
    missing = [step for step in steps if step not in by_step]
    if missing:
        raise RuntimeError(
            f"no container events for steps {missing} on {orchestrator}; "
            f"containers seen for {sorted(by_step)}"
        )
    return [by_step[step] for step in steps]


def gaps_between(timelines: List[ContainerTimeline]) -> List[Gap]:
    """Return the gap between each pair of consecutive step containers."""
    gaps = []
    for upstream, downstream in zip(timelines, timelines[1:]):
        die = upstream.at("die")
        start = downstream.at("start")
        if start < die:
            raise RuntimeError(
                f"step {downstream.step} started before step {upstream.step} exited; "
                "the chain did not run in order"
            )
        destroy = upstream.times.get("destroy")
        gaps.append(
            Gap(
                upstream=upstream.step,
                downstream=downstream.step,
                die_to_start=ms(start - die),
                die_to_create=ms(downstream.at("create") - die),
                create_to_start=ms(start - downstream.at("create")),
                die_to_destroy=None if destroy is None else ms(destroy - die),
            )
        )
    return gaps


class Benchmark:
    """The stacks, the chain pipeline per orchestrator and the runs made so far."""

    def __init__(self, stacks: ZenmlStacks, steps: int):
        import docker as docker_sdk

        self.stacks = stacks
        self.steps = steps
        self.client = docker_sdk.from_env()
        self.pipelines: Dict[str, Any] = {}
        self.runs: List[Run] = []
        self.daemon_latency: Dict[str, Dict[str, float]] = {}

    def load_pipeline(self) -> None:
        """Load the chain with its own folder as source root, for both stacks."""
        from zenml.utils import source_utils

        # The step containers import the step code by its source path, so the module
        # must be importable from the source root as `step_chain`.
        sys.path.insert(0, str(PIPELINES_DIR))
        source_utils.set_custom_source_root(str(PIPELINES_DIR))
        import step_chain

        if Path(step_chain.__file__).resolve() != PIPELINES_DIR / "step_chain.py":
            raise RuntimeError(f"imported {step_chain.__file__} instead of the chain")
        self.step_names = step_chain.step_names(self.steps)
        chain = step_chain.build_chain(self.steps)
        for orchestrator in ORCHESTRATORS:
            self.pipelines[orchestrator] = chain.with_options(
                settings=self.stacks.settings(orchestrator)
            )

    def run_once(self, orchestrator: str, timed: bool):
        """Run the chain on one stack, check its result and read its container events."""
        self.stacks.activate(orchestrator)
        recorder = EventRecorder(self.client, self.stacks.container_filter(orchestrator))
        load_before = os.getloadavg()[0]
        start_ns = end_ns = time.time_ns()
        started = time.perf_counter()
        try:
            response = self.pipelines[orchestrator]()
            wall_seconds = time.perf_counter() - started
            end_ns = time.time_ns()
        finally:
            events = recorder.stop(start_ns, end_ns)
        load_after = os.getloadavg()[0]

        run = completed_run(response, orchestrator)
        last = run.steps[self.step_names[-1]].output.load()
        if last != self.steps:
            raise RuntimeError(
                f"run {run.id} on {orchestrator}: the last step returned {last}, "
                f"expected {self.steps}"
            )

        timelines = container_timelines(self.client, orchestrator, events, self.step_names)
        gaps = gaps_between(timelines)
        measured = Run(
            orchestrator=orchestrator,
            timed=timed,
            run_id=str(run.id),
            wall_seconds=wall_seconds,
            load_before=load_before,
            load_after=load_after,
            gaps=gaps,
            containers=timelines,
        )
        self.runs.append(measured)
        logger.info(
            "%s run on %s: %.2f s, gaps %s ms, load %.2f",
            "timed" if timed else "warm-up",
            orchestrator,
            wall_seconds,
            ", ".join(f"{gap.die_to_start:.0f}" for gap in gaps),
            load_before,
        )
        return run

    def measure(self, repeats: int) -> None:
        """Run one warm-up per stack, then the timed runs, alternating the stacks."""
        self.stacks.register()
        self.load_pipeline()
        images = {}
        for orchestrator in ORCHESTRATORS:
            run = self.run_once(orchestrator, timed=False)
            pinned, _, image = self.stacks.pin_build(
                self.pipelines[orchestrator], run, orchestrator
            )
            self.pipelines[orchestrator] = pinned
            images[orchestrator] = image
        for _ in range(repeats):
            for orchestrator in ORCHESTRATORS:
                self.run_once(orchestrator, timed=True)
        self.daemon_latency = self.measure_daemon(images["docker_rs"], repeats=5)

    def measure_daemon(self, image: str, repeats: int) -> Dict[str, Dict[str, float]]:
        """Time the daemon's own calls for a bare container from the step image.

        No orchestrator can start the next step in less than the `start` call takes,
        and one that learns of an exit from a `wait` request learns it only when the
        daemon responds, some time after its `die` event.

        Returns:
            Median and max in ms of the `create` call, the `start` call, and the time
            from the `die` event to the response to `wait`.
        """
        timings: Dict[str, List[float]] = {"create": [], "start": [], "die_to_wait": []}
        recorder = EventRecorder(self.client, self.stacks.label)
        start_ns = time.time_ns()
        waited: Dict[str, int] = {}
        try:
            for _ in range(repeats):
                started = time.perf_counter()
                container = self.client.api.create_container(
                    image, entrypoint=["/bin/true"], labels={BENCH_LABEL: self.stacks.run_id}
                )["Id"]
                try:
                    created = time.perf_counter()
                    self.client.api.start(container)
                    timings["start"].append((time.perf_counter() - created) * 1000)
                    timings["create"].append((created - started) * 1000)
                    self.client.api.wait(container)
                    waited[container] = time.time_ns()
                finally:
                    self.client.api.remove_container(container, v=True, force=True)
        finally:
            events = recorder.stop(start_ns, time.time_ns())

        dies = {event["Actor"]["ID"]: event["timeNano"] for event in events if event["Action"] == "die"}
        timings["die_to_wait"] = [ms(waited[c] - dies[c]) for c in waited if c in dies]
        latency = {}
        for call, values in timings.items():
            if not values:
                raise RuntimeError(f"no {call} time was measured for the bare containers")
            median, maximum = median_and_max(values)
            latency[call] = {"median": median, "max": maximum}
        logger.info("daemon latency: %s", latency)
        return latency


def summarize(runs: List[Dict[str, Any]]) -> Dict[str, Dict[str, float]]:
    """Return the median and max of every gap part per orchestrator, over timed runs."""
    summary = {}
    for orchestrator in ORCHESTRATORS:
        gaps = [
            gap
            for run in runs
            if run["timed"] and run["orchestrator"] == orchestrator
            for gap in run["gaps"]
        ]
        if not gaps:
            continue
        parts = {}
        for part in ("die_to_start", "die_to_create", "create_to_start", "die_to_destroy"):
            values = [gap[part] for gap in gaps if gap[part] is not None]
            if values:
                median, maximum = median_and_max(values)
                parts[part] = {"median": median, "max": maximum}
        summary[orchestrator] = parts
    return summary


def load_range(runs: List[Dict[str, Any]]) -> str:
    loads = [run["load_before"] for run in runs if run["timed"]]
    return f"{min(loads):.2f} to {max(loads):.2f}"


def render_section(
    machine: Machine, command: str, date: str, results: Dict[str, Any], before: Optional[Dict]
) -> str:
    steps = results["steps"]
    summary = results["summary"]
    docker_rs = summary["docker_rs"]["die_to_start"]
    local_docker = summary["local_docker"]["die_to_start"]
    median_met = docker_rs["median"] <= TARGET_MEDIAN_MS
    relative_met = docker_rs["median"] <= local_docker["median"]
    max_met = docker_rs["max"] <= local_docker["max"]

    def verdict(met: bool) -> str:
        return "met" if met else "**missed**"

    lines = [
        "## Per-step overhead: gap between step containers",
        "",
        "Written by `bench/step_gap.py`. Run it again to replace this section.",
        "",
        f"The pipeline is a chain of {steps} trivial steps "
        "(`bench/pipelines/step_chain.py`): each step adds one to its upstream's output, "
        "so a step container can start only after the one before it exited. The gap is "
        "taken from the Docker daemon's own event times (`timeNano`): from the `die` "
        "event of one step's container to the `start` event of the next step's "
        f"container. That makes {steps - 1} gaps per run. The script checks that every "
        f"run completed and that the last step returned {steps}.",
        "",
        *machine.markdown_lines(command, date),
        f"- Load: 1-minute load average before the timed runs from "
        f"{load_range(results['runs'])}; the table of runs below gives it for each run",
        "",
        "| orchestrator | median gap (ms) | max gap (ms) | gaps |",
        "|---|---:|---:|---:|",
    ]
    for orchestrator in ORCHESTRATORS:
        gap = summary[orchestrator]["die_to_start"]
        count = sum(
            len(run["gaps"])
            for run in results["runs"]
            if run["timed"] and run["orchestrator"] == orchestrator
        )
        lines.append(
            f"| {orchestrator} | {gap['median']:.1f} | {gap['max']:.1f} | {count} |"
        )
    lines += [
        "",
        "Targets (on a 2-core machine):",
        "",
        f"- docker_rs median gap at most {TARGET_MEDIAN_MS:.0f} ms: {docker_rs['median']:.1f} ms, "
        f"{verdict(median_met)}.",
        f"- docker_rs median gap not above local_docker's: {docker_rs['median']:.1f} ms "
        f"against {local_docker['median']:.1f} ms, {verdict(relative_met)}.",
        f"- docker_rs max gap not above local_docker's: {docker_rs['max']:.1f} ms against "
        f"{local_docker['max']:.1f} ms, {verdict(max_met)}.",
    ]
    latency = results.get("daemon_latency")
    if latency:
        create, start, wait = (latency[key] for key in ("create", "start", "die_to_wait"))
        lines += [
            "",
            "Floor on this machine, measured right after the runs on 5 bare containers "
            "from the docker_rs step image: median (max) in ms.",
            "",
            "| daemon call | time (ms) |",
            "|---|---:|",
            f"| `create` | {create['median']:.1f} ({create['max']:.1f}) |",
            f"| `start` | {start['median']:.1f} ({start['max']:.1f}) |",
            f"| `die` event → response to `wait` | {wait['median']:.1f} ({wait['max']:.1f}) |",
            "",
            "Docker sends the `start` event at the end of the start call (within about "
            "1 ms of its response on this machine), so no orchestrator's gap can be "
            "shorter than that call. One that creates the next "
            "container after the exit pays `create` as well, and one that learns of the "
            "exit from `wait` also pays the time the daemon takes to respond to it.",
        ]
    lines += [
        "",
        "Where the gap goes: medians (and max) over the same gaps, in ms from the `die` "
        "event of the upstream container. A negative value happened before that exit. "
        "local_docker keeps its containers, so it has no `destroy` event.",
        "",
        "| part | docker_rs | local_docker |",
        "|---|---:|---:|",
    ]
    parts = {
        "die_to_destroy": "upstream `die` → upstream `destroy`",
        "die_to_create": "upstream `die` → downstream `create`",
        "create_to_start": "downstream `create` → downstream `start`",
        "die_to_start": "upstream `die` → downstream `start` (the gap)",
    }
    for part, title in parts.items():
        cells = []
        for orchestrator in ORCHESTRATORS:
            value = summary[orchestrator].get(part)
            cells.append(
                "n/a" if value is None else f"{value['median']:.1f} ({value['max']:.1f})"
            )
        lines.append(f"| {title} | {' | '.join(cells)} |")

    if before is not None:
        lines += render_comparison(before, results)

    lines += [
        "",
        "Every run, in the order it ran. Warm-up runs build the step image and are not "
        "part of the figures above. The load is the 1-minute load average before the run.",
        "",
        "| # | orchestrator | kind | wall time (s) | load before | gaps (ms) |",
        "|---:|---|---|---:|---:|---|",
    ]
    for number, run in enumerate(results["runs"], start=1):
        gaps = ", ".join(f"{gap['die_to_start']:.0f}" for gap in run["gaps"])
        kind = "timed" if run["timed"] else "warm-up"
        lines.append(
            f"| {number} | {run['orchestrator']} | {kind} | {run['wall_seconds']:.2f} | "
            f"{run['load_before']:.2f} | {gaps} |"
        )
    lines += ["", *NOTES]
    return "\n".join(lines) + "\n"


def render_comparison(before: Dict[str, Any], after: Dict[str, Any]) -> List[str]:
    """Return the lines that compare these results with an earlier run's."""
    lines = [
        "",
        f"Compared with an earlier run of this script on commit {before['machine']['commit']} "
        f"({before['date']}, load before the timed runs {load_range(before['runs'])}): "
        "median (max) gap in ms.",
        "",
        "| orchestrator | before | now |",
        "|---|---:|---:|",
    ]
    for orchestrator in ORCHESTRATORS:
        cells = []
        for results in (before, after):
            gap = results["summary"][orchestrator]["die_to_start"]
            cells.append(f"{gap['median']:.1f} ({gap['max']:.1f})")
        lines.append(f"| {orchestrator} | {' | '.join(cells)} |")
    return lines


# Notes on how each orchestrator spends a gap and on what changed in docker_rs. The
# section keeps them next to the numbers, so that its reader can tell what the parts
# measure.
NOTES = [
    "How each orchestrator spends a gap:",
    "",
    "- local_docker runs the steps one after another with docker-py: it follows the "
    "container's log until the stream ends, then creates and starts the next "
    "container. It neither waits for nor removes the exited container.",
    "- docker_rs waits for the container's exit, drains its attached output and "
    "inspects the container for the exit code, out-of-memory kill and times. It then "
    "reports the step as finished and removes the container in the background. The "
    "scheduler launches the next step: create, attach, start. The image's "
    "environment, for the `PYTHONPATH` the engine appends to, is inspected once per "
    "image and run, before the first step. The run ends only after every removal "
    "finished.",
    "",
    "What the engine's tracing showed, and what changed: up to commit 47347e5 the "
    "engine waited up to 500 ms after each exit for Docker's stats stream to end, but "
    "Docker 20.10 keeps that stream open until the container is removed. So every "
    "gap had a fixed 500 ms in it. The engine also removed the container (15 to 80 ms "
    "under load) before it reported the exit. Commit 1c7b468 stops the memory sampler "
    "at the exit, and commit 51f63c1 moves the removal off the path between two steps. "
    "What is left is in the floor table above: the daemon's response to `wait`, then "
    "`create` and `start` of the next container, plus a few ms of inspect calls. "
    "Creating the next container ahead of time would take `create` off that path, and "
    "reading the exit from the `die` event would take the `wait` delay off it, but "
    "`start` stays.",
]


def main() -> int:
    args = parse_args()
    require_modules("zenml", "zenml_docker_rs", "docker")
    # ZenML builds the step images FROM this image.
    require_image(zenml_parent_image(), base_image_command())
    command = command_line()
    date = utc_now()
    benchmark_id = uuid.uuid4().hex[:12]
    before = json.loads(args.before.read_text()) if args.before else None

    with throwaway_zenml_config(logger):
        machine = Machine.describe()
        stacks = ZenmlStacks(benchmark_id, logger)
        benchmark = Benchmark(stacks, args.steps)
        try:
            benchmark.measure(args.repeats)
        finally:
            leftovers = stacks.cleanup()
            logger.info(
                "removed containers: %s",
                ", ".join(f"{o}: {n}" for o, n in leftovers.items()) or "none",
            )

    results = {
        "date": date,
        "command": command,
        "machine": machine,
        "steps": args.steps,
        "repeats": args.repeats,
        "runs": benchmark.runs,
        "daemon_latency": benchmark.daemon_latency,
    }
    # Round-trip through JSON so the summary and the section read the same plain data
    # as a results file passed with --before.
    results = json.loads(json.dumps(results, default=asdict))
    results["summary"] = summarize(results["runs"])
    path = save_results(NAME, results)
    logger.info("saved the raw results to %s", path)

    section = render_section(machine, command, date, results, before)
    write_section(NAME, section)
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
