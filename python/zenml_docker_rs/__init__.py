"""ZenML orchestrator flavor `docker_rs`: each step in its own Docker container, run by a Rust core.

Importing this package loads no native code and no Docker client: ZenML imports it
inside every step container, where the native module may not match the platform.
"""

from zenml_docker_rs.flavor import (
    DockerRsOrchestratorConfig,
    DockerRsOrchestratorFlavor,
    DockerRsOrchestratorSettings,
)

__version__ = "0.1.0"

__all__ = [
    "DockerRsOrchestratorConfig",
    "DockerRsOrchestratorFlavor",
    "DockerRsOrchestratorSettings",
    "__version__",
]
