"""The `docker_rs` orchestrator: turns a ZenML snapshot into a run spec for the Rust core."""

import hashlib
import os
import re
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple, Type, cast

from zenml.config.global_config import GlobalConfiguration
from zenml.constants import ENV_ZENML_LOCAL_STORES_PATH
from zenml.entrypoints import StepEntrypointConfiguration
from zenml.enums import ExecutionMode, ExecutionStatus, StackComponentType
from zenml.logger import get_logger
from zenml.orchestrators import ContainerizedOrchestrator, SubmissionResult
from zenml.stack import StackValidator

from zenml_docker_rs.flavor import (
    FLAVOR_NAME,
    DockerRsOrchestratorConfig,
    DockerRsOrchestratorSettings,
    parse_byte_size,
    parse_device,
    parse_volume,
)
from zenml_docker_rs.runs import FORCEFUL, GRACEFUL, RunRecord

if TYPE_CHECKING:
    from uuid import UUID

    from zenml.config.base_settings import BaseSettings
    from zenml.config.step_configurations import Step
    from zenml.models import PipelineRunResponse, PipelineSnapshotResponse
    from zenml.stack import Stack

logger = get_logger(__name__)

ENV_ZENML_DOCKER_RS_RUN_ID = "ZENML_DOCKER_RS_RUN_ID"

LABEL_PREFIX = "io.zenml"
LABEL_ORCHESTRATOR = f"{LABEL_PREFIX}.orchestrator"
LABEL_RUN_ID = f"{LABEL_PREFIX}.run-id"
LABEL_PIPELINE = f"{LABEL_PREFIX}.pipeline"
LABEL_STEP = f"{LABEL_PREFIX}.step"
LABEL_PIPELINE_RUN_ID = f"{LABEL_PREFIX}.pipeline-run-id"
LABEL_ORCHESTRATOR_ID = f"{LABEL_PREFIX}.orchestrator-id"

# Time allowed, beyond the grace period, for a coordinator to act on a forceful stop.
STOP_MARGIN_SECONDS = 15

# Mount point of this package in step containers whose image lacks it.
PACKAGE_MOUNT_ROOT = "/opt/zenml-docker-rs"

_EXECUTION_MODES = {
    ExecutionMode.FAIL_FAST: "fail_fast",
    ExecutionMode.STOP_ON_FAILURE: "stop_on_failure",
    ExecutionMode.CONTINUE_ON_FAILURE: "continue_on_failure",
}


class DockerRsOrchestrator(ContainerizedOrchestrator):
    """Runs every step of a pipeline in its own Docker container, in parallel.

    The Rust core starts a step as soon as its upstream steps succeeded, streams its
    output here, and stops and removes every container of the run when the run is
    interrupted.
    """

    @property
    def config(self) -> DockerRsOrchestratorConfig:
        """The orchestrator's configuration.

        Returns:
            The configuration.
        """
        return cast(DockerRsOrchestratorConfig, self._config)

    @property
    def settings_class(self) -> Optional[Type["BaseSettings"]]:
        """Settings class of the orchestrator.

        Returns:
            `DockerRsOrchestratorSettings`.
        """
        return DockerRsOrchestratorSettings

    @property
    def validator(self) -> Optional[StackValidator]:
        """Requires an image builder, which builds the step images.

        Returns:
            The stack validator.
        """
        return StackValidator(
            required_components={StackComponentType.IMAGE_BUILDER},
            custom_validation_function=_check_docker_reachable,
        )

    @property
    def supported_execution_modes(self) -> List[ExecutionMode]:
        """Execution modes this orchestrator implements.

        Returns:
            All three of ZenML's execution modes.
        """
        return list(_EXECUTION_MODES)

    def get_orchestrator_run_id(self) -> str:
        """Return the run id, inside a step container.

        Returns:
            The orchestrator run id shared by all steps of the run.

        Raises:
            RuntimeError: If called outside a step container of this orchestrator.
        """
        try:
            return os.environ[ENV_ZENML_DOCKER_RS_RUN_ID]
        except KeyError:
            raise RuntimeError(
                f"The environment variable {ENV_ZENML_DOCKER_RS_RUN_ID} is not set: "
                "the orchestrator run id is only known inside a step container "
                f"started by the {FLAVOR_NAME} orchestrator."
            ) from None

    def submit_pipeline(
        self,
        snapshot: "PipelineSnapshotResponse",
        stack: "Stack",
        base_environment: Dict[str, str],
        step_environments: Dict[str, Dict[str, str]],
        placeholder_run: Optional["PipelineRunResponse"] = None,
    ) -> Optional[SubmissionResult]:
        """Start the run in the Rust core.

        The spec is checked, Docker is reached and every image is made present
        before this returns, so those errors surface before any step starts. A
        synchronous run is followed by this process (the returned waiter); a
        detached one by a background coordinator process.

        Args:
            snapshot: The pipeline snapshot to run.
            stack: The stack the pipeline runs on.
            base_environment: Environment shared by all steps.
            step_environments: Environment of each step, by step name.
            placeholder_run: The run that ZenML created for this submission.

        Returns:
            A submission result with the orchestrator run id as metadata, and for a
            synchronous run a `wait_for_completion` that follows the run.

        Raises:
            RuntimeError: If the pipeline has a schedule, which is not supported yet.
        """
        if snapshot.schedule:
            raise RuntimeError(
                f"The {FLAVOR_NAME} orchestrator does not support schedules yet, and "
                f"pipeline `{snapshot.pipeline_configuration.name}` has one. Run the "
                "pipeline without `schedule=`, or use an orchestrator that supports "
                "schedules."
            )

        stack.check_local_paths()
        run_id = str(uuid.uuid4())
        pipeline_run_id = placeholder_run.id if placeholder_run else None
        spec = self._build_run_spec(
            snapshot=snapshot,
            step_environments=step_environments,
            run_id=run_id,
            pipeline_run_id=str(pipeline_run_id) if pipeline_run_id else None,
        )
        record = RunRecord(run_id)
        record.create(
            spec,
            pipeline_run_id=str(pipeline_run_id) if pipeline_run_id else None,
            orchestrator_id=str(self.id),
            pipeline_run_name=placeholder_run.name if placeholder_run else None,
        )
        if pipeline_run_id:
            _publish_orchestrator_run_id(pipeline_run_id, run_id)
        metadata = {"orchestrator_run_id": run_id, "run_record": str(record.path)}

        settings = cast(DockerRsOrchestratorSettings, self.get_settings(snapshot))
        if not settings.synchronous:
            from zenml_docker_rs import _core
            from zenml_docker_rs.coordinator import launch_detached

            _core.preflight(spec)
            pid = launch_detached(record)
            logger.info(
                "Run `%s` goes on in the background (coordinator pid %d). Its log: %s. "
                "Check it with `zenml pipeline runs refresh`, stop it with "
                "`zenml pipeline runs stop`.",
                run_id,
                pid,
                record.log_path,
            )
            return SubmissionResult(metadata=metadata)

        from zenml_docker_rs.monitor import RunMonitor

        monitor = RunMonitor.start(
            spec, record, pipeline_run_id=pipeline_run_id, orchestrator_id=self.id
        )
        return SubmissionResult(wait_for_completion=monitor.wait, metadata=metadata)

    def fetch_status(
        self, run: "PipelineRunResponse", include_steps: bool = False
    ) -> Tuple[Optional[ExecutionStatus], Optional[Dict[str, ExecutionStatus]]]:
        """Rebuild a run's status from its containers and its run record.

        Works from any process on the Docker host, also after the client and the
        coordinator are gone. A run whose coordinator died is reported as running while
        its containers run, then as failed.

        Args:
            run: The pipeline run.
            include_steps: Whether to return the status of each step too.

        Returns:
            The run's status (None to keep ZenML's) and, on request, step statuses.
        """
        from zenml_docker_rs import _core, status

        run_id = _orchestrator_run_id(run)
        if run_id is None:
            return None, None
        record = RunRecord(run_id)
        containers = _core.find_containers({LABEL_RUN_ID: run_id})
        run_status = status.run_status(run.status, containers, record)
        if not include_steps:
            return run_status, None

        container_statuses = status.step_statuses(containers)
        coordinator_alive = record.coordinator_alive()
        steps: Dict[str, ExecutionStatus] = {}
        for name, step_run in run.steps.items():
            step_status = status.orphaned_step_status(
                step_run.status, container_statuses.get(name), coordinator_alive
            )
            if step_status is not None:
                steps[name] = step_status
        return run_status, steps

    def _stop_run_forcefully(self, pipeline_run: "PipelineRunResponse") -> None:
        """Stop and remove every container of the run now, and stop its coordinator.

        Args:
            pipeline_run: The run, already marked as stopping by ZenML.
        """
        self._request_stop(pipeline_run, FORCEFUL)

    def _stop_run_gracefully(self, pipeline_run: "PipelineRunResponse") -> None:
        """Ask the run's coordinator to start no new step and let running steps finish.

        Args:
            pipeline_run: The run, already marked as stopping by ZenML.
        """
        self._request_stop(pipeline_run, GRACEFUL)

    def _request_stop(self, pipeline_run: "PipelineRunResponse", mode: str) -> None:
        """Pass a stop request to the run's coordinator, or act on it here without one.

        Args:
            pipeline_run: The run to stop.
            mode: `graceful` or `forceful`.

        Raises:
            RuntimeError: If the run has no orchestrator run id yet.
        """
        from zenml_docker_rs import _core, reporting, status

        run_id = _orchestrator_run_id(pipeline_run)
        if run_id is None:
            raise RuntimeError(
                f"Pipeline run {pipeline_run.id} has no {FLAVOR_NAME} run id yet, so "
                "its containers cannot be found. Try again once the run has started."
            )
        record = RunRecord(run_id)
        record.request_stop(mode)
        coordinator_alive = record.coordinator_alive()
        if coordinator_alive is not False:
            logger.info("Asked the coordinator of run `%s` for a %s stop.", run_id, mode)
            if mode == FORCEFUL:
                self._wait_for_forceful_stop(run_id, record)
            return

        # No process coordinates the run any more, so the stop happens here. A graceful
        # stop lets the orphaned steps that still run finish; `gc` removes them later.
        containers = _core.find_containers({LABEL_RUN_ID: run_id})
        targets = [
            container["id"]
            for container in containers
            if mode == FORCEFUL or not status.is_active(container)
        ]
        _core.stop_and_remove(targets, _stop_grace_period(record))
        logger.info(
            "Run `%s` has no coordinator any more: removed %d of its %d container(s).",
            run_id,
            len(targets),
            len(containers),
        )
        record.write_result("stopped")
        reporting.record_run_end(pipeline_run.id, {}, stopped_by_request=True)

    def _wait_for_forceful_stop(self, run_id: str, record: RunRecord) -> None:
        """Wait until the coordinator has removed every container of the run, and
        remove what is left after the grace period and a margin.

        Args:
            run_id: The orchestrator run id.
            record: The run's record.
        """
        from zenml_docker_rs import _core

        grace = _stop_grace_period(record)
        deadline = time.monotonic() + grace + STOP_MARGIN_SECONDS
        containers = _core.find_containers({LABEL_RUN_ID: run_id})
        while containers and time.monotonic() < deadline:
            time.sleep(0.5)
            containers = _core.find_containers({LABEL_RUN_ID: run_id})
        if containers:
            removed = _core.stop_and_remove([c["id"] for c in containers], 0)
            logger.warning(
                "The coordinator of run `%s` did not remove %d container(s) in time; "
                "removed them here.",
                run_id,
                len(removed),
            )

    def _build_run_spec(
        self,
        snapshot: "PipelineSnapshotResponse",
        step_environments: Dict[str, Dict[str, str]],
        run_id: str,
        pipeline_run_id: Optional[str],
    ) -> Dict[str, Any]:
        """Translate the snapshot into the core's run spec (see `_core.pyi`).

        Args:
            snapshot: The pipeline snapshot.
            step_environments: Environment of each step, by step name.
            run_id: The orchestrator run id.
            pipeline_run_id: ZenML's id of the pipeline run, when known.

        Returns:
            The run spec as a plain dict.
        """
        pipeline_name = snapshot.pipeline_configuration.name
        pipeline_settings = cast(DockerRsOrchestratorSettings, self.get_settings(snapshot))
        labels = {
            LABEL_ORCHESTRATOR: FLAVOR_NAME,
            LABEL_ORCHESTRATOR_ID: str(self.id),
            LABEL_RUN_ID: run_id,
            LABEL_PIPELINE: pipeline_name,
        }
        if pipeline_run_id:
            labels[LABEL_PIPELINE_RUN_ID] = pipeline_run_id

        steps = []
        for step_name, step in snapshot.step_configurations.items():
            environment = dict(step_environments[step_name])
            environment[ENV_ZENML_DOCKER_RS_RUN_ID] = run_id
            container = self._container_spec(
                step=step,
                image=self.get_image(snapshot=snapshot, step_name=step_name),
                arguments=StepEntrypointConfiguration.get_entrypoint_arguments(
                    step_name=step_name, snapshot_id=snapshot.id
                ),
                environment=environment,
                labels={**labels, LABEL_STEP: step_name},
                name=container_name(pipeline_name, step_name, run_id),
            )
            step_settings = cast(DockerRsOrchestratorSettings, self.get_settings(step))
            if step_settings.max_parallelism != pipeline_settings.max_parallelism:
                logger.warning(
                    "Step `%s` sets max_parallelism=%s, which applies to a whole run: "
                    "set it on the pipeline or the orchestrator instead. The run uses %s.",
                    step_name,
                    step_settings.max_parallelism,
                    pipeline_settings.max_parallelism or "no limit",
                )
            steps.append(
                {
                    "name": step_name,
                    "upstream": list(step.spec.upstream_steps),
                    "container": container,
                    "retry": retry_spec(step),
                    "timeout_secs": step_settings.timeout,
                }
            )

        return {
            "run_id": run_id,
            "steps": steps,
            "execution_mode": _EXECUTION_MODES[snapshot.pipeline_configuration.execution_mode],
            "max_parallelism": pipeline_settings.max_parallelism,
        }

    def _container_spec(
        self,
        step: "Step",
        image: str,
        arguments: List[str],
        environment: Dict[str, str],
        labels: Dict[str, str],
        name: str,
    ) -> Dict[str, Any]:
        """Build the container part of one step's spec.

        Args:
            step: The ZenML step.
            image: Image ZenML built for the step.
            arguments: Arguments of ZenML's step entrypoint.
            environment: ZenML's environment for the step.
            labels: Labels identifying the container.
            name: Container name, unique per run.

        Returns:
            The container spec as a plain dict.
        """
        settings = cast(DockerRsOrchestratorSettings, self.get_settings(step))
        local_stores_path = GlobalConfiguration().local_stores_path

        # ZenML's variables win over the user's extra environment on a name clash.
        env = {**settings.environment, **environment}
        env[ENV_ZENML_LOCAL_STORES_PATH] = local_stores_path

        mounts = [
            {"kind": "bind", "source": local_stores_path, "target": local_stores_path},
            package_mount(),
        ]
        mounts.extend(parse_volume(volume) for volume in settings.volumes)

        return {
            "name": name,
            "image": image,
            "entrypoint": StepEntrypointConfiguration.get_entrypoint_command(),
            "command": arguments,
            "env": env,
            "env_path_append": {"PYTHONPATH": PACKAGE_MOUNT_ROOT},
            "labels": labels,
            "user": settings.user or default_user(),
            "mounts": mounts,
            "extra_hosts": ["host.docker.internal:host-gateway"],
            "network": settings.network,
            "shm_size_bytes": parse_byte_size(settings.shm_size) if settings.shm_size else None,
            "resources": resources_spec(step),
            "devices": [parse_device(device) for device in settings.devices],
            "privileged": settings.privileged,
            "stop_grace_period_secs": settings.stop_grace_period,
            "keep_if_failed": settings.keep_failed_containers,
            "log_driver": settings.log_driver,
            "log_options": dict(settings.log_options),
        }


def _orchestrator_run_id(run: "PipelineRunResponse") -> Optional[str]:
    """Return the orchestrator run id of a ZenML pipeline run, if it has one yet.

    Args:
        run: The pipeline run.

    Returns:
        The id this orchestrator gave the run, from ZenML or the run metadata.
    """
    if run.orchestrator_run_id:
        return run.orchestrator_run_id
    value = run.run_metadata.get("orchestrator_run_id")
    return str(value) if value else None


def _publish_orchestrator_run_id(pipeline_run_id: "UUID", run_id: str) -> None:
    """Record the orchestrator run id in ZenML at submission, so that status and stop
    work before the first step starts.

    Args:
        pipeline_run_id: The pipeline run.
        run_id: The orchestrator run id.
    """
    from zenml.client import Client
    from zenml.models import PipelineRunUpdate

    try:
        Client().zen_store.update_run(
            run_id=pipeline_run_id,
            run_update=PipelineRunUpdate(orchestrator_run_id=run_id),
        )
    except Exception as error:  # noqa: BLE001 - the steps record it again when they start
        logger.warning(
            "Could not record orchestrator run id %s for pipeline run %s: %s",
            run_id,
            pipeline_run_id,
            error,
        )


def _stop_grace_period(record: RunRecord) -> int:
    """Return the longest stop grace period of the run's steps, in seconds.

    Args:
        record: The run's record.

    Returns:
        The grace period from the run spec, or Docker's default of 10 s without one.
    """
    try:
        steps = record.spec()["steps"]
    except FileNotFoundError:
        return 10
    return max(int(step["container"].get("stop_grace_period_secs", 10)) for step in steps)


def _check_docker_reachable(stack: "Stack") -> Tuple[bool, str]:
    """Check, before ZenML builds images, that the Docker daemon responds.

    Args:
        stack: The stack being validated.

    Returns:
        `(True, "")` when the daemon responds, else `(False, what to do)`.
    """
    from zenml_docker_rs import _core

    try:
        _core.check_docker()
    except _core.DockerUnavailableError as error:
        return False, str(error)
    return True, ""


def container_name(pipeline: str, step: str, run_id: str) -> str:
    """Return a container name that is valid for Docker and unique per run and step.

    Args:
        pipeline: Pipeline name.
        step: Step name.
        run_id: Orchestrator run id.

    Returns:
        `<pipeline>-<step>-<12 hex digits of the run id>`. Characters Docker rejects
        become `_` and long names are shortened. A step name changed that way gets 8
        hex digits of its hash, so two steps never share a container name.
    """
    suffix = run_id.replace("-", "")[:12]
    readable_step = _docker_name_part(step)
    if readable_step != step:
        digest = hashlib.sha256(step.encode()).hexdigest()[:8]
        readable_step = f"{readable_step}_{digest}"
    base = f"{_docker_name_part(pipeline)}-{readable_step}"
    if not base[0].isalnum():
        base = "z" + base
    return f"{base}-{suffix}"


def _docker_name_part(name: str) -> str:
    """Return `name` with characters Docker rejects replaced, shortened to 60."""
    return re.sub(r"[^a-zA-Z0-9_.-]", "_", name[:60])


def default_user() -> Optional[str]:
    """Return `uid:gid` of this process, or None where there are no such ids.

    Returns:
        The user for step containers when the settings name none.
    """
    if sys.platform == "win32":
        return None
    return f"{os.getuid()}:{os.getgid()}"


def package_mount() -> Dict[str, Any]:
    """Return a read-only mount of this package into step containers.

    ZenML instantiates the orchestrator inside every step container, so the package
    must be importable there even when the step image lacks it. The spec appends
    `PACKAGE_MOUNT_ROOT` to `PYTHONPATH`, so a copy installed in the image wins.

    Returns:
        The mount, as a plain dict.
    """
    package_dir = Path(__file__).resolve().parent
    return {
        "kind": "bind",
        "source": str(package_dir),
        "target": f"{PACKAGE_MOUNT_ROOT}/{package_dir.name}",
        "read_only": True,
    }


def retry_spec(step: "Step") -> Optional[Dict[str, Any]]:
    """Translate the step's ZenML retry configuration into the core's retry policy.

    Args:
        step: The ZenML step.

    Returns:
        The retry policy as a plain dict, or None when the step is not retried.
    """
    retry = step.config.retry
    if retry is None or retry.max_retries <= 0:
        return None
    return {
        "max_retries": retry.max_retries,
        "delay_secs": retry.delay,
        "backoff": float(retry.backoff),
    }


def resources_spec(step: "Step") -> Dict[str, Any]:
    """Translate the step's `ResourceSettings` into container limits.

    Args:
        step: The ZenML step.

    Returns:
        CPU, memory and GPU limits as a plain dict; unset values are None.
    """
    resources = step.config.resource_settings
    memory = resources.get_memory(unit="B") if resources.memory else None
    return {
        "cpu_count": resources.cpu_count,
        "memory_bytes": int(memory) if memory else None,
        "gpu_count": resources.gpu_count or None,
    }
