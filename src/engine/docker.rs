//! The Docker engine: runs step containers through the Docker Engine API (bollard).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, ContainerStatsResponse, DeviceMapping as DockerDeviceMapping,
    DeviceRequest, HostConfig, HostConfigLogConfig, Mount, MountType,
};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, CreateImageOptionsBuilder,
    RemoveContainerOptionsBuilder, StatsOptionsBuilder, StopContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use super::{ContainerEngine, ContainerExit, StopSignal};
use crate::error::Error;
use crate::events::OutputStream;
use crate::logs::OutputSink;
use crate::spec::{ContainerSpec, MountKind};

/// Output of an attached container, as bollard delivers it.
pub type AttachedOutput =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<LogOutput, DockerError>> + Send>>;

/// Time allowed to connect to the daemon and get its response before giving up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the attached output stream may stay open after the container exited. Docker
/// closes it once the container's stdout and stderr are drained. This limit only guards
/// against a daemon that keeps the stream open.
const OUTPUT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Time after a container's start before its memory sampling begins. Docker 20.10
/// sends the first stats sample about a second after the stream opens, so a
/// container that exits sooner than that gets no sample either way. With cgroup v1 each
/// sample carries the kernel's peak since the container started, so the delay loses
/// nothing for a container that lives long enough to be sampled. With cgroup v2 the
/// peak is the highest of the samples taken.
const MEMORY_SAMPLING_DELAY: Duration = Duration::from_millis(500);

/// The daemon address used when neither the caller nor `DOCKER_HOST` names one; the
/// same default as the `docker` CLI on Linux.
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// Environment variables an image sets, by name.
type ImageEnv = HashMap<String, String>;

/// A connection to one Docker daemon.
///
/// Clones share the connection, the set of container removals in progress and the
/// image environments read so far.
#[derive(Debug, Clone)]
pub struct DockerEngine {
    docker: Docker,
    host: String,
    /// Removals of exited containers that `run_container` started in the background.
    removals: Arc<Mutex<JoinSet<()>>>,
    /// Environment of each image inspected so far, by image reference. An engine lives
    /// for one run, whose images do not change, so one inspect per image is enough.
    image_envs: Arc<Mutex<HashMap<String, Arc<ImageEnv>>>>,
}

impl DockerEngine {
    /// Connects to the daemon at `host`, else at `DOCKER_HOST`, else at the default
    /// socket, agrees on an API version with it and checks that it responds.
    ///
    /// # Errors
    ///
    /// [`Error::DockerUnavailable`] within [`CONNECT_TIMEOUT`] when the daemon cannot be
    /// reached, naming the address that was tried.
    pub async fn connect(host: Option<&str>) -> Result<Self, Error> {
        let host = match host {
            Some(host) => host.to_string(),
            None => std::env::var("DOCKER_HOST").unwrap_or_else(|_| DEFAULT_HOST.to_string()),
        };
        let unavailable = |reason: String| Error::DockerUnavailable {
            host: host.clone(),
            reason,
        };

        let docker = Docker::connect_with_host(&host).map_err(|e| unavailable(e.to_string()))?;
        let docker = tokio::time::timeout(CONNECT_TIMEOUT, docker.negotiate_version())
            .await
            .map_err(|_| unavailable(format!("no answer within {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| unavailable(e.to_string()))?;
        tokio::time::timeout(CONNECT_TIMEOUT, docker.ping())
            .await
            .map_err(|_| unavailable(format!("no answer within {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| unavailable(e.to_string()))?;

        Ok(DockerEngine {
            docker,
            host,
            removals: Arc::default(),
            image_envs: Arc::default(),
        })
    }

    /// Checks that the network a container should join exists. Docker's built-in
    /// network modes (`bridge`, `host`, `none`, `default`, `container:<name>`) always
    /// do.
    pub async fn ensure_network(&self, network: &str) -> Result<(), Error> {
        let built_in = ["bridge", "host", "none", "default"];
        if built_in.contains(&network) || network.starts_with("container:") {
            return Ok(());
        }
        match self.docker.inspect_network(network, None).await {
            Ok(_) => Ok(()),
            Err(e) => Err(Error::NetworkUnavailable {
                network: network.to_string(),
                reason: e.to_string(),
            }),
        }
    }

    /// Returns the address of the daemon this engine connects to.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Returns the underlying bollard client, for callers that need more of the API.
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    /// Creates the container described by `spec` without starting it and returns its id.
    pub async fn create(&self, spec: &ContainerSpec) -> Result<String, Error> {
        let env = self.container_env(spec).await?;
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            entrypoint: non_empty(&spec.entrypoint),
            cmd: non_empty(&spec.command),
            env: Some(env),
            labels: Some(spec.labels.clone().into_iter().collect()),
            user: spec.user.clone(),
            working_dir: spec.working_dir.clone(),
            stop_timeout: Some(i64::from(spec.stop_grace_period_secs)),
            host_config: Some(host_config(spec)),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::new()
            .name(&spec.name)
            .build();

        let response = self
            .docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| Error::container("create", &spec.name, e))?;
        Ok(response.id)
    }

    /// Starts a created container.
    pub async fn start(&self, id: &str) -> Result<(), Error> {
        self.docker
            .start_container(id, None)
            .await
            .map_err(|e| Error::container("start", id, e))
    }

    /// Stops a container: SIGTERM, then SIGKILL after `grace_period_secs`. Returns once it
    /// has stopped. A container that already stopped or no longer exists is not an error.
    pub async fn stop(&self, id: &str, grace_period_secs: u32) -> Result<(), Error> {
        let grace = i32::try_from(grace_period_secs).unwrap_or(i32::MAX);
        let options = StopContainerOptionsBuilder::new().t(grace).build();
        match self.docker.stop_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if is_status(&e, 304) || is_status(&e, 404) => Ok(()),
            Err(e) => Err(Error::container("stop", id, e)),
        }
    }

    /// Removes a container and its anonymous volumes, killing it if it still runs.
    /// A container that is already gone, or already being removed, is not an error.
    pub async fn remove(&self, id: &str) -> Result<(), Error> {
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if is_status(&e, 404) || is_status(&e, 409) => Ok(()),
            Err(e) => Err(Error::container("remove", id, e)),
        }
    }

    /// Waits until the container is not running and returns its exit code.
    pub async fn wait(&self, id: &str) -> Result<i64, Error> {
        let mut stream = self.docker.wait_container(id, None);
        match stream.next().await {
            Some(Ok(response)) => Ok(response.status_code),
            // bollard reports a non-zero exit as an error; for us it is a result.
            Some(Err(DockerError::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(Error::container("wait for", id, e)),
            None => Err(Error::container(
                "wait for",
                id,
                "the daemon closed the wait request without an exit status",
            )),
        }
    }

    /// Returns the exit details of a container that has exited.
    pub async fn exit_state(&self, id: &str) -> Result<ExitState, Error> {
        let inspect = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(|e| Error::container("inspect", id, e))?;
        let state = inspect.state.unwrap_or_default();
        Ok(ExitState {
            exit_code: state.exit_code.unwrap_or(-1),
            oom_killed: state.oom_killed.unwrap_or(false),
            started_at: state.started_at,
            finished_at: state.finished_at,
        })
    }

    /// Starts sampling the container's memory use in the background; the returned
    /// sampler reports the highest use seen.
    ///
    /// The stats stream opens only after [`MEMORY_SAMPLING_DELAY`], so a container that
    /// exits before then costs the daemon no stats collection.
    fn sample_memory(&self, id: &str) -> MemorySampler {
        let peak = Arc::new(AtomicU64::new(0));
        let (exited, exit_signal) = oneshot::channel::<()>();
        let docker = self.docker.clone();
        let id = id.to_string();
        let seen = Arc::clone(&peak);
        let task = tokio::spawn(async move {
            tokio::pin!(exit_signal);
            tokio::select! {
                _ = tokio::time::sleep(MEMORY_SAMPLING_DELAY) => {}
                _ = &mut exit_signal => return,
            }
            let options = StatsOptionsBuilder::new().stream(true).build();
            let mut stats = docker.stats(&id, Some(options));
            loop {
                tokio::select! {
                    // When a sample and the exit are ready together, take the sample first.
                    biased;
                    sample = stats.next() => match sample {
                        Some(Ok(sample)) => record_memory(&seen, sample),
                        _ => return,
                    },
                    _ = &mut exit_signal => break,
                }
            }
            // Docker 20.10 keeps the stream open after the exit and sends an empty
            // sample once a second until the container is removed. So take only the
            // samples that already arrived, then drop the stream.
            while let Some(Some(Ok(sample))) = stats.next().now_or_never() {
                record_memory(&seen, sample);
            }
        });
        MemorySampler { peak, exited, task }
    }

    /// Attaches to the output streams of a created container, before it starts.
    ///
    /// Attaching before the start means the stream carries every byte the container
    /// writes, straight from its stdout and stderr, and ends only after the last one.
    /// Reading the log (`docker logs -f`) instead loses output: Docker 20.10 can close
    /// a followed log before its last entries (reported upstream as
    /// <https://github.com/moby/moby/issues/43860>), and a log that rotates (`max-size`)
    /// skips whatever rotated out. A slow reader slows the container's writes instead.
    pub async fn attach(&self, id: &str) -> Result<AttachedOutput, Error> {
        let options = AttachContainerOptionsBuilder::new()
            .stream(true)
            .stdout(true)
            .stderr(true)
            .logs(false)
            .build();
        let attached = self
            .docker
            .attach_container(id, Some(options))
            .await
            .map_err(|e| Error::container("attach to", id, e))?;
        Ok(attached.output)
    }

    /// Streams `attached` output into `output` and waits for the container to exit,
    /// stopping it when `stop` fires. Returns the exit code and whether the container
    /// was stopped.
    pub async fn follow(
        &self,
        id: &str,
        mut attached: AttachedOutput,
        grace_period_secs: u32,
        output: &mut OutputSink,
        mut stop: StopSignal,
    ) -> Result<(i64, bool), Error> {
        let wait = self.wait(id);
        tokio::pin!(wait);

        let mut exit_code = None;
        let mut output_done = false;
        let mut stop_request = None;
        while exit_code.is_none() || !output_done {
            tokio::select! {
                chunk = attached.next(), if !output_done => match chunk {
                    Some(Ok(chunk)) => {
                        if let Some((stream, message)) = output_of(&chunk) {
                            output.write(stream, message).await;
                        }
                    }
                    Some(Err(e)) => {
                        let notice = format!("[zenml-docker-rs] reading output failed: {e}\n");
                        output.write(OutputStream::Stderr, notice.as_bytes()).await;
                        output_done = true;
                    }
                    None => output_done = true,
                },
                code = &mut wait, if exit_code.is_none() => exit_code = Some(code?),
                _ = stop.fired(), if stop_request.is_none() && exit_code.is_none() => {
                    let engine = self.clone();
                    let id = id.to_string();
                    stop_request = Some(tokio::spawn(async move {
                        engine.stop(&id, grace_period_secs).await
                    }));
                }
                _ = tokio::time::sleep(OUTPUT_DRAIN_TIMEOUT), if exit_code.is_some() => {
                    output_done = true;
                }
            }
        }
        output.finish().await;

        let stopped = stop_request.is_some();
        if let Some(request) = stop_request {
            // The container has exited, so the stop request is over or about to be.
            if let Ok(Err(e)) = request.await {
                return Err(e);
            }
        }
        Ok((exit_code.unwrap_or(-1), stopped))
    }

    /// Returns the image's own environment as a map, for values the spec appends to.
    /// Each image is inspected once, which keeps that request off every later step's
    /// path to its start.
    async fn image_env(&self, image: &str) -> Result<Arc<ImageEnv>, Error> {
        if let Some(env) = self.lock_image_envs().get(image) {
            return Ok(Arc::clone(env));
        }
        let env = Arc::new(self.inspect_image_env(image).await?);
        self.lock_image_envs()
            .insert(image.to_string(), Arc::clone(&env));
        Ok(env)
    }

    async fn inspect_image_env(&self, image: &str) -> Result<ImageEnv, Error> {
        let inspect =
            self.docker
                .inspect_image(image)
                .await
                .map_err(|e| Error::ImageUnavailable {
                    image: image.to_string(),
                    reason: e.to_string(),
                })?;
        let env = inspect.config.and_then(|c| c.env).unwrap_or_default();
        Ok(env
            .into_iter()
            .filter_map(|entry| {
                let (key, value) = entry.split_once('=')?;
                Some((key.to_string(), value.to_string()))
            })
            .collect())
    }

    /// Builds the `KEY=value` list: the spec's variables, then the appended path values.
    async fn container_env(&self, spec: &ContainerSpec) -> Result<Vec<String>, Error> {
        let mut env: HashMap<String, String> = spec.env.clone().into_iter().collect();
        if !spec.env_path_append.is_empty() {
            let image_env = self.image_env(&spec.image).await?;
            for (key, extra) in &spec.env_path_append {
                let current = env.get(key).or_else(|| image_env.get(key));
                let value = match current {
                    Some(current) if !current.is_empty() => format!("{current}:{extra}"),
                    _ => extra.clone(),
                };
                env.insert(key.clone(), value);
            }
        }
        let mut entries: Vec<String> = env.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        entries.sort();
        Ok(entries)
    }
}

impl ContainerEngine for DockerEngine {
    async fn ensure_image(&self, image: &str) -> Result<(), Error> {
        let unavailable = |reason: String| Error::ImageUnavailable {
            image: image.to_string(),
            reason,
        };
        match self.docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(unavailable(e.to_string())),
        }

        let (name, tag) = split_image_reference(image);
        let mut options = CreateImageOptionsBuilder::new().from_image(name);
        if let Some(tag) = tag {
            options = options.tag(tag);
        }
        let mut pull = self.docker.create_image(Some(options.build()), None, None);
        while let Some(progress) = pull.next().await {
            let progress = progress.map_err(|e| unavailable(e.to_string()))?;
            if let Some(detail) = progress.error_detail {
                let message = detail
                    .message
                    .unwrap_or_else(|| "unknown pull error".into());
                return Err(unavailable(message));
            }
        }
        Ok(())
    }

    async fn run_container(
        &self,
        spec: &ContainerSpec,
        output: &mut OutputSink,
        stop: StopSignal,
    ) -> Result<ContainerExit, Error> {
        let id = self.create(spec).await?;
        if stop.is_set() {
            self.remove(&id).await?;
            return Ok(stopped_before_start(id, &spec.name));
        }
        let attached = match self.attach(&id).await {
            Ok(attached) => attached,
            Err(e) => {
                let _ = self.remove(&id).await;
                return Err(e);
            }
        };
        // Docker accepts the unique name as well as the id; the name is what the
        // user recognises in an error.
        if let Err(e) = self.start(&spec.name).await {
            // A container that never started has no output to debug, so it is removed
            // even with `keep_if_failed`. The start error is what the user needs, and a
            // removal error would hide it.
            let _ = self.remove(&id).await;
            return Err(e);
        }

        let sampler = self.sample_memory(&id);
        let followed = self
            .follow(&id, attached, spec.stop_grace_period_secs, output, stop)
            .await;
        let peak_memory_bytes = sampler.finish().await;
        let (exit_code, stopped) = match followed {
            Ok(result) => result,
            Err(e) => {
                let _ = self.remove(&id).await;
                return Err(e);
            }
        };
        let state = match self.exit_state(&id).await {
            Ok(state) => state,
            Err(e) => {
                let _ = self.remove(&id).await;
                return Err(e);
            }
        };
        let mut exit = ContainerExit {
            container_id: id,
            container_name: spec.name.clone(),
            exit_code: if exit_code >= 0 {
                exit_code
            } else {
                state.exit_code
            },
            // A container we stopped may have been SIGKILLed; that is never an OOM kill.
            oom_killed: state.oom_killed && !stopped,
            stopped,
            kept: false,
            started_at: state.started_at,
            finished_at: state.finished_at,
            peak_memory_bytes,
        };

        if spec.keep_if_failed && !exit.succeeded() && !exit.stopped {
            exit.kept = true;
        } else {
            self.remove_in_background(&exit, output.for_same_step());
        }
        Ok(exit)
    }

    async fn finish_removals(&self) {
        loop {
            // Take the set out of the lock, since the guard must not be held across an
            // await.
            let mut removals = std::mem::take(&mut *self.lock_removals());
            if removals.is_empty() {
                return;
            }
            while removals.join_next().await.is_some() {}
        }
    }
}

impl DockerEngine {
    /// Removes an exited container in a task of its own, so that the step's exit is
    /// reported, and the next step launched, without waiting for the removal.
    /// [`ContainerEngine::finish_removals`] waits for it. A failed removal is sent to
    /// `notices` as a line of the step's stderr, with the command that removes the
    /// container by hand.
    fn remove_in_background(&self, exit: &ContainerExit, mut notices: OutputSink) {
        let engine = self.clone();
        let id = exit.container_id.clone();
        let name = exit.container_name.clone();
        self.lock_removals().spawn(async move {
            if let Err(e) = engine.remove(&id).await {
                let notice = format!(
                    "[zenml-docker-rs] {e}; the container was left behind, remove it with \
                     `docker rm -f {name}`\n"
                );
                notices.write(OutputStream::Stderr, notice.as_bytes()).await;
            }
        });
    }

    fn lock_image_envs(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<ImageEnv>>> {
        // Every use of the map is a single call, so a panic while the lock was held
        // cannot leave it inconsistent.
        self.image_envs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_removals(&self) -> std::sync::MutexGuard<'_, JoinSet<()>> {
        // Every use of the set is a single call, so a panic while the lock was held
        // cannot leave it inconsistent.
        self.removals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Returns the stream and bytes of a chunk of container output, or `None` for input.
/// Terminal output (a container with a TTY has no separate stderr) goes to stderr.
fn output_of(chunk: &LogOutput) -> Option<(OutputStream, &[u8])> {
    match chunk {
        LogOutput::StdOut { message } => Some((OutputStream::Stdout, message)),
        LogOutput::StdErr { message } | LogOutput::Console { message } => {
            Some((OutputStream::Stderr, message))
        }
        LogOutput::StdIn { .. } => None,
    }
}

fn stopped_before_start(container_id: String, name: &str) -> ContainerExit {
    ContainerExit {
        container_id,
        container_name: name.to_string(),
        exit_code: -1,
        stopped: true,
        ..Default::default()
    }
}

/// Exit details of a container, from `docker inspect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitState {
    pub exit_code: i64,
    pub oom_killed: bool,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

/// Background sampling of one container's memory use.
struct MemorySampler {
    peak: Arc<AtomicU64>,
    /// Tells the sampling task that the container has exited.
    exited: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl MemorySampler {
    /// Time the sampling task gets to take the samples that already arrived once the
    /// container has exited. It needs no I/O for that, so this only guards against a
    /// task that hangs.
    const END_TIMEOUT: Duration = Duration::from_millis(500);

    /// Stops sampling and returns the highest memory use seen, if any sample came.
    ///
    /// Docker 20.10 collects stats once a second, and sampling starts after
    /// [`MEMORY_SAMPLING_DELAY`], so a container that ran for less than about 1.5 s may
    /// have no sample and then reports no peak.
    async fn finish(mut self) -> Option<u64> {
        // The task may have ended already, with the stream, and dropped the receiver.
        let _ = self.exited.send(());
        if tokio::time::timeout(Self::END_TIMEOUT, &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
        let peak = self.peak.load(Ordering::Relaxed);
        (peak > 0).then_some(peak)
    }
}

/// Raises `peak` to the memory use in a stats sample.
fn record_memory(peak: &AtomicU64, sample: ContainerStatsResponse) {
    // cgroup v1 reports the peak itself (max_usage); cgroup v2 only the current use,
    // so there the peak is the highest sample.
    let used = sample
        .memory_stats
        .and_then(|memory| memory.max_usage.or(memory.usage))
        .unwrap_or(0);
    peak.fetch_max(used, Ordering::Relaxed);
}

fn host_config(spec: &ContainerSpec) -> HostConfig {
    let resources = &spec.resources;
    let mounts = spec
        .mounts
        .iter()
        .map(|m| Mount {
            typ: Some(match m.kind {
                MountKind::Bind => MountType::BIND,
                MountKind::Volume => MountType::VOLUME,
            }),
            source: Some(m.source.clone()),
            target: Some(m.target.clone()),
            read_only: Some(m.read_only),
            ..Default::default()
        })
        .collect();
    let devices = spec
        .devices
        .iter()
        .map(|d| DockerDeviceMapping {
            path_on_host: Some(d.host_path.clone()),
            path_in_container: Some(d.container_path.clone()),
            cgroup_permissions: Some(d.permissions.clone()),
        })
        .collect();
    let device_requests = resources.gpu_count.map(|count| {
        vec![DeviceRequest {
            driver: Some("nvidia".into()),
            count: Some(count),
            capabilities: Some(vec![vec!["gpu".into()]]),
            ..Default::default()
        }]
    });

    let log_config =
        (spec.log_driver.is_some() || !spec.log_options.is_empty()).then(|| HostConfigLogConfig {
            typ: spec.log_driver.clone(),
            config: Some(spec.log_options.clone().into_iter().collect()),
        });

    HostConfig {
        log_config,
        mounts: Some(mounts),
        extra_hosts: Some(spec.extra_hosts.clone()),
        network_mode: spec.network.clone(),
        shm_size: spec.shm_size_bytes,
        nano_cpus: resources.cpu_count.map(|cpus| (cpus * 1e9).round() as i64),
        memory: resources.memory_bytes,
        // Equal memory and memory+swap limits leave no swap, so the memory limit holds.
        memory_swap: resources.memory_bytes,
        devices: Some(devices),
        device_requests,
        privileged: Some(spec.privileged),
        ..Default::default()
    }
}

fn non_empty(values: &[String]) -> Option<Vec<String>> {
    (!values.is_empty()).then(|| values.to_vec())
}

/// True when Docker responded to the request with HTTP status `status`.
pub(crate) fn is_status(error: &DockerError, status: u16) -> bool {
    matches!(error, DockerError::DockerResponseServerError { status_code, .. } if *status_code == status)
}

/// Splits `name[:tag]` or `name@digest` into what the pull API takes. A reference
/// without tag or digest means `latest`, as with `docker pull`.
fn split_image_reference(image: &str) -> (&str, Option<&str>) {
    if image.contains('@') {
        return (image, None);
    }
    let last_component = image.rfind('/').map_or(0, |i| i + 1);
    match image[last_component..].rfind(':') {
        Some(colon) => {
            let at = last_component + colon;
            (&image[..at], Some(&image[at + 1..]))
        }
        None => (image, Some("latest")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_reference_splits_tag() {
        assert_eq!(
            split_image_reference("busybox:1.36"),
            ("busybox", Some("1.36"))
        );
        assert_eq!(
            split_image_reference("busybox"),
            ("busybox", Some("latest"))
        );
        assert_eq!(
            split_image_reference("localhost:5000/team/img:v2"),
            ("localhost:5000/team/img", Some("v2"))
        );
        assert_eq!(
            split_image_reference("localhost:5000/img"),
            ("localhost:5000/img", Some("latest"))
        );
        assert_eq!(
            split_image_reference("img@sha256:abc"),
            ("img@sha256:abc", None)
        );
    }

    #[test]
    fn host_config_maps_resources() {
        let spec = ContainerSpec {
            resources: crate::spec::Resources {
                cpu_count: Some(1.5),
                memory_bytes: Some(64 << 20),
                gpu_count: Some(2),
            },
            ..Default::default()
        };
        let config = host_config(&spec);
        assert_eq!(config.nano_cpus, Some(1_500_000_000));
        assert_eq!(config.memory, Some(64 << 20));
        assert_eq!(config.memory_swap, Some(64 << 20));
        let request = &config.device_requests.unwrap()[0];
        assert_eq!(request.count, Some(2));
        assert_eq!(request.driver.as_deref(), Some("nvidia"));
        assert_eq!(config.privileged, Some(false));
    }
}
