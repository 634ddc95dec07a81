//! Container engines: what the scheduler needs from whatever runs the containers.
//!
//! The scheduler needs two operations from an engine: make sure an image is there, and
//! run one container to the end. [`docker::DockerEngine`] does this with the Docker
//! Engine API; [`memory::MemoryEngine`] does it without Docker for the scheduler tests
//! and benchmarks, and a Swarm engine can implement the same trait later.
//!
//! # Stopping
//!
//! Each running container has a [`StopSignal`]. Once it fires, the engine stops the
//! container: SIGTERM, then SIGKILL after the spec's grace period. It still collects the
//! remaining output and the exit status and removes the container, then reports
//! [`ContainerExit::stopped`] so that a stop is never mistaken for a failure or an
//! out-of-memory kill. As for any exited container, the removal may still be in
//! progress when the exit is reported; [`ContainerEngine::finish_removals`] waits for it.

pub mod docker;
pub mod inventory;
// Public, not `#[cfg(test)]`, because benchmarks are separate crates that see only the
// public API. The Python module never uses it.
pub mod memory;

use std::future::Future;

use tokio::sync::watch;

use crate::error::Error;
use crate::logs::OutputSink;
use crate::spec::ContainerSpec;

/// Exit of a container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerExit {
    pub container_id: String,
    /// Container name, which `docker logs` and `docker rm` accept as well.
    pub container_name: String,
    pub exit_code: i64,
    /// The kernel killed the container for exceeding its memory limit. Never true when
    /// `stopped` is.
    pub oom_killed: bool,
    /// The container ended because its [`StopSignal`] fired.
    pub stopped: bool,
    /// The container was kept after failing because the spec asked for it.
    pub kept: bool,
    /// Start and end of the container as the engine recorded them (RFC 3339).
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// Highest memory use seen while the container ran, in bytes.
    pub peak_memory_bytes: Option<u64>,
}

impl ContainerExit {
    pub fn succeeded(&self) -> bool {
        self.exit_code == 0 && !self.oom_killed && !self.stopped
    }
}

/// Something that runs containers described by a [`ContainerSpec`].
pub trait ContainerEngine: Send + Sync + 'static {
    /// Makes sure `image` is present, pulling it if it is missing.
    fn ensure_image(&self, image: &str) -> impl Future<Output = Result<(), Error>> + Send;

    /// Creates and starts the container, streams its output into `output`, waits for it
    /// to exit and removes it (unless `spec.keep_if_failed` and it failed).
    ///
    /// Returns as soon as the exit is known: the removal of an exited container may go
    /// on after this returns, until [`finish_removals`](Self::finish_removals). A
    /// container that failed to be created, attached or started is removed before this
    /// returns.
    ///
    /// Returns an error only when the container could not be created or started, or
    /// when the engine lost track of it. A non-zero exit is a normal [`ContainerExit`].
    fn run_container(
        &self,
        spec: &ContainerSpec,
        output: &mut OutputSink,
        stop: StopSignal,
    ) -> impl Future<Output = Result<ContainerExit, Error>> + Send;

    /// Waits until every removal that [`run_container`](Self::run_container) left in
    /// progress has finished. A failed removal is reported on the output of the step
    /// whose container it was.
    fn finish_removals(&self) -> impl Future<Output = ()> + Send;
}

/// Fires once to ask an engine to stop one container.
#[derive(Debug, Clone)]
pub struct StopSignal(watch::Receiver<bool>);

/// The side of a [`StopSignal`] that fires it.
#[derive(Debug)]
pub struct StopTrigger(watch::Sender<bool>);

impl StopSignal {
    /// Creates a connected trigger and signal.
    pub fn new() -> (StopTrigger, StopSignal) {
        let (sender, receiver) = watch::channel(false);
        (StopTrigger(sender), StopSignal(receiver))
    }

    /// True once the trigger fired.
    pub fn is_set(&self) -> bool {
        *self.0.borrow()
    }

    /// Waits until the trigger fires. Never returns if the trigger is dropped unfired.
    pub async fn fired(&mut self) {
        if self.0.wait_for(|stop| *stop).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl StopTrigger {
    pub fn fire(&self) {
        self.0.send_replace(true);
    }
}
