"""The `docker_rs` orchestrator: turns a ZenML snapshot into a run spec for the Rust core."""

import os
import re
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple, Type, cast

from zenml.config.global_config import GlobalConfiguration
from zenml.constants import ENV_ZENML_LOCAL_STORES_PATH
from zenml.entrypoints import StepEntrypointConfiguration
from zenml.enums import ExecutionMode, StackComponentType
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

if TYPE_CHECKING:
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

# Where this package is mounted in step containers whose image lacks it.
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
        """Start the run in the Rust core and return a waiter that follows it.

        The spec is checked, Docker is reached and every image is made present
        before this returns, so those errors surface before any step starts.

        Args:
            snapshot: The pipeline snapshot to run.
            stack: The stack the pipeline runs on.
            base_environment: Environment shared by all steps.
            step_environments: Environment of each step, by step name.
            placeholder_run: The run that ZenML created for this submission.

        Returns:
            A submission result whose `wait_for_completion` follows the run.

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
        spec = self._build_run_spec(
            snapshot=snapshot,
            step_environments=step_environments,
            run_id=run_id,
            pipeline_run_id=str(placeholder_run.id) if placeholder_run else None,
        )

        from zenml_docker_rs.monitor import RunMonitor

        monitor = RunMonitor.start(
            spec,
            pipeline_run_id=placeholder_run.id if placeholder_run else None,
        )
        return SubmissionResult(
            wait_for_completion=monitor.wait,
            metadata={"orchestrator_run_id": run_id},
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
            steps.append(
                {
                    "name": step_name,
                    "upstream": list(step.spec.upstream_steps),
                    "container": container,
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
        }


def _check_docker_reachable(stack: "Stack") -> Tuple[bool, str]:
    """Check, before ZenML builds images, that the Docker daemon answers.

    Args:
        stack: The stack being validated.

    Returns:
        `(True, "")` when the daemon answers, else `(False, what to do)`.
    """
    from zenml_docker_rs import _core

    try:
        _core.check_docker()
    except _core.DockerUnavailableError as error:
        return False, str(error)
    return True, ""


def container_name(pipeline: str, step: str, run_id: str) -> str:
    """Return a container name that is valid for Docker and unique per run.

    Args:
        pipeline: Pipeline name.
        step: Step name.
        run_id: Orchestrator run id.

    Returns:
        `<pipeline>-<step>-<12 hex digits of the run id>`, with characters Docker
        rejects replaced by `_` and the names shortened to keep it readable.
    """
    suffix = run_id.replace("-", "")[:12]
    base = re.sub(r"[^a-zA-Z0-9_.-]", "_", f"{pipeline[:60]}-{step[:60]}")
    if not base[0].isalnum():
        base = "z" + base
    return f"{base}-{suffix}"


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
