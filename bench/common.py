"""Helpers shared by the benchmark scripts in bench/.

Each script runs alone (`python bench/<name>.py`), replaces its own section of
BENCHMARKS.md between the markers `<!-- bench:<name>:start -->` and
`<!-- bench:<name>:end -->`, and saves its raw numbers to bench/results/<name>.json.
The scripts that run ZenML pipelines share `ZenmlStacks`: two stacks in a throwaway
ZenML configuration that differ only in the orchestrator.
"""

import contextlib
import datetime
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS_MD = REPO_ROOT / "BENCHMARKS.md"
RESULTS_DIR = REPO_ROOT / "bench" / "results"

# Every Docker object a benchmark creates carries this label, with a random id of
# that benchmark run as value, so the cleanup touches nothing else.
BENCH_LABEL = "io.zenml.docker-rs.bench"
# The docker_rs orchestrator labels each step container with its component id.
ORCHESTRATOR_ID_LABEL = "io.zenml.orchestrator-id"
ORCHESTRATORS = ("docker_rs", "local_docker")

BENCHMARKS_HEADER = """# Benchmarks

Measured numbers of zenml-docker-rs. Each section is written by the script it
names. Run that script again to replace the section, or `bash bench/run_all.sh` to
replace all of them. Benchmarks are not tests: run them on purpose, on a quiet
machine.
"""


def setup_logger(name: str) -> logging.Logger:
    """Return the logger of one benchmark script, printing to stderr.

    ZenML's loggers propagate to the root logger, so a root handler would print
    every ZenML line twice. The script's logger gets its own handler instead.
    """
    logger = logging.getLogger(f"bench.{name}")
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s bench: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


# The one command that installs every Python package a benchmark script imports.
INSTALL_HINT = (
    'python3 -m venv .venv && .venv/bin/pip install ".[bench]", '
    "then run the script with .venv/bin/python"
)


def require_modules(*names: str) -> None:
    """Exit with an install hint unless every named top-level module is importable.

    find_spec locates a top-level module without importing it, so this runs before
    throwaway_zenml_config, which must come before the first zenml import.
    """
    missing = [name for name in names if importlib.util.find_spec(name) is None]
    if missing:
        noun = "module" if len(missing) == 1 else "modules"
        raise SystemExit(
            f"error: Python {noun} {', '.join(missing)} not found by {sys.executable}; "
            f"install the package with its bench extra into a venv: {INSTALL_HINT}"
        )


def require_image(reference: str, build_command: str) -> None:
    """Exit with the build command unless the Docker image `reference` exists locally."""
    result = _run_docker("image", "inspect", "--format", "{{.Id}}", reference)
    if result.returncode == 0:
        return
    if "no such image" in result.stderr.lower():
        raise SystemExit(f"error: image {reference} not found; build it with `{build_command}`")
    raise SystemExit(f"error: failed to inspect the image {reference}: {result.stderr.strip()}")


def zenml_parent_image() -> str:
    """Return ZenML's parent image for step builds, for the installed zenml and Python.

    Reads zenml's version from the package metadata, so zenml is not imported.
    """
    python = f"{sys.version_info[0]}.{sys.version_info[1]}"
    return f"zenmldocker/zenml:{importlib.metadata.version('zenml')}-py{python}"


def base_image_command() -> str:
    """Return the command that builds zenml_parent_image() for this interpreter."""
    return f"PYTHON={shlex.quote(sys.executable)} bash scripts/build-base-image.sh"


def docker(*args: str) -> str:
    """Run the Docker CLI and return its standard output."""
    result = _run_docker(*args)
    if result.returncode != 0:
        raise RuntimeError(
            f"`docker {' '.join(args)}` failed ({result.returncode}): {result.stderr.strip()}"
        )
    return result.stdout.strip()


def _run_docker(*args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["docker", *args], capture_output=True, text=True)
    except FileNotFoundError:
        raise SystemExit("error: the docker CLI is not on PATH; install Docker") from None


def command_line() -> str:
    """Return the command that started this script, as a user would type it."""
    script = Path(sys.argv[0]).resolve()
    with contextlib.suppress(ValueError):
        script = script.relative_to(REPO_ROOT)
    return shlex.join(["python", str(script), *sys.argv[1:]])


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


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
        try:
            from importlib.metadata import version

            zenml_version = version("zenml")
        except Exception:  # noqa: BLE001 - a benchmark without ZenML still reports
            zenml_version = "not installed"
        with open("/proc/meminfo") as meminfo:
            total_kib = next(
                int(line.split()[1]) for line in meminfo if line.startswith("MemTotal:")
            )
        commit = _git("rev-parse", "--short", "HEAD") or "unknown"
        # The suite rewrites BENCHMARKS.md and bench/results/ after each script, so
        # changes there do not make the measured code differ from the commit.
        if _git(
            "status",
            "--porcelain",
            "--untracked-files=no",
            "--",
            ".",
            ":(exclude)BENCHMARKS.md",
            ":(exclude)bench/results",
        ):
            commit += " with uncommitted changes"
        return cls(
            cpus=os.cpu_count() or 0,
            memory_gib=total_kib / (1 << 20),
            kernel=platform.release(),
            docker_version=docker("version", "--format", "{{.Server.Version}}"),
            storage_driver=docker("info", "--format", "{{.Driver}}"),
            zenml_version=zenml_version,
            python_version=platform.python_version(),
            commit=commit,
        )

    def markdown_lines(self, command: str, date: str) -> List[str]:
        """Return the bullet list that opens every section."""
        return [
            f"- Date: {date}",
            f"- Command: `{command}`",
            f"- Commit: {self.commit}",
            f"- Machine: {self.cpus} CPUs (nproc), {self.memory_gib:.1f} GiB memory, "
            f"Linux kernel {self.kernel}, Docker server {self.docker_version} "
            f"(storage driver {self.storage_driver})",
            f"- Software: zenml {self.zenml_version}, Python {self.python_version}",
        ]


def _git(*args: str) -> str:
    result = subprocess.run(
        ["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True
    )
    return result.stdout.strip()


def write_section(name: str, section: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace the section of benchmark `name` in BENCHMARKS.md, or append it."""
    start_marker = f"<!-- bench:{name}:start -->"
    end_marker = f"<!-- bench:{name}:end -->"
    block = f"{start_marker}\n{section.strip()}\n{end_marker}\n"
    text = path.read_text() if path.exists() else BENCHMARKS_HEADER
    start = text.find(start_marker)
    end = text.find(end_marker)
    if start != -1 and end > start:
        end += len(end_marker)
        if text[end : end + 1] == "\n":
            end += 1
        text = text[:start] + block + text[end:]
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text)


def save_results(name: str, data: Dict[str, Any]) -> Path:
    """Save the raw numbers of benchmark `name` as JSON and return the file."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, default=_to_json) + "\n")
    return path


def _to_json(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    raise TypeError(f"cannot save {type(value).__name__} as JSON")


def median_and_max(values: List[float]) -> Tuple[float, float]:
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        median = ordered[middle]
    else:
        median = (ordered[middle - 1] + ordered[middle]) / 2
    return median, ordered[-1]


def completed_run(response: Any, orchestrator: str) -> Any:
    """Return the ZenML run of a pipeline call, after checking that it completed."""
    from zenml.client import Client
    from zenml.enums import ExecutionStatus

    if response is None:
        raise RuntimeError(f"the pipeline call on {orchestrator} returned no run")
    run = Client().get_pipeline_run(response.id)
    if run.status != ExecutionStatus.COMPLETED:
        raise RuntimeError(
            f"run {run.id} on {orchestrator} ended as {run.status.value}, not completed"
        )
    return run


@contextlib.contextmanager
def throwaway_zenml_config(logger: logging.Logger) -> Iterator[Path]:
    """Point ZenML at a new, empty configuration and remove it afterwards.

    ZenML reads ZENML_CONFIG_PATH when it is first imported, so enter this before
    anything imports zenml.
    """
    if "zenml" in sys.modules:
        raise RuntimeError("zenml was imported before its configuration path was set")
    root = Path(tempfile.mkdtemp(prefix="zenml-docker-rs-bench-"))
    os.environ["ZENML_CONFIG_PATH"] = str(root / "zenml")
    os.environ["ZENML_ANALYTICS_OPT_IN"] = "false"
    os.environ["ZENML_ENABLE_RICH_TRACEBACK"] = "false"
    os.environ["ZENML_LOGGING_COLORS_DISABLED"] = "true"
    logger.info("ZenML configuration in %s", root)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


class ZenmlStacks:
    """A docker_rs stack and a local_docker stack in the current ZenML configuration.

    Both use the local image builder and the default artifact store. Images get a
    repository unique to this benchmark run and, like local_docker's containers, the
    benchmark label, so `cleanup` removes exactly what the run made.
    """

    def __init__(self, run_id: str, logger: logging.Logger):
        self.run_id = run_id
        self.label = f"{BENCH_LABEL}={run_id}"
        self.docker_rs_id: Optional[str] = None
        self._logger = logger

    def repository(self, orchestrator: str) -> str:
        """Return the image repository of one stack, unique to this benchmark run."""
        return f"zenml-docker-rs-bench-{self.run_id}-{orchestrator.replace('_', '-')}"

    def register(self) -> None:
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

    def settings(self, orchestrator: str) -> Dict[str, Any]:
        """Return the pipeline settings that tag the images and containers of a run."""
        from zenml.config import DockerSettings
        from zenml.config.docker_settings import DockerBuildConfig

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
        settings: Dict[str, Any] = {"docker": docker_settings}
        if orchestrator == "local_docker":
            # local_docker does not remove its step containers, so the label lets
            # the cleanup find them. docker_rs labels its containers itself.
            settings["orchestrator.local_docker"] = {
                "run_args": {"labels": {BENCH_LABEL: self.run_id}}
            }
        return settings

    def activate(self, orchestrator: str) -> None:
        from zenml.client import Client

        Client().activate_stack(f"bench_{orchestrator}")

    def container_filter(self, orchestrator: str) -> str:
        """Return the `label=` filter value that selects the run's step containers."""
        if orchestrator == "docker_rs":
            return f"{ORCHESTRATOR_ID_LABEL}={self.docker_rs_id}"
        return self.label

    def is_own(self, labels: Dict[str, str]) -> bool:
        """Tell from its labels whether this benchmark run started a container."""
        return labels.get(BENCH_LABEL) == self.run_id or (
            self.docker_rs_id is not None
            and labels.get(ORCHESTRATOR_ID_LABEL) == self.docker_rs_id
        )

    def pin_build(self, pipeline, run, orchestrator: str) -> Tuple[Any, str, str]:
        """Return the pipeline bound to the image build of a warm-up `run`.

        ZenML 0.98 reuses a build on its own only when the stack has a container
        registry (zenml.pipelines.build_utils.find_existing_build). Without one it
        runs `docker build` on every pipeline call, which Docker's layer cache turns
        into the same image, so timed runs pass the warm-up's build explicitly.

        Returns:
            The pinned pipeline, the build id and the image id of the build.
        """
        build = run.build
        if build is None or not build.images:
            raise RuntimeError(f"the warm-up run on {orchestrator} has no image build")
        references = {item.image for item in build.images.values()}
        if len(references) != 1:
            raise RuntimeError(f"expected one step image on {orchestrator}, got {references}")
        reference = references.pop()
        image = docker("image", "inspect", "--format", "{{.Id}}", reference)
        return pipeline.with_options(build=build.id), str(build.id), image

    def cleanup(self) -> Dict[str, int]:
        """Remove every container and image of this benchmark run.

        A failed removal is logged and the cleanup goes on, so one error does not
        leave the rest behind.

        Returns:
            The number of containers found, by orchestrator.
        """
        leftovers = {}
        for orchestrator in ORCHESTRATORS:
            if orchestrator == "docker_rs" and self.docker_rs_id is None:
                continue
            label = self.container_filter(orchestrator)
            try:
                ids = docker("ps", "-aq", "--filter", f"label={label}").split()
                leftovers[orchestrator] = len(ids)
                if ids:
                    docker("rm", "-f", "-v", *ids)
            except RuntimeError as error:
                self._logger.error(
                    "failed to remove the %s containers of this run: %s", orchestrator, error
                )

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
            self._logger.info("removed images: %s", ", ".join(ours) or "none")
        except RuntimeError as error:
            self._logger.error("failed to remove the images of this run: %s", error)
        return leftovers
