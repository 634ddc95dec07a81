//! Finding containers by their labels, so that any process can see and clean up a run.
//!
//! Every step container carries labels naming its orchestrator, run and step. These
//! functions rebuild what a run looks like from Docker alone, for status queries, stop
//! requests from another process and garbage collection.

use std::collections::{BTreeMap, HashMap};

use bollard::query_parameters::ListContainersOptionsBuilder;
use serde::Serialize;

use super::docker::{is_status, DockerEngine};
use crate::error::Error;

/// A container as found by its labels, with its exit details once it has exited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerRecord {
    pub id: String,
    /// Name without Docker's leading `/`.
    pub name: String,
    pub image: String,
    pub labels: BTreeMap<String, String>,
    /// Docker's state: `created`, `running`, `paused`, `restarting`, `removing`,
    /// `exited` or `dead`.
    pub state: String,
    /// Set once the container has exited.
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

impl DockerEngine {
    /// Returns every container, running or not, that carries all of `labels`, which
    /// must not be empty.
    pub async fn find_containers(
        &self,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<ContainerRecord>, Error> {
        // No label would match every container on the host, which a caller that goes
        // on to remove the result can never mean.
        if labels.is_empty() {
            return Err(Error::InvalidSpec(
                "find_containers needs at least one label to match".into(),
            ));
        }
        let filters: HashMap<String, Vec<String>> = HashMap::from([(
            "label".to_string(),
            labels
                .iter()
                .map(|(key, value)| format!("{key}={value}"))
                .collect(),
        )]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let summaries = self
            .client()
            .list_containers(Some(options))
            .await
            .map_err(|e| Error::DockerApi {
                operation: "list containers",
                reason: e.to_string(),
            })?;

        let mut records = Vec::with_capacity(summaries.len());
        for summary in summaries {
            let Some(id) = summary.id else { continue };
            let name = summary
                .names
                .and_then(|names| names.into_iter().next())
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_string();
            let state = summary.state.map(|s| s.to_string()).unwrap_or_default();
            let mut record = ContainerRecord {
                id,
                name,
                image: summary.image.unwrap_or_default(),
                labels: summary.labels.unwrap_or_default().into_iter().collect(),
                state,
                exit_code: None,
                oom_killed: false,
                started_at: None,
                finished_at: None,
            };
            self.add_exit_details(&mut record).await?;
            records.push(record);
        }
        records.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(records)
    }

    /// Stops (SIGTERM, then SIGKILL after `grace_period_secs`) and removes each
    /// container. Returns the ids of the containers that were removed; a container that
    /// is already gone counts as removed.
    pub async fn stop_and_remove(
        &self,
        ids: &[String],
        grace_period_secs: u32,
    ) -> Result<Vec<String>, Error> {
        let stops = ids.iter().map(|id| async move {
            self.stop(id, grace_period_secs).await?;
            self.remove(id).await?;
            Ok::<_, Error>(id.clone())
        });
        futures_util::future::join_all(stops)
            .await
            .into_iter()
            .collect()
    }

    /// Fills in exit code, OOM flag and times; a container that vanished meanwhile keeps
    /// what the list showed.
    async fn add_exit_details(&self, record: &mut ContainerRecord) -> Result<(), Error> {
        let inspect = match self.client().inspect_container(&record.id, None).await {
            Ok(inspect) => inspect,
            Err(e) if is_status(&e, 404) => return Ok(()),
            Err(e) => return Err(Error::container("inspect", &record.id, e)),
        };
        let state = inspect.state.unwrap_or_default();
        if record.state == "exited" || record.state == "dead" {
            record.exit_code = state.exit_code;
            record.oom_killed = state.oom_killed.unwrap_or(false);
            record.finished_at = state.finished_at;
        }
        record.started_at = state.started_at;
        Ok(())
    }
}
