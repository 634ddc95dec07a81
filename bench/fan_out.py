"""Time fan-out pipelines of several widths on `docker_rs` against ZenML's `local_docker`.

The script registers two stacks in a throwaway ZenML configuration that differ only
in the orchestrator (see common.ZenmlStacks). For each width W it runs
`examples/fan_out.py` (one source step, W branches that each sleep SECONDS, one
join step) once on each stack as an untimed warm-up that builds the step image,
then alternates docker_rs, local_docker, docker_rs, ... REPEATS times each. Each
timed value is the wall time of one pipeline call (time.perf_counter), and every
run must complete with the join value that examples/fan_out.py expects.

It replaces the `fan_out` section of BENCHMARKS.md with the medians, their ratio
(docker_rs / local_docker) against the targets, and every individual time with
the load around it. It saves the numbers to bench/results/fan_out.json and plots
the median wall time against the width to bench/results/fan_out.png.

At the end, even after a failure, it removes the throwaway configuration and the
containers and images of this run, found by a label and by image repositories
that carry a random id of the run. Run it when the machine is quiet: other
containers on the same daemon change the numbers.
"""

import argparse
import logging
import os
import statistics
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import ORCHESTRATORS, ZenmlStacks  # noqa: E402

EXAMPLES_DIR = common.REPO_ROOT / "examples"
PLOT_PATH = common.RESULTS_DIR / "fan_out.png"
# The ratio docker_rs / local_docker that each width should stay at or below.
TARGET_RATIOS = {4: 0.5, 8: 0.4}

logger = common.setup_logger("fan_out")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--widths",
        type=int,
        nargs="+",
        default=[2, 4, 8],
        help="numbers of parallel branches to measure (default: 2 4 8)",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=2.0,
        help="seconds each branch sleeps to stand in for work (default: 2)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="timed runs per orchestrator and width, after one warm-up each (default: 3)",
    )
    args = parser.parse_args()
    if any(width < 1 for width in args.widths):
        parser.error(f"every width must be at least 1, not {args.widths}")
    if args.seconds < 0:
        parser.error(f"--seconds must not be negative, not {args.seconds}")
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, not {args.repeats}")
    return args


@dataclass
class Run:
    """One pipeline call and how busy the machine was around it."""

    width: int
    orchestrator: str
    seconds: float
    timed: bool
    load_before: float
    load_max: float
    others_before: int
    others_max: int


class BusySampler:
    """Sample the 1-minute load average and the running containers of other owners.

    Used as a context manager around one pipeline call: it samples once on entry
    and then every `interval` seconds in a thread until exit. It queries the Docker
    Engine API directly rather than spawning the `docker` CLI, so that sampling
    costs little CPU on a small machine.
    """

    def __init__(self, is_own, interval: float = 2.0):
        import docker as docker_sdk

        self._client = docker_sdk.from_env()
        self._is_own = is_own
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.load_before = self.load_max = 0.0
        self.others_before = self.others_max = 0

    def _sample(self) -> Tuple[float, int]:
        load = os.getloadavg()[0]
        containers = self._client.api.containers()
        others = sum(1 for c in containers if not self._is_own(c.get("Labels") or {}))
        return load, others

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            load, others = self._sample()
            self.load_max = max(self.load_max, load)
            self.others_max = max(self.others_max, others)

    def __enter__(self) -> "BusySampler":
        self.load_before, self.others_before = self._sample()
        self.load_max, self.others_max = self.load_before, self.others_before
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()
        self._client.close()


@dataclass
class Results:
    """Everything the report needs."""

    runs: List[Run] = field(default_factory=list)
    # Step image reference and id, by width and orchestrator.
    images: Dict[str, Tuple[str, str]] = field(default_factory=dict)
    leftover_containers: Dict[str, int] = field(default_factory=dict)
    load_start: float = 0.0
    load_end: float = 0.0

    def timed_seconds(self, width: int, orchestrator: str) -> List[float]:
        return [
            r.seconds
            for r in self.runs
            if r.timed and r.width == width and r.orchestrator == orchestrator
        ]

    def median(self, width: int, orchestrator: str) -> float:
        return statistics.median(self.timed_seconds(width, orchestrator))

    def ratio(self, width: int) -> float:
        return self.median(width, "docker_rs") / self.median(width, "local_docker")


def load_example():
    """Import examples/fan_out.py as the top-level module `fan_out`.

    It gets its own directory as source root, exactly as `python
    examples/fan_out.py` does, so the step containers import the step code the same
    way. This script has the same file name, so the examples directory must come
    first on sys.path.
    """
    from zenml.utils import source_utils

    sys.path.insert(0, str(EXAMPLES_DIR))
    source_utils.set_custom_source_root(str(EXAMPLES_DIR))
    sys.modules.pop("fan_out", None)
    import fan_out as example

    if Path(example.__file__).resolve() != EXAMPLES_DIR / "fan_out.py":
        raise RuntimeError(f"imported {example.__file__} instead of the example")
    return example


def run_once(
    stacks: ZenmlStacks, pipeline, expected_total: int, width: int, orchestrator: str, timed: bool
) -> Tuple[Run, object]:
    """Run the pipeline on the orchestrator's stack, time it and check the result."""
    stacks.activate(orchestrator)
    with BusySampler(stacks.is_own) as busy:
        start = time.perf_counter()
        response = pipeline()
        elapsed = time.perf_counter() - start

    run = common.completed_run(response, orchestrator)
    total = run.steps["join"].output.load()
    if total != expected_total:
        raise RuntimeError(
            f"run {run.id} on {orchestrator}: join returned {total}, expected {expected_total}"
        )
    kind = "timed" if timed else "warm-up"
    logger.info("W=%d %s run on %s: %.2f s", width, kind, orchestrator, elapsed)
    measured = Run(
        width=width,
        orchestrator=orchestrator,
        seconds=elapsed,
        timed=timed,
        load_before=busy.load_before,
        load_max=busy.load_max,
        others_before=busy.others_before,
        others_max=busy.others_max,
    )
    return measured, run


def measure_width(
    args: argparse.Namespace, stacks: ZenmlStacks, example, width: int, results: Results
) -> None:
    """Run the warm-ups and the timed runs of one width into `results`."""
    base = example.build_fan_out(width, args.seconds)
    expected_total = example.expected_total(width)
    pipelines = {o: base.with_options(settings=stacks.settings(o)) for o in ORCHESTRATORS}

    builds = {}
    for orchestrator in ORCHESTRATORS:
        warm_up, run = run_once(
            stacks, pipelines[orchestrator], expected_total, width, orchestrator, timed=False
        )
        results.runs.append(warm_up)
        pinned, build_id, image = stacks.pin_build(pipelines[orchestrator], run, orchestrator)
        pipelines[orchestrator] = pinned
        builds[orchestrator] = build_id
        results.images[f"{width}/{orchestrator}"] = (build_id, image)

    for _ in range(args.repeats):
        for orchestrator in ORCHESTRATORS:
            timed, run = run_once(
                stacks, pipelines[orchestrator], expected_total, width, orchestrator, timed=True
            )
            results.runs.append(timed)
            if run.build is None or str(run.build.id) != builds[orchestrator]:
                raise RuntimeError(
                    f"run {run.id} on {orchestrator} did not use the warm-up build "
                    f"{builds[orchestrator]}"
                )


def plot(args: argparse.Namespace, results: Results, path: Path) -> None:
    """Plot the median wall time against the width for both orchestrators."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    widths = sorted(args.widths)
    slowest = max(r.seconds for r in results.runs if r.timed)
    figure, axes = plt.subplots(figsize=(6, 4), dpi=120)
    for orchestrator, marker in zip(ORCHESTRATORS, ("o", "s")):
        medians = [results.median(w, orchestrator) for w in widths]
        axes.plot(widths, medians, marker=marker, label=orchestrator)
        for width in widths:
            runs = results.timed_seconds(width, orchestrator)
            axes.scatter([width] * len(runs), runs, s=8, alpha=0.4, color="gray")
    axes.set_xlabel("fan-out width (parallel branches)")
    axes.set_ylabel("pipeline wall time (s)")
    axes.set_xticks(widths)
    # Headroom above the slowest run, so its marker is not cut off at the top edge.
    axes.set_ylim(0, slowest * 1.1)
    axes.set_title(f"Fan-out pipeline, each branch sleeps {args.seconds:g} s")
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)


def render_section(
    args: argparse.Namespace, machine: common.Machine, results: Results, command: str, date: str
) -> str:
    """Render the Markdown section with the results."""
    widths = sorted(args.widths)
    # With one timed run per width and orchestrator there is no median to speak of.
    statistic = "median" if args.repeats > 1 else "wall time"
    lines = [
        "## Fan-out pipeline: docker_rs against local_docker",
        "",
        "Written by `bench/fan_out.py`. Run it again to replace this section.",
        "",
        f"The pipeline is `examples/fan_out.py`: one source step, W branches that each "
        f"sleep {args.seconds:g} s, one join step, so W + 2 step containers per run. "
        "docker_rs starts the branches at the same time, while local_docker runs the "
        "steps one after another.",
        "",
        *machine.markdown_lines(command, date),
        f"- Load: 1-minute load average {results.load_start:.2f} at the start and "
        f"{results.load_end:.2f} at the end; the table of runs below gives it for each run",
        "",
        f"| width | docker_rs {statistic} (s) | local_docker {statistic} (s) | "
        "ratio docker_rs / local_docker | target | met |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    for width in widths:
        ratio = results.ratio(width)
        target = TARGET_RATIOS.get(width)
        target_text = f"≤ {target:g}" if target else "none"
        if target is None:
            met = "n/a"
        elif ratio <= target:
            met = "yes"
        else:
            met = "**no**"
        lines.append(
            f"| {width} | {results.median(width, 'docker_rs'):.2f} | "
            f"{results.median(width, 'local_docker'):.2f} | {ratio:.2f} | "
            f"{target_text} | {met} |"
        )
    lines += [
        "",
        f"![{'Median wall' if args.repeats > 1 else 'Wall'} time against fan-out width]"
        f"(bench/results/{PLOT_PATH.name})",
        "",
        "Every run, in the order it ran. Warm-up runs build the step image and are "
        "not part of the figures above. The load is the 1-minute load average. Other "
        "containers are running containers on the same daemon that this benchmark "
        "did not start. Both are sampled before the run and every 2 s during it.",
        "",
        "| # | width | orchestrator | kind | wall time (s) | load before | load max | "
        "other containers before | other containers max |",
        "|---:|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for number, run in enumerate(results.runs, start=1):
        kind = "timed" if run.timed else "warm-up"
        lines.append(
            f"| {number} | {run.width} | {run.orchestrator} | {kind} | {run.seconds:.2f} | "
            f"{run.load_before:.2f} | {run.load_max:.2f} | "
            f"{run.others_before} | {run.others_max} |"
        )
    leftovers = ", ".join(
        f"{orchestrator}: {count}" for orchestrator, count in results.leftover_containers.items()
    )
    lines += [
        "",
        "How it is measured:",
        "",
        "- Each time is `time.perf_counter()` around one pipeline call, after its stack "
        "was activated. It includes ZenML's work in the client (snapshot, code upload to "
        "the artifact store, run bookkeeping in the local SQLite store) as well as the "
        "step containers. Every run is checked to be completed with the expected join "
        "value.",
        "- ZenML 0.98 reuses an image build on its own only when the stack has a "
        "container registry, and these stacks have none. So the timed runs pass the "
        "warm-up run's build id (`with_options(build=...)`), and the script checks that "
        "every timed run used that build.",
        "- local_docker leaves its stopped step containers behind, because it calls "
        "docker-py's `containers.run` without `remove`. docker_rs removes its "
        "containers within the timed run. The script removes the leftovers after all "
        f"runs, outside the timing. Containers found then: {leftovers or 'none'}.",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    args = parse_args()
    common.require_modules("zenml", "zenml_docker_rs", "docker", "matplotlib")
    # ZenML builds the step images FROM this image.
    common.require_image(common.zenml_parent_image(), common.base_image_command())
    command = common.command_line()
    date = common.utc_now()
    run_id = uuid.uuid4().hex[:12]
    logger.info("benchmark run %s", run_id)
    machine = common.Machine.describe()
    results = Results(load_start=os.getloadavg()[0])

    with common.throwaway_zenml_config(logger):
        stacks = ZenmlStacks(run_id, logger)
        try:
            stacks.register()
            example = load_example()
            for width in args.widths:
                measure_width(args, stacks, example, width, results)
            results.load_end = os.getloadavg()[0]
        finally:
            results.leftover_containers = stacks.cleanup()

    plot(args, results, PLOT_PATH)
    section = render_section(args, machine, results, command, date)
    common.write_section("fan_out", section)
    common.save_results(
        "fan_out",
        {
            "date": date,
            "command": command,
            "machine": machine,
            "seconds": args.seconds,
            "medians": {
                str(w): {o: results.median(w, o) for o in ORCHESTRATORS} for w in args.widths
            },
            "ratios": {str(w): results.ratio(w) for w in args.widths},
            "runs": results.runs,
        },
    )
    logger.info("wrote the fan_out section of %s and %s", common.BENCHMARKS_MD, PLOT_PATH)
    print(section)
    return 0


if __name__ == "__main__":
    logging.captureWarnings(True)
    sys.exit(main())
