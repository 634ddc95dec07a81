"""Time the fan-out example on `docker_rs` against ZenML's built-in `local_docker`.

The script registers two stacks in a throwaway ZenML configuration. Both stacks use
the local image builder and the default artifact store, and they differ only in the
orchestrator. It runs `examples/fan_out.py` (one source step, WIDTH branches that each
sleep SECONDS, one join step) once on each stack as an untimed warm-up that builds
the step image, then alternates docker_rs, local_docker, docker_rs, ... REPEATS times
each. Each timed value is the wall time of one pipeline call (time.perf_counter),
and every run must complete with the join value that examples/fan_out.py expects.

The medians, their ratio (local_docker / docker_rs), every individual time and a
description of the machine replace this script's section of BENCHMARKS.md.

At the end, even after a failure, the script removes the throwaway configuration,
the containers it started and the images it built. It finds them by a label and
by image repositories that carry a random id of this run. It touches no other
Docker object.

Run it when the machine is quiet: other containers on the same daemon change the
numbers, so the section records the load average and the other running containers
before every timed run.
"""

import argparse
import datetime
import logging
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES_DIR = REPO_ROOT / "examples"
DEFAULT_OUTPUT = REPO_ROOT / "BENCHMARKS.md"

ORCHESTRATORS = ("docker_rs", "local_docker")
# Every image and local_docker container of one benchmark run carries this label,
# with the run's random id as value.
BENCH_LABEL = "io.zenml.docker-rs.bench"
# The docker_rs orchestrator labels each step container with its component id.
ORCHESTRATOR_ID_LABEL = "io.zenml.orchestrator-id"

SECTION_START = "<!-- bench/fan_out.py: start -->"
SECTION_END = "<!-- bench/fan_out.py: end -->"
BENCHMARKS_HEADER = """# Benchmarks

Measured numbers of zenml-docker-rs. Each section is written by the script it
names. Run that script again to replace the section. Benchmarks are not tests:
run them on purpose, on a quiet machine.
"""

logger = logging.getLogger("bench.fan_out")


def parse_args() -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--width", type=int, default=4, help="number of parallel branches (default: 4)"
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=3.0,
        help="seconds each branch sleeps to stand in for work (default: 3)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="timed runs per orchestrator, after one untimed warm-up each (default: 3)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help=f"Markdown file whose fan-out section is replaced (default: {DEFAULT_OUTPUT})",
    )
    args = parser.parse_args()
    if args.width < 1:
        parser.error(f"--width must be at least 1, not {args.width}")
    if args.seconds < 0:
        parser.error(f"--seconds must not be negative, not {args.seconds}")
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, not {args.repeats}")
    return args


def docker(*args: str) -> str:
    """Run the Docker CLI and return its standard output.

    The script uses the CLI only to describe the machine and to clean up. The
    orchestrators under test talk to the Docker Engine API themselves.
    """
    result = subprocess.run(["docker", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(
            f"`docker {' '.join(args)}` failed ({result.returncode}): {result.stderr.strip()}"
        )
    return result.stdout.strip()


@dataclass
class Machine:
    """The machine and software the numbers were measured on."""

    cpus: int
    memory_gib: float
    kernel: str
    docker_version: str
    storage_driver: str
    zenml_version: str
    python_version: str
    commit: str

    @classmethod
    def describe(cls) -> "Machine":
        """Collect the description from the OS, the Docker daemon and git."""
        import zenml

        with open("/proc/meminfo") as meminfo:
            total_kib = next(
                int(line.split()[1]) for line in meminfo if line.startswith("MemTotal:")
            )
        commit = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        return cls(
            cpus=os.cpu_count() or 0,
            memory_gib=total_kib / (1 << 20),
            kernel=platform.release(),
            docker_version=docker("version", "--format", "{{.Server.Version}}"),
            storage_driver=docker("info", "--format", "{{.Driver}}"),
            zenml_version=zenml.__version__,
            python_version=platform.python_version(),
            commit=(commit or "unknown") + (" with uncommitted changes" if dirty else ""),
        )


@dataclass
class Run:
    """One pipeline call and how busy the machine was around it."""

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
    images: Dict[str, Tuple[str, str]] = field(default_factory=dict)
    leftover_containers: Dict[str, int] = field(default_factory=dict)
    load_start: float = 0.0
    load_end: float = 0.0

    def timed_seconds(self, orchestrator: str) -> List[float]:
        return [r.seconds for r in self.runs if r.timed and r.orchestrator == orchestrator]


class Benchmark:
    """Two stacks in a throwaway ZenML configuration and the runs on them.

    Create it only after ZENML_CONFIG_PATH points at the throwaway configuration,
    because ZenML reads that variable when it is first imported.
    """

    def __init__(self, run_id: str, width: int, seconds: float):
        self.run_id = run_id
        self.width = width
        self.seconds = seconds
        self.label = f"{BENCH_LABEL}={run_id}"
        self.docker_rs_id: Optional[str] = None

    def repository(self, orchestrator: str) -> str:
        """Return the image repository of one stack, unique to this benchmark run."""
        return f"zenml-docker-rs-bench-{self.run_id}-{orchestrator.replace('_', '-')}"

    def register_stacks(self) -> None:
        """Register the docker_rs flavor, both orchestrators and both stacks."""
        from zenml.client import Client
        from zenml.enums import StackComponentType

        client = Client()
        client.create_flavor(
            source="zenml_docker_rs.DockerRsOrchestratorFlavor",
            component_type=StackComponentType.ORCHESTRATOR,
        )
        client.create_stack_component(
            name="bench_image_builder",
            flavor="local",
            component_type=StackComponentType.IMAGE_BUILDER,
            configuration={},
        )
        for orchestrator in ORCHESTRATORS:
            component = client.create_stack_component(
                name=f"bench_{orchestrator}",
                flavor=orchestrator,
                component_type=StackComponentType.ORCHESTRATOR,
                configuration={},
            )
            if orchestrator == "docker_rs":
                self.docker_rs_id = str(component.id)
            client.create_stack(
                name=f"bench_{orchestrator}",
                components={
                    StackComponentType.ORCHESTRATOR: f"bench_{orchestrator}",
                    StackComponentType.ARTIFACT_STORE: "default",
                    StackComponentType.IMAGE_BUILDER: "bench_image_builder",
                },
            )

    def make_pipelines(self):
        """Return the fan-out pipeline configured for each orchestrator, by name."""
        from zenml.config import DockerSettings
        from zenml.config.docker_settings import DockerBuildConfig
        from zenml.utils import source_utils

        # Load examples/fan_out.py as the top-level module `fan_out` with its own
        # directory as source root, exactly as `python examples/fan_out.py` does, so
        # the step containers import the step code the same way. This script has
        # the same file name, so the examples directory must come first on sys.path.
        sys.path.insert(0, str(EXAMPLES_DIR))
        source_utils.set_custom_source_root(str(EXAMPLES_DIR))
        import fan_out as example

        if Path(example.__file__).resolve() != EXAMPLES_DIR / "fan_out.py":
            raise RuntimeError(f"imported {example.__file__} instead of the example")
        self.expected_total = example.expected_total(self.width)
        base = example.build_fan_out(self.width, self.seconds)

        pipelines = {}
        for orchestrator in ORCHESTRATORS:
            docker_settings = DockerSettings(
                target_repository=self.repository(orchestrator),
                build_config=DockerBuildConfig(
                    # ZenML keeps intermediate build containers unless rm is set.
                    build_options={
                        "rm": True,
                        "forcerm": True,
                        "labels": {BENCH_LABEL: self.run_id},
                    }
                ),
            )
            settings = {"docker": docker_settings}
            if orchestrator == "local_docker":
                # local_docker does not remove its step containers, so the label lets
                # the cleanup find them. docker_rs labels its containers itself.
                settings["orchestrator.local_docker"] = {
                    "run_args": {"labels": {BENCH_LABEL: self.run_id}}
                }
            pipelines[orchestrator] = base.with_options(settings=settings)
        return pipelines

    def is_own(self, labels: Dict[str, str]) -> bool:
        """Tell from its labels whether this benchmark run started a container."""
        return labels.get(BENCH_LABEL) == self.run_id or (
            self.docker_rs_id is not None
            and labels.get(ORCHESTRATOR_ID_LABEL) == self.docker_rs_id
        )

    def run_once(self, pipeline, orchestrator: str, timed: bool) -> Tuple[Run, object]:
        """Run the pipeline on the orchestrator's stack, time it and check the result."""
        from zenml.client import Client
        from zenml.enums import ExecutionStatus

        client = Client()
        client.activate_stack(f"bench_{orchestrator}")

        with BusySampler(self.is_own) as busy:
            start = time.perf_counter()
            response = pipeline()
            elapsed = time.perf_counter() - start

        if response is None:
            raise RuntimeError(f"the pipeline call on {orchestrator} returned no run")
        run = client.get_pipeline_run(response.id)
        if run.status != ExecutionStatus.COMPLETED:
            raise RuntimeError(
                f"run {run.id} on {orchestrator} ended as {run.status.value}, not completed"
            )
        total = run.steps["join"].output.load()
        if total != self.expected_total:
            raise RuntimeError(
                f"run {run.id} on {orchestrator}: join returned {total}, "
                f"expected {self.expected_total}"
            )
        kind = "timed" if timed else "warm-up"
        logger.info("%s run on %s: %.2f s, join = %s", kind, orchestrator, elapsed, total)
        measured = Run(
            orchestrator=orchestrator,
            seconds=elapsed,
            timed=timed,
            load_before=busy.load_before,
            load_max=busy.load_max,
            others_before=busy.others_before,
            others_max=busy.others_max,
        )
        return measured, run

    def cleanup(self) -> Dict[str, int]:
        """Remove every container and image of this benchmark run.

        A failed removal is logged and the cleanup goes on, so one error does not
        leave the rest behind.

        Returns:
            The number of containers found after the runs, by orchestrator.
        """
        leftovers = {}
        selectors = {"local_docker": self.label}
        if self.docker_rs_id:
            selectors["docker_rs"] = f"{ORCHESTRATOR_ID_LABEL}={self.docker_rs_id}"
        for orchestrator, label in selectors.items():
            try:
                ids = docker("ps", "-aq", "--filter", f"label={label}").split()
                leftovers[orchestrator] = len(ids)
                if ids:
                    docker("rm", "-f", "-v", *ids)
            except RuntimeError as error:
                logger.error("failed to remove the %s containers of this run: %s", orchestrator, error)

        # Remove by reference and without -f, so a layer that another image shares
        # stays. The label and the repository names are unique to this run.
        try:
            references = docker(
                "images", "--filter", f"label={self.label}", "--format", "{{.Repository}}:{{.Tag}}"
            ).split()
            prefix = f"zenml-docker-rs-bench-{self.run_id}-"
            ours = [ref for ref in references if ref.startswith(prefix)]
            if ours:
                docker("rmi", *ours)
            logger.info("removed images: %s", ", ".join(ours) or "none")
        except RuntimeError as error:
            logger.error("failed to remove the images of this run: %s", error)
        logger.info(
            "removed containers: %s",
            ", ".join(f"{o}: {n}" for o, n in leftovers.items()) or "none",
        )
        return leftovers


def image_id(reference: str) -> str:
    """Return the id of a local image."""
    return docker("image", "inspect", "--format", "{{.Id}}", reference)


def measure(args: argparse.Namespace, bench: Benchmark, results: Results) -> None:
    """Register the stacks, run the warm-ups and the timed runs into `results`."""
    bench.register_stacks()
    pipelines = bench.make_pipelines()

    # Warm-up: one run per stack builds that stack's image. ZenML 0.98 reuses a
    # build on its own only when the stack has a container registry (see
    # zenml.pipelines.build_utils.find_existing_build). Without one it registers
    # a new build and runs `docker build` on every pipeline call (the layer cache
    # then yields the same image id), so the timed runs pass the warm-up's build
    # explicitly and then check that they used it.
    builds = {}
    for orchestrator in ORCHESTRATORS:
        warm_up, run = bench.run_once(pipelines[orchestrator], orchestrator, timed=False)
        results.runs.append(warm_up)
        build = run.build
        if build is None or not build.images:
            raise RuntimeError(f"the warm-up run on {orchestrator} has no image build")
        references = {item.image for item in build.images.values()}
        if len(references) != 1:
            raise RuntimeError(f"expected one step image on {orchestrator}, got {references}")
        reference = references.pop()
        results.images[orchestrator] = (reference, image_id(reference))
        builds[orchestrator] = build.id
        pipelines[orchestrator] = pipelines[orchestrator].with_options(build=build.id)

    for _ in range(args.repeats):
        for orchestrator in ORCHESTRATORS:
            timed, run = bench.run_once(pipelines[orchestrator], orchestrator, timed=True)
            results.runs.append(timed)
            if run.build is None or run.build.id != builds[orchestrator]:
                raise RuntimeError(
                    f"run {run.id} on {orchestrator} did not use the warm-up build "
                    f"{builds[orchestrator]}"
                )

    for orchestrator, (reference, warm_up_id) in results.images.items():
        if image_id(reference) != warm_up_id:
            raise RuntimeError(f"the image {reference} changed after the warm-up run")


def format_seconds(values: List[float]) -> str:
    return ", ".join(f"{value:.2f}" for value in values)


def render_section(
    args: argparse.Namespace, machine: Machine, results: Results, command: str, date: str
) -> str:
    """Render the Markdown section with the results."""
    medians = {o: statistics.median(results.timed_seconds(o)) for o in ORCHESTRATORS}
    ratio = medians["local_docker"] / medians["docker_rs"]
    steps = args.width + 2

    lines = [
        SECTION_START,
        "## Fan-out pipeline: docker_rs against local_docker",
        "",
        "Written by `bench/fan_out.py`. Run it again to replace this section.",
        "",
        f"The pipeline is `examples/fan_out.py` with {args.width} branches of "
        f"{args.seconds:g} s each: one source step, {args.width} branches, one join "
        f"step, so {steps} step containers per run. docker_rs starts the branches at "
        "the same time, while local_docker runs the steps one after another. The sleep on "
        f"the critical path is {args.seconds:g} s for docker_rs and "
        f"{args.width * args.seconds:g} s for local_docker.",
        "",
        f"- Date: {date}",
        f"- Command: `{command}`",
        f"- Commit: {machine.commit}",
        f"- Machine: {machine.cpus} CPUs (nproc), {machine.memory_gib:.1f} GiB memory, "
        f"Linux kernel {machine.kernel}, Docker server {machine.docker_version} "
        f"(storage driver {machine.storage_driver})",
        f"- Software: zenml {machine.zenml_version}, Python {machine.python_version}; "
        "the step images are built from ZenML's default parent image "
        f"`zenmldocker/zenml:{machine.zenml_version}-py{sys.version_info.major}."
        f"{sys.version_info.minor}`",
        f"- Load: 1-minute load average {results.load_start:.2f} at the start and "
        f"{results.load_end:.2f} at the end; the table of runs below gives it for each run",
        "",
        "| orchestrator | median wall time (s) | timed runs (s) |",
        "|---|---:|---|",
    ]
    for orchestrator in ORCHESTRATORS:
        lines.append(
            f"| {orchestrator} | {medians[orchestrator]:.2f} | "
            f"{format_seconds(results.timed_seconds(orchestrator))} |"
        )
    lines += [
        "",
        f"Ratio of the medians, local_docker / docker_rs: **{ratio:.2f}**.",
        "",
        "Every run, in the order it ran. Warm-up runs build the step image and are "
        "not part of the medians. The load is the 1-minute load average. Other "
        "containers are running containers on the same daemon that this benchmark "
        "did not start. Both are sampled before the run and every 2 s during it.",
        "",
        "| # | orchestrator | kind | wall time (s) | load before | load max | "
        "other containers before | other containers max |",
        "|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for number, run in enumerate(results.runs, start=1):
        kind = "timed" if run.timed else "warm-up"
        lines.append(
            f"| {number} | {run.orchestrator} | {kind} | {run.seconds:.2f} | "
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
        "container registry, and these stacks have none. Without one, every pipeline "
        "call registers a new build and runs `docker build`, and Docker's layer cache "
        "turns that into the same image. So the timed runs pass the warm-up run's build "
        "id (`with_options(build=...)`), and the script checks that every timed run "
        "used that build and that the image id did not change.",
        "- local_docker leaves its stopped step containers behind, because it calls "
        "docker-py's `containers.run` without `remove`. docker_rs removes its "
        "containers within the timed run. The script removes the leftovers after all "
        f"runs, outside the timing. Containers found then: {leftovers}.",
        SECTION_END,
    ]
    return "\n".join(lines) + "\n"


def write_section(path: Path, section: str) -> None:
    """Replace this script's section of the Markdown file, or add it."""
    text = path.read_text() if path.exists() else BENCHMARKS_HEADER
    start = text.find(SECTION_START)
    end = text.find(SECTION_END)
    if start != -1 and end != -1 and end > start:
        end += len(SECTION_END)
        if text[end : end + 1] == "\n":
            end += 1
        text = text[:start] + section + text[end:]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main() -> int:
    args = parse_args()
    # ZenML's loggers propagate to the root logger, so a root handler would print
    # every ZenML line twice. This script's logger gets its own handler instead.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s bench: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False

    # ZenML reads ZENML_CONFIG_PATH when it is first imported, so set it before that.
    config_root = tempfile.mkdtemp(prefix="zenml-docker-rs-bench-")
    os.environ["ZENML_CONFIG_PATH"] = str(Path(config_root) / "zenml")
    os.environ["ZENML_ANALYTICS_OPT_IN"] = "false"
    os.environ["ZENML_ENABLE_RICH_TRACEBACK"] = "false"
    os.environ["ZENML_LOGGING_COLORS_DISABLED"] = "true"

    script = Path(__file__).resolve()
    try:
        script = script.relative_to(Path.cwd())
    except ValueError:
        pass
    command = shlex.join(["python", str(script), *sys.argv[1:]])
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    run_id = uuid.uuid4().hex[:12]
    logger.info("benchmark run %s, ZenML configuration in %s", run_id, config_root)
    machine = Machine.describe()
    results = Results(load_start=os.getloadavg()[0])
    bench = Benchmark(run_id, args.width, args.seconds)
    try:
        measure(args, bench, results)
        results.load_end = os.getloadavg()[0]
    finally:
        try:
            results.leftover_containers = bench.cleanup()
        finally:
            shutil.rmtree(config_root, ignore_errors=True)

    section = render_section(args, machine, results, command, date)
    write_section(args.output, section)
    logger.info("wrote the results to %s", args.output)
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
