//! The one error type of the core, with messages written for the person running the pipeline.

use thiserror::Error;

/// Everything that can go wrong in the core. Python receives the message text of these.
#[derive(Debug, Error)]
pub enum Error {
    /// The run spec is inconsistent: the message names the offending steps or values.
    #[error("invalid run spec: {0}")]
    InvalidSpec(String),

    /// The Docker daemon could not be reached, or its response did not come in time.
    #[error(
        "cannot connect to the Docker daemon at {host}: {reason}. \
         Start the daemon (for example `sudo systemctl start docker`, or run `dockerd`), \
         or set DOCKER_HOST to the address of a running daemon"
    )]
    DockerUnavailable { host: String, reason: String },

    /// An image is missing locally and could not be pulled.
    #[error(
        "image `{image}` is not present on the Docker host and pulling it failed: {reason}. \
         Build or load the image on that host, or check the image name and the registry login"
    )]
    ImageUnavailable { image: String, reason: String },

    /// A network that a container should join does not exist or cannot be inspected.
    #[error(
        "network `{network}` is not usable on the Docker host: {reason}. Create it with \
         `docker network create {network}`, or fix the `network` setting"
    )]
    NetworkUnavailable { network: String, reason: String },

    /// A Docker API call about one container failed.
    #[error("Docker could not {operation} container `{container}`: {reason}")]
    Container {
        operation: &'static str,
        container: String,
        reason: String,
    },

    /// A Docker API call that is not about one container failed.
    #[error("Docker could not {operation}: {reason}")]
    DockerApi {
        operation: &'static str,
        reason: String,
    },

    /// A bug in the core, not in the input. The message describes what broke.
    #[error("internal error in zenml-docker-rs: {0}")]
    Internal(String),
}

impl Error {
    /// Builds a [`Error::Container`] from a bollard error.
    pub(crate) fn container(
        operation: &'static str,
        container: &str,
        source: impl std::fmt::Display,
    ) -> Self {
        Error::Container {
            operation,
            container: container.to_string(),
            reason: source.to_string(),
        }
    }
}
