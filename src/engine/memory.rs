//! An in-memory engine for scheduler tests: containers are timers with scripted results.

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
    pub duration: Duration,
    pub exit_code: i64,
    pub oom_killed: bool,
    /// Fail to start instead of running.
    pub start_error: bool,
    pub output: Vec<String>,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            duration: Duration::from_secs(1),
            exit_code: 0,
            oom_killed: false,
            start_error: false,
            output: Vec::new(),
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

/// Runs fake containers by name; unscripted containers succeed after one second.
///
/// Like the Docker engine, it removes an exited container in the background: the
/// removal takes [`MemoryEngine::REMOVAL_TIME`] and ends after `run_container` returned.
#[derive(Debug, Default)]
pub struct MemoryEngine {
    scripts: HashMap<String, Script>,
    records: Arc<Mutex<Vec<Record>>>,
    running: AtomicUsize,
    max_running: AtomicUsize,
    removals: Mutex<JoinSet<()>>,
}

impl MemoryEngine {
    pub const REMOVAL_TIME: Duration = Duration::from_millis(500);

    pub fn with_scripts(scripts: impl IntoIterator<Item = (&'static str, Script)>) -> Self {
        MemoryEngine {
            scripts: scripts
                .into_iter()
                .map(|(name, script)| (name.to_string(), script))
                .collect(),
            ..Default::default()
        }
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
        let script = self.scripts.get(&spec.name).cloned().unwrap_or_default();
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
        let stopped = tokio::select! {
            _ = tokio::time::sleep(script.duration) => false,
            _ = stop.fired() => true,
        };
        output.finish().await;

        self.running.fetch_sub(1, Ordering::SeqCst);
        let record = if stopped {
            Record::Stopped
        } else {
            Record::Exited
        };
        self.record(record(spec.name.clone()));

        let records = Arc::clone(&self.records);
        let name = spec.name.clone();
        self.removals.lock().unwrap().spawn(async move {
            tokio::time::sleep(Self::REMOVAL_TIME).await;
            records.lock().unwrap().push(Record::Removed(name));
        });
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
