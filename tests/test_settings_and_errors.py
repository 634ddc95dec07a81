"""Configuration of the docker_rs orchestrator and the errors a user meets.

Covers the zenml CLI for the flavor and its configuration, and the validation of
DockerRsOrchestratorSettings. Pipelines check settings and resource limits as seen
from inside a step container, schedules, an unreachable Docker daemon, a step that
runs out of memory, and step output that is hard to split into lines.
"""

import os
import re
import subprocess
from pathlib import Path
from typing import Dict, List

import pytest
from conftest import run_pipeline, zenml_cli
from pydantic import ValidationError
from zenml.client import Client
from zenml.config import ResourceSettings
from zenml.enums import ExecutionStatus

from zenml_docker_rs import DockerRsOrchestratorConfig, DockerRsOrchestratorSettings

# CAP_SYS_ADMIN, which Docker leaves out of the bounding set unless the container is
# privileged (linux/capability.h).
CAP_SYS_ADMIN = 21

# Docker's default size of /dev/shm: 64 MiB.
DOCKER_DEFAULT_SHM_BYTES = 64 << 20


def combined_output(result: subprocess.CompletedProcess) -> str:
    """Return what the process printed on stdout and stderr together."""
    return result.stdout + result.stderr


def step_lines(stdout: str, step: str) -> List[str]:
    """Return the client output lines of one step, without the `[step] ` prefix."""
    prefix = f"[{step}] "
    return [line[len(prefix) :] for line in stdout.splitlines() if line.startswith(prefix)]


# --- zenml CLI -------------------------------------------------------------------


@pytest.fixture
def restore_max_parallelism(zenml_stack):
    """Put the orchestrator's max_parallelism back to its value before the test."""
    original = max_parallelism_setting()
    yield
    if max_parallelism_setting() == original:
        return
    if original is None:
        zenml_cli("orchestrator", "remove-attribute", "docker_rs", "max_parallelism")
    else:
        zenml_cli("orchestrator", "update", "docker_rs", f"--max_parallelism={original}")
    assert max_parallelism_setting() == original


def max_parallelism_setting():
    """Return the orchestrator's stored max_parallelism, None when unset."""
    configuration = Client().get_stack_component("orchestrator", "docker_rs").configuration
    return configuration.get("max_parallelism")


def test_flavor_list_shows_docker_rs(zenml_stack):
    result = zenml_cli("orchestrator", "flavor", "list")

    output = combined_output(result)
    assert re.search(r"\bdocker_rs\s+custom\b", output), output


def test_describe_shows_configuration(zenml_stack, restore_max_parallelism):
    zenml_cli("orchestrator", "update", "docker_rs", "--max_parallelism=3")

    result = zenml_cli("orchestrator", "describe", "docker_rs")

    output = combined_output(result)
    assert "of flavor 'docker_rs'" in output
    assert re.search(r"MAX_PARALLELISM\s+│\s+3\b", output), output


def test_cli_update_sets_max_parallelism(zenml_stack, restore_max_parallelism):
    zenml_cli("orchestrator", "update", "docker_rs", "--max_parallelism=2")

    assert max_parallelism_setting() == 2


@pytest.mark.parametrize("value", ["0", "abc"])
def test_cli_rejects_bad_max_parallelism(zenml_stack, restore_max_parallelism, value):
    result = zenml_cli("orchestrator", "update", "docker_rs", f"--max_parallelism={value}", check=False)

    output = combined_output(result)
    assert result.returncode != 0, output
    assert "max_parallelism" in output
    assert f"input_value='{value}'" in output
    assert max_parallelism_setting() is None


def test_cli_rejects_misspelled_key(zenml_stack, restore_max_parallelism):
    result = zenml_cli("orchestrator", "update", "docker_rs", "--max_paralelism=2", check=False)

    output = combined_output(result)
    assert result.returncode != 0, output
    assert "max_paralelism" in output
    configuration = Client().get_stack_component("orchestrator", "docker_rs").configuration
    assert "max_paralelism" not in configuration


# --- settings validation in Python --------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("shm_size", "lots", "'lots'"),
        ("shm_size", "12xb", "'12xb'"),
        ("shm_size", "0", "'0'"),
        ("shm_size", -5, "-5"),
        ("volumes", ["/host/data"], "'/host/data'"),
        ("volumes", ["/host/data:relative/target"], "'relative/target'"),
        ("volumes", ["/host/data:/data:rx"], "'rx'"),
        ("volumes", [":/data"], "':/data'"),
        ("devices", ["dev/fuse"], "'dev/fuse'"),
        ("devices", ["/dev/fuse:fuse"], "'fuse'"),
        ("devices", ["/dev/fuse:/dev/fuse:rwx"], "'rwx'"),
        ("user", "", "''"),
        ("user", "some user", "'some user'"),
        ("log_driver", "", "''"),
    ],
)
def test_settings_reject_bad_value(field, value, named):
    with pytest.raises(ValidationError) as raised:
        DockerRsOrchestratorSettings(**{field: value})

    message = str(raised.value)
    assert field in message
    assert named in message


def test_settings_accept_valid_values():
    settings = DockerRsOrchestratorSettings(
        shm_size="512m",
        volumes=["/host/data:/data:ro", "named_volume:/cache"],
        devices=["/dev/fuse", "/dev/sda:/dev/xvda:r"],
        user="1000:1000",
        max_parallelism=2,
        log_driver="local",
        log_options={"max-size": "10m"},
    )

    assert settings.shm_size == "512m"
    assert settings.volumes == ["/host/data:/data:ro", "named_volume:/cache"]
    assert settings.devices == ["/dev/fuse", "/dev/sda:/dev/xvda:r"]
    assert settings.user == "1000:1000"
    assert settings.log_driver == "local"
    assert settings.log_options == {"max-size": "10m"}


@pytest.mark.parametrize("model", [DockerRsOrchestratorSettings, DockerRsOrchestratorConfig])
def test_settings_reject_unknown_key(model):
    with pytest.raises(ValidationError) as raised:
        model(max_paralelism=2)

    assert "max_paralelism" in str(raised.value)


# --- settings and resources inside the step container -------------------------------


@pytest.fixture(scope="module")
def settings_probe(zenml_stack, tmp_path_factory) -> Dict[str, object]:
    """Run the settings probe pipeline once and return its step outputs and mount dir."""
    mount_dir = tmp_path_factory.mktemp("probe-mount")
    name = "e2e_settings_probe"

    result = run_pipeline(
        "settings_probe_pipeline.py", "--name", name, "--mount-dir", str(mount_dir)
    )
    assert result.returncode == 0, combined_output(result)

    run = Client().get_pipeline(name).last_run
    assert run.status == ExecutionStatus.COMPLETED
    return {
        "resources": run.steps["probe_resources"].output.load(),
        "settings": run.steps["probe_settings"].output.load(),
        "mount_dir": mount_dir,
    }


def test_resource_settings_reach_container(settings_probe):
    probe = settings_probe["resources"]
    requested = ResourceSettings(cpu_count=0.5, memory="256MB")

    # The kernel rounds a memory limit down to whole pages.
    page_size = os.sysconf("SC_PAGE_SIZE")
    expected_memory = int(requested.get_memory(unit="B")) // page_size * page_size
    assert int(probe["memory_limit"]) == expected_memory

    assert int(probe["cpu_quota"]) / int(probe["cpu_period"]) == requested.cpu_count


def test_settings_reach_container(settings_probe):
    probe = settings_probe["settings"]

    assert probe["env"] == "spaces, = signs and : colons survive"
    assert probe["shm_bytes"] == 128 << 20

    written = settings_probe["mount_dir"] / "written-by-step.txt"
    assert written.read_text() == f"written by uid {os.getuid()}\n"
    assert written.stat().st_uid == os.getuid()


def test_container_defaults(settings_probe):
    probe = settings_probe["resources"]

    assert probe["uid"] == os.getuid()
    assert probe["gid"] == os.getgid()
    assert probe["env"] is None
    assert probe["shm_bytes"] == DOCKER_DEFAULT_SHM_BYTES
    assert not probe["capability_bounding_set"] & (1 << CAP_SYS_ADMIN)


# --- errors ----------------------------------------------------------------------------


def test_schedule_rejected_by_zenml(zenml_stack):
    result = run_pipeline("schedule_pipeline.py", "--name", "e2e_schedule_zenml", "--mode", "zenml")

    output = combined_output(result)
    assert result.returncode != 0, output
    assert "does not support scheduling" in output


def test_schedule_rejected_by_orchestrator(zenml_stack):
    result = run_pipeline("schedule_pipeline.py", "--name", "e2e_schedule_submit", "--mode", "submit")

    output = combined_output(result)
    assert result.returncode != 0, output
    assert "The docker_rs orchestrator does not support schedules" in output
    assert "pipeline `e2e_schedule_submit` has one" in output


def test_unreachable_docker_fails_clearly(zenml_stack):
    socket_path = "/nonexistent.sock"

    result = run_pipeline(
        "output_pipeline.py", "--name", "e2e_no_docker",
        timeout=60, env={"DOCKER_HOST": f"unix://{socket_path}"},
    )

    output = combined_output(result)
    assert result.returncode != 0, output
    assert f"cannot connect to the Docker daemon at unix://{socket_path}" in output
    assert "set DOCKER_HOST to the address of a running daemon" in output


def test_out_of_memory_names_limit(zenml_stack):
    name = "e2e_out_of_memory"
    limit_bytes = int(ResourceSettings(memory="400MB").get_memory(unit="B"))

    result = run_pipeline("oom_pipeline.py", "--name", name)

    output = combined_output(result)
    assert result.returncode != 0, output
    assert "step `hog_memory` ran out of memory" in output
    assert f"({limit_bytes} bytes)" in output
    assert "[hog_memory] allocating 1000000000 bytes with a limit of 400MB" in output
    assert "the allocation succeeded" not in output
    assert Client().get_pipeline(name).last_run.status == ExecutionStatus.FAILED


def test_hard_output_reaches_client(zenml_stack):
    step = "print_edge_cases"
    expected_long_line = (
        "LONG-BEGIN " + ",".join(f"{i:06d}" for i in range(45_000)) + " LONG-END"
    )

    result = run_pipeline("output_pipeline.py", "--name", "e2e_output_edge_cases")
    assert result.returncode == 0, combined_output(result)
    lines = step_lines(result.stdout, step)

    # Each `\r`-separated progress update is a line of its own.
    for percentage in (0, 25, 50, 75, 100):
        assert f"progress {percentage}%" in lines

    # The 300 KB line arrives whole, in consecutive pieces.
    assert len(expected_long_line) > 300_000
    first = next(i for i, line in enumerate(lines) if line.startswith("LONG-BEGIN"))
    last = next(i for i, line in enumerate(lines) if line.endswith("LONG-END"))
    assert "".join(lines[first : last + 1]) == expected_long_line
    assert lines[last + 1] == "after the long line"

    # The container's last bytes, without a newline, are its last line.
    assert lines[-1] == "final words of the container, without a newline"
