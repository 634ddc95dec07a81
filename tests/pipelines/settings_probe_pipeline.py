"""Pipeline whose steps report what their containers look like from inside.

Two independent steps run the same probe and return it as a dict artifact:

- `probe_resources`: ResourceSettings(cpu_count=0.5, memory="256MB") and no
  orchestrator settings, so it also shows the defaults.
- `probe_settings`: orchestrator settings with an environment variable, a bind mount of
  `--mount-dir` (the step writes a file there) and a 128 MiB /dev/shm.

NOTE: `privileged=True` is not probed: Docker on the test machine cannot start a
privileged container ("unable to apply caps: operation not permitted").

Usage: python settings_probe_pipeline.py --name NAME --mount-dir DIR
"""

import argparse
import os
from typing import Any, Dict, Optional

from zenml import pipeline, step
from zenml.config import ResourceSettings

from zenml_docker_rs import DockerRsOrchestratorSettings

MOUNT_TARGET = "/mnt/e2e-probe"
PROBE_ENV_NAME = "E2E_PROBE_VALUE"
PROBE_ENV_VALUE = "spaces, = signs and : colons survive"
WRITTEN_FILE = "written-by-step.txt"


def _read_first_line(path: str) -> Optional[str]:
    try:
        with open(path) as file:
            return file.readline().strip()
    except FileNotFoundError:
        return None


def _cgroup_limits() -> Dict[str, Any]:
    """Read the memory limit and CPU quota of this container from cgroup v1, else v2."""
    memory = _read_first_line("/sys/fs/cgroup/memory/memory.limit_in_bytes")
    quota = _read_first_line("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
    period = _read_first_line("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
    if memory is None:
        # cgroup v2: memory.max is a number or "max", cpu.max is "<quota|max> <period>".
        memory = _read_first_line("/sys/fs/cgroup/memory.max")
        quota, period = (_read_first_line("/sys/fs/cgroup/cpu.max") or "max 100000").split()
    return {"memory_limit": memory, "cpu_quota": quota, "cpu_period": period}


def _bounding_capabilities() -> int:
    """Return the capability bounding set of this process, which `privileged` widens."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("CapBnd:"):
                return int(line.split()[1], 16)
    raise RuntimeError("no CapBnd line in /proc/self/status")


def _probe() -> Dict[str, Any]:
    shm = os.statvfs("/dev/shm")
    return {
        "uid": os.getuid(),
        "gid": os.getgid(),
        "env": os.environ.get(PROBE_ENV_NAME),
        "shm_bytes": shm.f_blocks * shm.f_frsize,
        "capability_bounding_set": _bounding_capabilities(),
        **_cgroup_limits(),
    }


@step(settings={"resources": ResourceSettings(cpu_count=0.5, memory="256MB")})
def probe_resources() -> Dict[str, Any]:
    """Probe a container with resource limits and default orchestrator settings."""
    return _probe()


@step
def probe_settings() -> Dict[str, Any]:
    """Probe a container with orchestrator settings, and write a file into the mount."""
    probe = _probe()
    with open(os.path.join(MOUNT_TARGET, WRITTEN_FILE), "w") as file:
        file.write(f"written by uid {probe['uid']}\n")
    return probe


def build_pipeline(name: str, mount_dir: str):
    """Return the probe pipeline, with `mount_dir` mounted into `probe_settings`."""
    settings = DockerRsOrchestratorSettings(
        environment={PROBE_ENV_NAME: PROBE_ENV_VALUE},
        volumes=[f"{mount_dir}:{MOUNT_TARGET}"],
        shm_size="128m",
    )

    @pipeline(name=name, enable_cache=False)
    def settings_probe() -> None:
        probe_resources()
        probe_settings.with_options(settings={"orchestrator": settings})()

    return settings_probe


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True, help="pipeline name, unique per test")
    parser.add_argument("--mount-dir", required=True, help="host directory to bind-mount")
    args = parser.parse_args()
    build_pipeline(args.name, args.mount_dir)()
