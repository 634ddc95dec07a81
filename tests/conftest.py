"""Shared fixtures: an isolated ZenML configuration, a registered docker_rs stack, and
a check that no test leaves a Docker object of this project behind.

ZenML reads ZENML_CONFIG_PATH when it is first imported, so the throwaway
configuration is set here, before any test module imports zenml. Pipelines run as
subprocesses from tests/pipelines/, exactly as a user runs `python run.py`.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest

TESTS_DIR = Path(__file__).resolve().parent
PIPELINES_DIR = TESTS_DIR / "pipelines"

_CONFIG_ROOT = tempfile.mkdtemp(prefix="zenml-docker-rs-tests-")
os.environ["ZENML_CONFIG_PATH"] = str(Path(_CONFIG_ROOT) / "zenml")
os.environ["ZENML_ANALYTICS_OPT_IN"] = "false"
os.environ["ZENML_LOGGING_COLORS_DISABLED"] = "true"
os.environ["ZENML_ENABLE_RICH_TRACEBACK"] = "false"
os.environ.setdefault("ZENML_LOGGING_VERBOSITY", "INFO")

# Every Docker object a test creates itself carries this label, with a value unique
# to the test session, so that concurrent sessions never clean up each other's objects.
TEST_LABEL = "io.zenml.docker-rs.test"
TEST_SESSION = uuid.uuid4().hex
TEST_SESSION_LABEL = f"{TEST_LABEL}={TEST_SESSION}"

# Set by the zenml_stack fixture: every step container of this session carries it.
_orchestrator_label: Optional[str] = None


def zenml_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the `zenml` CLI of this interpreter's environment with the test configuration.

    The CLI runs outside the repository: ZenML resolves a flavor class relative to the
    source root, which is the working directory, so from the repository root it would
    register `python.zenml_docker_rs...` instead of the installed package.
    """
    zenml = Path(sys.executable).parent / "zenml"
    result = subprocess.run(
        [str(zenml), *args], capture_output=True, text=True, env=os.environ.copy(), cwd=_CONFIG_ROOT
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"zenml {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


def docker_ids(kind: str, *filters: str) -> List[str]:
    """Return the ids of Docker containers, networks or volumes matching label filters."""
    command = ["docker", kind, "ls", "-q"]
    if kind == "container":
        command.append("-a")
    for label in filters:
        command += ["--filter", f"label={label}"]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return output.split()


# Label of the ZenML parent image that scripts/build-base-image.sh builds. Containers
# from that image inherit it, including the intermediate containers of ZenML's image
# builds.
BASE_IMAGE_LABEL = "io.zenml.docker-rs.base-image=true"


def build_containers() -> List[str]:
    """Return the ids of stopped containers that ran one instruction of an image build
    on top of the ZenML parent image."""
    ids = []
    for status in ("created", "exited"):
        command = [
            "docker", "container", "ls", "-aq", "--no-trunc",
            "--filter", f"label={BASE_IMAGE_LABEL}", "--filter", f"status={status}",
        ]
        ids += subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()
    if not ids:
        return []
    inspect = subprocess.run(
        ["docker", "container", "inspect", "--format", "{{.Id}} {{json .Config.Cmd}}", *ids],
        capture_output=True, text=True,
    ).stdout
    return [
        line.split(" ", 1)[0]
        for line in inspect.splitlines()
        if line.split(" ", 1)[-1].startswith('["/bin/sh","-c"')
    ]


@pytest.fixture(scope="session")
def zenml_stack() -> Iterator[Dict[str, str]]:
    """Register the flavor and a docker_rs stack with the CLI, as a user does.

    ZenML's local image builder calls docker-py's build without `rm`, so a build
    that is not cached leaves one stopped container per instruction. At the end of
    the session, those created during it are removed.

    Yields:
        The orchestrator's component id, which labels every container of these tests.
    """
    existing_build_containers = set(build_containers())
    zenml_cli("orchestrator", "flavor", "register", "zenml_docker_rs.DockerRsOrchestratorFlavor")
    zenml_cli("orchestrator", "register", "docker_rs", "-f", "docker_rs")
    zenml_cli("image-builder", "register", "local_builder", "-f", "local")
    zenml_cli(
        "stack", "register", "docker_rs_stack",
        "-o", "docker_rs", "-a", "default", "-i", "local_builder", "--set",
    )
    from zenml.client import Client

    global _orchestrator_label
    orchestrator = Client().get_stack_component("orchestrator", "docker_rs")
    _orchestrator_label = f"io.zenml.orchestrator-id={orchestrator.id}"
    yield {"orchestrator_id": str(orchestrator.id)}

    left_by_builds = [c for c in build_containers() if c not in existing_build_containers]
    if left_by_builds:
        subprocess.run(["docker", "rm", "-f", "-v", *left_by_builds], capture_output=True)


@pytest.fixture(autouse=True)
def no_leftover_docker_objects(request):
    """Fail a test that leaves a container, network or volume of this project behind,
    and remove what it left so later tests start clean."""
    yield
    containers = docker_ids("container", TEST_SESSION_LABEL)
    if _orchestrator_label:
        containers += docker_ids("container", _orchestrator_label)
    leftovers = {
        "container": containers,
        "network": docker_ids("network", TEST_SESSION_LABEL),
        "volume": docker_ids("volume", TEST_SESSION_LABEL),
    }
    for kind, ids in leftovers.items():
        if ids:
            rm = ["docker", kind, "rm"] + (["-f", "-v"] if kind == "container" else [])
            subprocess.run(rm + ids, capture_output=True)
    found = {kind: ids for kind, ids in leftovers.items() if ids}
    assert not found, f"{request.node.name} left Docker objects behind: {found}"


def run_pipeline(
    script: str,
    *args: str,
    timeout: float = 600,
    env: Optional[Dict[str, str]] = None,
) -> subprocess.CompletedProcess:
    """Run tests/pipelines/<script> as a user would, and return the finished process."""
    return subprocess.run(
        [sys.executable, script, *args],
        cwd=PIPELINES_DIR,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_CONFIG_ROOT, ignore_errors=True)
