"""Typed interface of the native module `zenml_docker_rs._core` (Rust, pyo3).

This is the boundary between the Python shim and the Rust core. The core has no
ZenML concepts: it runs a DAG of containers described by a run spec.

Run spec (a plain dict; unknown keys are rejected):

    run_id: str                      unique id of the run
    execution_mode: str              "fail_fast" (default), "stop_on_failure" or
                                     "continue_on_failure"
    max_parallelism: int | None      most containers running at once; None = no limit
    steps: list of
        name: str                    unique within the run
        upstream: list[str]          steps that must succeed first
        retry: {max_retries: int, delay_secs: int, backoff: float} | None
                                     attempts after a failed one; the delay before
                                     retry n is delay_secs * backoff**(n-1), with a
                                     backoff below 1 meaning a constant delay. Attempt
                                     n > 1 runs in a container named "<name>-retry<n-1>"
        timeout_secs: int | None     an attempt running longer is stopped and counts
                                     as timed out (a failure that can be retried)
        container:
            name: str                container name, unique on the Docker host
            image: str               pulled if missing
            entrypoint: list[str]    replaces the image's entrypoint if not empty
            command: list[str]       arguments; replaces the image's command if not empty
            env: dict[str, str]
            env_path_append: dict[str, str]   appended with ":" to the value from
                                     env, else from the image (for PYTHONPATH)
            labels: dict[str, str]
            user: str | None         "uid", "uid:gid" or a name; None = image's user
            working_dir: str | None
            mounts: list of {kind: "bind" | "volume", source, target, read_only}
            extra_hosts: list[str]   "name:address"; "host-gateway" is the host
            network: str | None
            shm_size_bytes: int | None
            resources: {cpu_count: float | None, memory_bytes: int | None,
                        gpu_count: int | None}
            devices: list of {host_path, container_path, permissions}
            privileged: bool
            stop_grace_period_secs: int   SIGTERM-to-SIGKILL time on stop (default 10)
            keep_if_failed: bool     keep a failed container instead of removing it
            log_driver: str | None   Docker logging driver; None = the daemon's default
            log_options: dict[str, str]   options of the logging driver (--log-opt)

Events (dicts, in order per step; "run_finished" is always last):

    {"kind": "log", "step", "stream": "stdout" | "stderr", "text", "continued"}
        consecutive output lines of one step and stream, without their terminators,
        joined with "\n". One event contains at most 1 MiB and one line (64 KiB) of text. The core cuts
        lines over 64 KiB into pieces and joins the pieces that arrive together;
        "continued" is true when the last line of "text" goes on in the next "log"
        event of this step and stream
    {"kind": "step", "step", "state", "container_id", "exit_code", "oom_killed",
     "timed_out", "attempt", "started_at", "finished_at", "peak_memory_bytes", "message"}
        state is "running", "retrying" (an attempt failed, another follows after the
        delay), "succeeded", "failed", "stopped" or "skipped"; attempt counts from 1
        (0 for a step that never ran); times are RFC 3339 from Docker; the peak memory
        is in bytes, sampled while the container ran
    {"kind": "run_finished", "status", "steps"}
        status is "succeeded", "failed", "cancelled" (after cancel) or "stopped" (after
        drain, with no failed step). steps maps each step name to its final report,
        which has the fields of a "step" event without "kind" and "step"
"""

from typing import Any, Dict, List, Optional

__version__: str

class SpecError(ValueError):
    """The run spec is invalid; the message names the steps or values at fault."""

class DockerUnavailableError(ConnectionError):
    """The Docker daemon cannot be reached; the message names the address tried."""

class ImageUnavailableError(RuntimeError):
    """An image is missing on the Docker host and could not be pulled."""

class EngineError(RuntimeError):
    """A Docker API call failed, or the core hit an internal error."""

class NetworkUnavailableError(RuntimeError):
    """A network that a step container should join does not exist."""

def validate_spec(spec: Dict[str, Any]) -> None:
    """Check a run spec without running it.

    Raises:
        SpecError: If keys are unknown or missing, step names repeat, an upstream
            step does not exist or the steps form a cycle.
    """

def check_docker(docker_host: Optional[str] = None) -> str:
    """Check that the Docker daemon responds within 5 seconds.

    Args:
        docker_host: Daemon address; default `DOCKER_HOST`, else the local socket.

    Returns:
        The address that responded.

    Raises:
        DockerUnavailableError: If the daemon cannot be reached.
    """

def preflight(spec: Dict[str, Any], docker_host: Optional[str] = None) -> None:
    """Validate the spec, connect to Docker, make sure every image and network is present.

    Starts nothing: the checks `start_run` makes first, for a caller that starts the
    run in another process.

    Raises:
        SpecError: If the spec is invalid.
        DockerUnavailableError: If the daemon cannot be reached within 5 seconds.
        ImageUnavailableError: If an image is missing and cannot be pulled.
        NetworkUnavailableError: If a network of the spec does not exist.
    """

def find_containers(
    labels: Dict[str, str], docker_host: Optional[str] = None
) -> List[Dict[str, Any]]:
    """Return every container, running or not, that carries all of `labels`.

    Each container is a dict with id, name, image, labels, state (Docker's: created,
    running, exited, ...), exit_code and oom_killed (once exited), started_at and
    finished_at (RFC 3339), sorted by name.

    Raises:
        DockerUnavailableError: If the daemon cannot be reached.
        EngineError: If Docker rejects the query.
    """

def stop_and_remove(
    ids: List[str], grace_period_secs: int = 10, docker_host: Optional[str] = None
) -> List[str]:
    """Stop (SIGTERM, SIGKILL after the grace period) and remove containers.

    Returns:
        The ids removed; a container that is already gone counts as removed.

    Raises:
        DockerUnavailableError: If the daemon cannot be reached.
        EngineError: If Docker fails to stop or remove a container.
    """

def start_run(spec: Dict[str, Any], docker_host: Optional[str] = None) -> RunHandle:
    """Validate the spec, connect to Docker, make sure every image and network is
    present, start the run.

    Every error of these checks is raised before any container starts.

    Args:
        spec: The run spec described in this module's docstring.
        docker_host: Daemon address; default `DOCKER_HOST`, else the local socket.

    Returns:
        The handle of the running run.

    Raises:
        SpecError: If the spec is invalid.
        DockerUnavailableError: If the daemon cannot be reached within 5 seconds.
        ImageUnavailableError: If an image is missing and cannot be pulled.
        NetworkUnavailableError: If a network of the spec does not exist.
    """

class RunHandle:
    """A started run. Take its events until `next_events` returns None.

    Dropping the handle before the run ended cancels the run.
    """

    run_id: str

    def next_events(self, timeout: float) -> Optional[List[Dict[str, Any]]]:
        """Wait up to `timeout` seconds for events, with the GIL released.

        Returns:
            The events available (an empty list if none came in time), or None once
            the run has ended and every event was taken.
        """

    def cancel(self) -> None:
        """Ask the run to stop: no new step starts, running containers are stopped
        (SIGTERM, SIGKILL after their grace period) and removed. Returns at once."""

    def drain(self) -> None:
        """Ask the run to stop gracefully: no new step starts, running steps finish.
        Returns at once."""
