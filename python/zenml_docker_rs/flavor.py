"""Flavor, config and settings of the `docker_rs` orchestrator.

This module is imported when ZenML loads the flavor, including inside every step
container, so it imports nothing heavy: the implementation class is imported lazily.
"""

import re
from typing import TYPE_CHECKING, Dict, List, Optional, Type, Union

from pydantic import ConfigDict, Field, NonNegativeInt, PositiveInt, field_validator
from zenml.config.base_settings import BaseSettings
from zenml.orchestrators import BaseOrchestratorConfig, BaseOrchestratorFlavor

if TYPE_CHECKING:
    from zenml_docker_rs.orchestrator import DockerRsOrchestrator

FLAVOR_NAME = "docker_rs"

# Upper bound of settings in seconds (one year): far beyond any real step, and well
# inside the integer types of the core and of Docker's API.
MAX_SECONDS = 365 * 24 * 3600

# Largest byte size Docker's API takes (a signed 64-bit integer).
MAX_BYTES = (1 << 63) - 1

# Docker's size suffixes (as in `docker run --shm-size`) are binary: 1k = 1024 bytes.
_BYTE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1 << 10,
    "kb": 1 << 10,
    "kib": 1 << 10,
    "m": 1 << 20,
    "mb": 1 << 20,
    "mib": 1 << 20,
    "g": 1 << 30,
    "gb": 1 << 30,
    "gib": 1 << 30,
    "t": 1 << 40,
    "tb": 1 << 40,
    "tib": 1 << 40,
}
_BYTE_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_DEVICE_PERMISSIONS = re.compile(r"^[rwm]{1,3}$")


def parse_byte_size(value: Union[int, str]) -> int:
    """Parse a size such as `512m`, `2GB` or `1048576` into bytes.

    Args:
        value: A number of bytes, or a number with a Docker-style binary unit.

    Returns:
        The size in bytes.

    Raises:
        ValueError: If the value is not a size or not positive.
    """
    if isinstance(value, int):
        size = value
    else:
        match = _BYTE_SIZE.match(value)
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _BYTE_UNITS:
            raise ValueError(
                f"invalid size {value!r}: use a number of bytes or a number "
                "with a unit such as 512m, 2g or 1GB (units are binary, as in Docker)"
            )
        size = int(float(match.group(1)) * _BYTE_UNITS[unit])
    if size <= 0:
        raise ValueError(f"invalid size {value!r}: it must be positive")
    if size > MAX_BYTES:
        raise ValueError(f"invalid size {value!r}: it is larger than Docker accepts")
    return size


def parse_volume(spec: str) -> Dict[str, Union[str, bool]]:
    """Parse `source:target[:ro|rw]` into a mount.

    A source that is an absolute path is a bind mount of that host path; any other
    source is the name of a Docker volume.

    Args:
        spec: The volume in `docker run -v` syntax.

    Returns:
        A dict with `kind`, `source`, `target` and `read_only`.

    Raises:
        ValueError: If the volume is malformed.
    """
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise ValueError(
            f"invalid volume {spec!r}: use SOURCE:TARGET or SOURCE:TARGET:ro, where "
            "SOURCE is an absolute host path or a Docker volume name"
        )
    source, target = parts[0], parts[1]
    if not source.startswith("/") and ("/" in source or source.startswith(".")):
        raise ValueError(
            f"invalid volume {spec!r}: the source {source!r} is a relative path; use an "
            "absolute host path, or a Docker volume name without '/'"
        )
    mode = parts[2] if len(parts) == 3 else "rw"
    if mode not in ("ro", "rw"):
        raise ValueError(f"invalid volume {spec!r}: the mode must be 'ro' or 'rw', not {mode!r}")
    if not target.startswith("/"):
        raise ValueError(f"invalid volume {spec!r}: the target {target!r} must be an absolute path")
    if target.rstrip("/") == "":
        raise ValueError(f"invalid volume {spec!r}: a volume cannot replace the container's root '/'")
    kind = "bind" if source.startswith("/") else "volume"
    return {"kind": kind, "source": source, "target": target, "read_only": mode == "ro"}


def parse_device(spec: str) -> Dict[str, str]:
    """Parse `host_path[:container_path[:permissions]]` into a device mapping.

    Args:
        spec: The device in `docker run --device` syntax.

    Returns:
        A dict with `host_path`, `container_path` and `permissions`.

    Raises:
        ValueError: If the device is malformed.
    """
    parts = spec.split(":")
    if not 1 <= len(parts) <= 3 or not parts[0].startswith("/"):
        raise ValueError(
            f"invalid device {spec!r}: use HOST_PATH[:CONTAINER_PATH[:PERMISSIONS]] "
            "with absolute paths, for example /dev/fuse or /dev/sda:/dev/xvda:r"
        )
    host_path = parts[0]
    container_path = parts[1] if len(parts) > 1 and parts[1] else host_path
    permissions = parts[2] if len(parts) > 2 else "rwm"
    if not container_path.startswith("/"):
        raise ValueError(f"invalid device {spec!r}: {container_path!r} must be an absolute path")
    if not _DEVICE_PERMISSIONS.match(permissions):
        raise ValueError(
            f"invalid device {spec!r}: permissions {permissions!r} must be made of r, w and m"
        )
    return {
        "host_path": host_path,
        "container_path": container_path,
        "permissions": permissions,
    }


class DockerRsOrchestratorSettings(BaseSettings):
    """Settings of the `docker_rs` orchestrator, per pipeline or per step.

    Unknown keys are rejected, so a misspelled setting fails instead of being ignored.
    """

    model_config = ConfigDict(extra="forbid")

    max_parallelism: Optional[PositiveInt] = Field(
        default=None,
        description="Maximum number of step containers running at the same time. "
        "Unset means no limit: every step whose upstream steps succeeded starts.",
    )
    user: Optional[str] = Field(
        default=None,
        description="User the step containers run as: `uid`, `uid:gid` or a user name "
        "known to the image. Unset means the uid:gid of the process that runs the "
        "pipeline, so files written to the mounted local stores stay yours.",
    )
    shm_size: Optional[Union[int, str]] = Field(
        default=None,
        description="Size of /dev/shm in the step containers, in bytes or with a "
        "binary unit such as 512m or 2g. Unset means Docker's default (64m). "
        "PyTorch data loaders often need more.",
    )
    network: Optional[str] = Field(
        default=None,
        description="Docker network the step containers join (a network name, or "
        "`host`, `bridge`, `none`). Unset means Docker's default bridge network.",
    )
    volumes: List[str] = Field(
        default_factory=list,
        description="Extra mounts as SOURCE:TARGET[:ro|rw], as in `docker run -v`. "
        "SOURCE is an absolute host path (bind mount) or a Docker volume name.",
    )
    environment: Dict[str, str] = Field(
        default_factory=dict,
        description="Extra environment variables for the step containers. ZenML's own "
        "step variables win over these on a name clash.",
    )
    devices: List[str] = Field(
        default_factory=list,
        description="Host devices for the step containers as "
        "HOST_PATH[:CONTAINER_PATH[:PERMISSIONS]], as in `docker run --device`.",
    )
    privileged: bool = Field(
        default=False,
        description="Run the step containers in privileged mode, with all host devices "
        "and capabilities. Off unless set; turn it on only for steps that need it.",
    )
    stop_grace_period: NonNegativeInt = Field(
        default=10,
        le=MAX_SECONDS,
        description="Seconds a step container gets to exit after SIGTERM when the run "
        "is cancelled or fails fast, before it is killed with SIGKILL.",
    )
    keep_failed_containers: bool = Field(
        default=False,
        description="Keep the containers of failed steps, with their logs, for "
        "debugging (`docker logs`, `docker inspect`). Remove them yourself afterwards, "
        "or with `python -m zenml_docker_rs gc`. Successful and stopped containers are "
        "always removed.",
    )
    log_driver: Optional[str] = Field(
        default=None,
        min_length=1,
        description="Docker logging driver of the step containers, as in `docker run "
        "--log-driver` (for example `none` or `local`). Unset keeps the daemon's default. "
        "The orchestrator reads the output through the Docker API either way, so the "
        "driver decides only what `docker logs` and log shippers see; `none` saves the "
        "daemon from writing a second copy of every line, which limits the output rate "
        "of chatty steps, but leaves `docker logs` empty, also for kept failed "
        "containers.",
    )
    log_options: Dict[str, str] = Field(
        default_factory=dict,
        description="Options of the logging driver, as in `docker run --log-opt` (for "
        "example {\"max-size\": \"10m\"}). Without log_driver they apply to the "
        "daemon's default driver.",
    )
    synchronous: bool = Field(
        default=True,
        description="Wait for the run to finish. With false, running the pipeline "
        "returns once the run is submitted, and a coordinator process in the "
        "background runs it to the end, also after the client exits; its log is in "
        "<local stores path>/docker_rs/runs/<run id>/coordinator.log.",
    )
    timeout: Optional[PositiveInt] = Field(
        default=None,
        le=MAX_SECONDS,
        description="Seconds one attempt of a step may run. A step that runs longer "
        "is stopped (SIGTERM, SIGKILL after stop_grace_period), reported as timed "
        "out, and retried if the step's retry configuration allows. Unset means no "
        "limit.",
    )

    @field_validator("shm_size")
    @classmethod
    def _check_shm_size(cls, value: Optional[Union[int, str]]) -> Optional[Union[int, str]]:
        if value is not None:
            parse_byte_size(value)
        return value

    @field_validator("volumes")
    @classmethod
    def _check_volumes(cls, value: List[str]) -> List[str]:
        for volume in value:
            parse_volume(volume)
        return value

    @field_validator("devices")
    @classmethod
    def _check_devices(cls, value: List[str]) -> List[str]:
        for device in value:
            parse_device(device)
        return value

    @field_validator("environment")
    @classmethod
    def _check_environment(cls, value: Dict[str, str]) -> Dict[str, str]:
        for name in value:
            if not name or "=" in name or "\0" in name:
                raise ValueError(
                    f"invalid environment variable name {name!r}: a name must be "
                    "non-empty and contain no '=' or NUL character"
                )
        return value

    @field_validator("user")
    @classmethod
    def _check_user(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and (
            not value.strip()
            or any(c.isspace() for c in value)
            or value.count(":") > 1
            or any(not part for part in value.split(":"))
        ):
            raise ValueError(
                f"invalid user {value!r}: use a uid or user name, optionally followed by "
                "':' and a gid or group name, without spaces (for example 1000:1000)"
            )
        return value


class DockerRsOrchestratorConfig(BaseOrchestratorConfig, DockerRsOrchestratorSettings):
    """Configuration of a `docker_rs` orchestrator; its fields are the default settings."""

    model_config = ConfigDict(extra="forbid")

    @property
    def is_local(self) -> bool:
        """Whether the step containers run on this machine.

        Returns:
            True: the containers mount the local stores path of this machine.
        """
        return True

    @property
    def is_synchronous(self) -> bool:
        """Whether running a pipeline waits for the run to finish.

        Returns:
            The `synchronous` setting.
        """
        return self.synchronous

    @property
    def handles_step_retries(self) -> bool:
        """Whether the orchestrator retries failed steps itself.

        Returns:
            True: a failed step gets a new container for each retry, after ZenML's
            retry delay and backoff, instead of retrying inside its container.
        """
        return True

    @property
    def is_schedulable(self) -> bool:
        """Whether the orchestrator runs schedules.

        Returns:
            False: schedules are not supported yet, and ZenML rejects them up front.
        """
        return False


class DockerRsOrchestratorFlavor(BaseOrchestratorFlavor):
    """The `docker_rs` orchestrator flavor."""

    @property
    def name(self) -> str:
        """Name of the flavor.

        Returns:
            `docker_rs`.
        """
        return FLAVOR_NAME

    @property
    def docs_url(self) -> Optional[str]:
        """Documentation of the flavor.

        Returns:
            None: the documentation is the package's README.
        """
        return None

    @property
    def sdk_docs_url(self) -> Optional[str]:
        """SDK documentation of the flavor.

        Returns:
            None: the documentation is the package's README.
        """
        return None

    @property
    def logo_url(self) -> str:
        """Logo shown in the dashboard.

        Returns:
            The URL of ZenML's Docker logo.
        """
        return "https://public-flavor-logos.s3.eu-central-1.amazonaws.com/orchestrator/docker.png"

    @property
    def config_class(self) -> Type[DockerRsOrchestratorConfig]:
        """Config class of the flavor.

        Returns:
            `DockerRsOrchestratorConfig`.
        """
        return DockerRsOrchestratorConfig

    @property
    def implementation_class(self) -> Type["DockerRsOrchestrator"]:
        """Implementation class, imported only when an orchestrator is instantiated.

        Returns:
            `DockerRsOrchestrator`.
        """
        from zenml_docker_rs.orchestrator import DockerRsOrchestrator

        return DockerRsOrchestrator
