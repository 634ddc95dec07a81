//! An in-memory engine for scheduler tests and benchmarks: containers are timers with
//! scripted results.
//!
//! It runs nothing and talks to no Docker daemon, so it is no engine for real runs; the
//! Python module always uses [`super::docker::DockerEngine`]. It is public only so that
//! benchmarks, which build as separate crates, can drive the scheduler with it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinSet;

use super::{ContainerEngine, ContainerExit, StopSignal};
use crate::error::Error;
use crate::events::OutputStream;
use crate::logs::OutputSink;
use crate::spec::ContainerSpec;

/// Scripted behaviour of a fake container.
#[derive(Debug, Clone)]
pub struct Script {
    /// Time the container runs. A zero duration finishes without waiting on a timer.
    pub duration: Duration,
    pub exit_code: i64,
    pub oom_killed: bool,
    /// Fail to start instead of running.
    pub start_error: bool,
    pub output: Vec<String>,
    /// Time the removal takes after the exit. It runs in the background, like the
    /// Docker engine's, and a zero time removes the container before the exit is
    /// reported.
    pub removal_time: Duration,
}

impl Script {
    /// Removal time of the default script, long enough for tests to see a step that
    /// finished while its container is still being removed.
    pub const DEFAULT_REMOVAL_TIME: Duration = Duration::from_millis(500);
}

impl Default for Script {
    fn default() -> Self {
        Script {
            duration: Duration::from_secs(1),
            exit_code: 0,
            oom_killed: false,
            start_error: false,
            output: Vec::new(),
            removal_time: Script::DEFAULT_REMOVAL_TIME,
        }
    }
}

/// Something that happened to a fake container, by container name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Started(String),
    Exited(String),
    Stopped(String),
    Removed(String),
}

/// Runs fake containers by name; unscripted containers follow the default script, which
/// succeeds after one second unless [`MemoryEngine::with_default_script`] sets another.
///
/// Like the Docker engine, it removes an exited container in the background: the
/// removal takes the script's `removal_time` and may end after `run_container` returned.
#[derive(Debug, Default)]
pub struct MemoryEngine {
    scripts: HashMap<String, Script>,
    default_script: Script,
    records: Arc<Mutex<Vec<Record>>>,
    running: AtomicUsize,
    max_running: AtomicUsize,
    removals: Mutex<JoinSet<()>>,
}

impl MemoryEngine {
    pub fn with_scripts(scripts: impl IntoIterator<Item = (&'static str, Script)>) -> Self {
        MemoryEngine {
            scripts: scripts
                .into_iter()
                .map(|(name, script)| (name.to_string(), script))
                .collect(),
            ..Default::default()
        }
    }

    /// Sets the script of every container that has no script of its own.
    pub fn with_default_script(mut self, script: Script) -> Self {
        self.default_script = script;
        self
    }

    pub fn records(&self) -> Vec<Record> {
        self.records.lock().unwrap().clone()
    }

    /// Returns the maximum number of containers that ran at the same time.
    pub fn max_running(&self) -> usize {
        self.max_running.load(Ordering::SeqCst)
    }

    fn record(&self, record: Record) {
        self.records.lock().unwrap().push(record);
    }

    /// Records the removal of container `name` after `removal_time`, in the background
    /// unless that time is zero.
    fn remove(&self, name: &str, removal_time: Duration) {
        let removed = Record::Removed(name.to_string());
        if removal_time.is_zero() {
            self.record(removed);
            return;
        }
        let records = Arc::clone(&self.records);
        self.removals.lock().unwrap().spawn(async move {
            tokio::time::sleep(removal_time).await;
            records.lock().unwrap().push(removed);
        });
    }
}

impl ContainerEngine for MemoryEngine {
    async fn ensure_image(&self, _image: &str) -> Result<(), Error> {
        Ok(())
    }

    async fn run_container(
        &self,
        spec: &ContainerSpec,
        output: &mut OutputSink,
        mut stop: StopSignal,
    ) -> Result<ContainerExit, Error> {
        let script = self
            .scripts
            .get(&spec.name)
            .unwrap_or(&self.default_script)
            .clone();
        if script.start_error {
            return Err(Error::container(
                "start",
                &spec.name,
                "scripted start error",
            ));
        }
        self.record(Record::Started(spec.name.clone()));
        let running = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(running, Ordering::SeqCst);

        for line in &script.output {
            output
                .write(OutputStream::Stdout, format!("{line}\n").as_bytes())
                .await;
        }
        // tokio's timer has millisecond resolution, so even a zero sleep could wait for
        // the next tick. A container that takes no time skips the timer.
        let stopped = if script.duration.is_zero() {
            stop.is_set()
        } else {
            tokio::select! {
                _ = tokio::time::sleep(script.duration) => false,
                _ = stop.fired() => true,
            }
        };
        output.finish().await;

        self.running.fetch_sub(1, Ordering::SeqCst);
        let record = if stopped {
            Record::Stopped
        } else {
            Record::Exited
        };
        self.record(record(spec.name.clone()));
        self.remove(&spec.name, script.removal_time);
        Ok(ContainerExit {
            container_id: format!("id-{}", spec.name),
            container_name: spec.name.clone(),
            exit_code: if stopped { 137 } else { script.exit_code },
            oom_killed: script.oom_killed && !stopped,
            stopped,
            ..Default::default()
        })
    }

    async fn finish_removals(&self) {
        let mut removals = std::mem::take(&mut *self.removals.lock().unwrap());
        while removals.join_next().await.is_some() {}
    }
}
