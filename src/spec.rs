//! The run spec: the plain description of a run that crosses from Python into the core.
//!
//! A [`RunSpec`] is a DAG of steps, each of which is one container described by a
//! [`ContainerSpec`]. This module has no ZenML concepts: the Python shim translates a
//! ZenML snapshot into this structure. [`RunSpec::validate`] checks the DAG before any
//! container starts, so a bad spec never leaves half a run behind.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// What happens to the rest of the run when a step fails. These are ZenML's execution modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionMode {
    /// Stop the running steps and start no more.
    #[default]
    FailFast,
    /// Start no more steps, but let the running ones finish.
    StopOnFailure,
    /// Skip only the steps downstream of the failed one.
    ContinueOnFailure,
}

/// A whole run: its steps and the rules for scheduling them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    /// Identifier of the run, unique across runs; used in log lines and events.
    pub run_id: String,
    /// The steps, in any order; the DAG comes from their `upstream` lists.
    pub steps: Vec<StepSpec>,
    #[serde(default)]
    pub execution_mode: ExecutionMode,
    /// Maximum number of step containers running at once; `None` means no limit.
    #[serde(default)]
    pub max_parallelism: Option<usize>,
}

/// One node of the DAG.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// Step name, unique within the run.
    pub name: String,
    /// Names of the steps that must succeed before this one starts.
    #[serde(default)]
    pub upstream: Vec<String>,
    pub container: ContainerSpec,
    /// Attempts after a failed one; `None` means the step runs once.
    #[serde(default)]
    pub retry: Option<RetryPolicy>,
    /// Seconds an attempt may run before it is stopped and counted as timed out.
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

/// How often and how soon a failed step runs again, with ZenML's retry fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts after the first one.
    pub max_retries: u32,
    /// Seconds before the first retry.
    #[serde(default)]
    pub delay_secs: u64,
    /// Factor applied to the delay after each retry. Values below 1 (ZenML's default
    /// is 0, meaning unset) keep the delay constant.
    #[serde(default)]
    pub backoff: f64,
}

impl RetryPolicy {
    /// Returns the delay before retry number `retry` (1 for the first retry).
    pub fn delay_before(&self, retry: u32) -> std::time::Duration {
        const MAX_DELAY_SECS: f64 = 24.0 * 3600.0;
        let factor = if self.backoff >= 1.0 {
            self.backoff
        } else {
            1.0
        };
        let exponent = i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX);
        let seconds = self.delay_secs as f64 * factor.powi(exponent);
        std::time::Duration::from_secs_f64(seconds.min(MAX_DELAY_SECS))
    }
}

/// Everything needed to create, run and clean up one container.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerSpec {
    /// Container name; must be unique on the Docker host.
    pub name: String,
    pub image: String,
    /// Replaces the image's entrypoint when not empty.
    #[serde(default)]
    pub entrypoint: Vec<String>,
    /// Arguments passed to the entrypoint; replaces the image's command when not empty.
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Variables whose value is appended, after a `:`, to the value the container would
    /// otherwise get (from `env`, else from the image). Used for search paths such as
    /// `PYTHONPATH` that the image may already set.
    #[serde(default)]
    pub env_path_append: BTreeMap<String, String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `uid`, `uid:gid` or a user name; `None` keeps the image's user.
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub mounts: Vec<Mount>,
    /// `host:address` entries for `/etc/hosts`; `host-gateway` is Docker's name for the host.
    #[serde(default)]
    pub extra_hosts: Vec<String>,
    /// Network mode or name of a network to join; `None` uses Docker's default bridge.
    #[serde(default)]
    pub network: Option<String>,
    #[serde(default)]
    pub shm_size_bytes: Option<i64>,
    #[serde(default)]
    pub resources: Resources,
    #[serde(default)]
    pub devices: Vec<DeviceMapping>,
    #[serde(default)]
    pub privileged: bool,
    /// Seconds between SIGTERM and SIGKILL when the core stops the container.
    #[serde(default = "default_stop_grace_period")]
    pub stop_grace_period_secs: u32,
    /// Keep the container after it failed, for debugging, instead of removing it.
    #[serde(default)]
    pub keep_if_failed: bool,
    /// Docker logging driver of the container, such as `none` or `local`; `None` keeps
    /// the daemon's default. The core reads output through `attach`, so the driver
    /// only decides what `docker logs` and log shippers see.
    #[serde(default)]
    pub log_driver: Option<String>,
    /// Options of the logging driver (`docker run --log-opt`). Without `log_driver`
    /// they apply to the daemon's default driver.
    #[serde(default)]
    pub log_options: BTreeMap<String, String>,
}

/// Docker's own default time between SIGTERM and SIGKILL in `docker stop`.
fn default_stop_grace_period() -> u32 {
    10
}

/// What a [`Mount`] mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MountKind {
    /// A host path; it must exist.
    #[default]
    Bind,
    /// A named Docker volume; Docker creates it if it does not exist.
    Volume,
}

/// A host path or named volume mounted into the container.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mount {
    #[serde(default)]
    pub kind: MountKind,
    /// Host path for a bind mount, volume name for a volume.
    pub source: String,
    /// Absolute path inside the container.
    pub target: String,
    #[serde(default)]
    pub read_only: bool,
}

/// A host device made available in the container.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceMapping {
    pub host_path: String,
    pub container_path: String,
    /// cgroup permissions, a combination of `r`, `w` and `m`.
    #[serde(default = "default_device_permissions")]
    pub permissions: String,
}

fn default_device_permissions() -> String {
    "rwm".to_string()
}

/// Resource limits of one container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// CPU limit in CPUs (fractions allowed).
    #[serde(default)]
    pub cpu_count: Option<f64>,
    /// Memory limit in bytes; swap is limited to the same value so the limit is real.
    #[serde(default)]
    pub memory_bytes: Option<i64>,
    /// Number of NVIDIA GPUs requested through Docker's device requests.
    #[serde(default)]
    pub gpu_count: Option<i64>,
}

impl RunSpec {
    /// Checks that the step names are unique, every upstream step exists and the
    /// graph has no cycle.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidSpec`] naming the duplicate, unknown or cyclic steps.
    pub fn validate(&self) -> Result<(), Error> {
        if self.steps.is_empty() {
            return Err(Error::InvalidSpec("the run has no steps".into()));
        }
        if self.max_parallelism == Some(0) {
            return Err(Error::InvalidSpec(
                "max_parallelism is 0; use a positive number, or no value for no limit".into(),
            ));
        }
        self.check_unique_names()?;
        self.check_upstream_names()?;
        self.check_containers()?;
        self.check_acyclic()
    }

    fn check_unique_names(&self) -> Result<(), Error> {
        let mut seen = HashSet::new();
        let mut duplicates: Vec<&str> = self
            .steps
            .iter()
            .filter(|step| !seen.insert(step.name.as_str()))
            .map(|step| step.name.as_str())
            .collect();
        if duplicates.is_empty() {
            return Ok(());
        }
        duplicates.sort_unstable();
        duplicates.dedup();
        Err(Error::InvalidSpec(format!(
            "duplicate step names: {}",
            duplicates.join(", ")
        )))
    }

    fn check_upstream_names(&self) -> Result<(), Error> {
        let names: HashSet<&str> = self.steps.iter().map(|s| s.name.as_str()).collect();
        for step in &self.steps {
            for upstream in &step.upstream {
                if !names.contains(upstream.as_str()) {
                    return Err(Error::InvalidSpec(format!(
                        "step `{}` depends on unknown step `{}`",
                        step.name, upstream
                    )));
                }
                if upstream == &step.name {
                    return Err(Error::InvalidSpec(format!(
                        "step `{}` depends on itself",
                        step.name
                    )));
                }
            }
        }
        Ok(())
    }

    fn check_containers(&self) -> Result<(), Error> {
        let mut container_names = HashSet::new();
        for step in &self.steps {
            let container = &step.container;
            if container.image.is_empty() {
                return Err(Error::InvalidSpec(format!(
                    "step `{}` has no image",
                    step.name
                )));
            }
            if let Some(retry) = &step.retry {
                if !retry.backoff.is_finite() || retry.backoff < 0.0 {
                    return Err(Error::InvalidSpec(format!(
                        "step `{}` has retry backoff {}; use a finite number, 0 or more",
                        step.name, retry.backoff
                    )));
                }
            }
            if let Some(cpus) = container.resources.cpu_count {
                if !cpus.is_finite() || cpus <= 0.0 {
                    return Err(Error::InvalidSpec(format!(
                        "step `{}` has cpu_count {cpus}; use a positive number of CPUs",
                        step.name
                    )));
                }
            }
            if container.log_driver.as_deref().is_some_and(str::is_empty) {
                return Err(Error::InvalidSpec(format!(
                    "step `{}` has an empty log driver; name a Docker logging driver, or \
                     leave it unset for the daemon's default",
                    step.name
                )));
            }
            if step.timeout_secs == Some(0) {
                return Err(Error::InvalidSpec(format!(
                    "step `{}` has a timeout of 0 seconds; use a positive timeout, or none",
                    step.name
                )));
            }
            if !container_names.insert(container.name.as_str()) {
                return Err(Error::InvalidSpec(format!(
                    "container name `{}` of step `{}` is used by another step",
                    container.name, step.name
                )));
            }
        }
        Ok(())
    }

    /// Kahn's algorithm: whatever cannot be ordered lies on or behind a cycle.
    fn check_acyclic(&self) -> Result<(), Error> {
        let order = self.topological_order();
        if order.len() == self.steps.len() {
            return Ok(());
        }
        let ordered: HashSet<usize> = order.into_iter().collect();
        let mut blocked: Vec<&str> = (0..self.steps.len())
            .filter(|i| !ordered.contains(i))
            .map(|i| self.steps[i].name.as_str())
            .collect();
        blocked.sort_unstable();
        // A huge cycle would make an unreadable message, and the first names suffice
        // to find it.
        const SHOWN: usize = 20;
        let mut names = blocked[..blocked.len().min(SHOWN)].join(", ");
        if blocked.len() > SHOWN {
            names.push_str(&format!(" and {} more", blocked.len() - SHOWN));
        }
        Err(Error::InvalidSpec(format!(
            "the steps form a cycle: {names} (each of these waits, directly or not, on a \
             cycle of steps)"
        )))
    }

    /// Returns step indices in an order where every step follows its upstream steps.
    /// Steps on a cycle are left out.
    pub fn topological_order(&self) -> Vec<usize> {
        let index = self.index_by_name();
        let mut pending_upstream: Vec<usize> =
            self.steps.iter().map(|s| s.upstream.len()).collect();
        let downstream = self.downstream_indices(&index);
        let mut ready: Vec<usize> = (0..self.steps.len())
            .filter(|&i| pending_upstream[i] == 0)
            .collect();
        let mut order = Vec::with_capacity(self.steps.len());
        while let Some(i) = ready.pop() {
            order.push(i);
            for &d in &downstream[i] {
                pending_upstream[d] -= 1;
                if pending_upstream[d] == 0 {
                    ready.push(d);
                }
            }
        }
        order
    }

    /// Maps step names to their index in `steps`.
    pub fn index_by_name(&self) -> HashMap<&str, usize> {
        self.steps
            .iter()
            .enumerate()
            .map(|(i, step)| (step.name.as_str(), i))
            .collect()
    }

    /// For each step, the indices of the steps that list it as upstream.
    /// Unknown upstream names are ignored; [`RunSpec::validate`] reports them.
    pub fn downstream_indices(&self, index: &HashMap<&str, usize>) -> Vec<Vec<usize>> {
        let mut downstream = vec![Vec::new(); self.steps.len()];
        for (i, step) in self.steps.iter().enumerate() {
            for upstream in &step.upstream {
                if let Some(&u) = index.get(upstream.as_str()) {
                    downstream[u].push(i);
                }
            }
        }
        downstream
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(name: &str, upstream: &[&str]) -> StepSpec {
        StepSpec {
            name: name.into(),
            upstream: upstream.iter().map(|s| s.to_string()).collect(),
            container: ContainerSpec {
                name: format!("c-{name}"),
                image: "img".into(),
                ..Default::default()
            },
            retry: None,
            timeout_secs: None,
        }
    }

    fn run(steps: Vec<StepSpec>) -> RunSpec {
        RunSpec {
            run_id: "r".into(),
            steps,
            execution_mode: ExecutionMode::FailFast,
            max_parallelism: None,
        }
    }

    fn message(spec: &RunSpec) -> String {
        spec.validate().unwrap_err().to_string()
    }

    #[test]
    fn validate_accepts_diamond() {
        let spec = run(vec![
            step("a", &[]),
            step("b", &["a"]),
            step("c", &["a"]),
            step("d", &["b", "c"]),
        ]);
        assert!(spec.validate().is_ok());
    }

    #[test]
    fn validate_names_duplicate_steps() {
        let spec = run(vec![step("a", &[]), step("b", &[]), step("a", &[])]);
        let msg = message(&spec);
        assert!(msg.contains("duplicate step names: a"), "{msg}");
    }

    #[test]
    fn validate_names_unknown_upstream() {
        let spec = run(vec![step("a", &[]), step("b", &["missing"])]);
        let msg = message(&spec);
        assert!(
            msg.contains("step `b` depends on unknown step `missing`"),
            "{msg}"
        );
    }

    #[test]
    fn validate_names_cycle_steps() {
        let spec = run(vec![
            step("root", &[]),
            step("x", &["root", "z"]),
            step("y", &["x"]),
            step("z", &["y"]),
        ]);
        let msg = message(&spec);
        assert!(msg.contains("cycle: x, y, z"), "{msg}");
        assert!(!msg.contains("root"), "{msg}");
    }

    #[test]
    fn validate_shortens_huge_cycle() {
        let mut steps: Vec<StepSpec> = (0..1000)
            .map(|i| {
                let upstream = format!("s{:04}", (i + 1) % 1000);
                step(&format!("s{i:04}"), &[upstream.as_str()])
            })
            .collect();
        steps.push(step("root", &[]));
        let msg = message(&run(steps));
        assert!(msg.contains("s0000, s0001"), "{msg}");
        assert!(msg.contains("and 980 more"), "{msg}");
        assert!(msg.len() < 500, "{} characters", msg.len());
    }

    #[test]
    fn validate_rejects_self_dependency() {
        let spec = run(vec![step("a", &["a"])]);
        assert!(message(&spec).contains("step `a` depends on itself"));
    }

    #[test]
    fn validate_rejects_zero_parallelism() {
        let mut spec = run(vec![step("a", &[])]);
        spec.max_parallelism = Some(0);
        assert!(message(&spec).contains("max_parallelism is 0"));
    }

    #[test]
    fn validate_rejects_shared_container_name() {
        let mut second = step("b", &[]);
        second.container.name = "c-a".into();
        let spec = run(vec![step("a", &[]), second]);
        assert!(message(&spec).contains("container name `c-a` of step `b`"));
    }

    #[test]
    fn validate_rejects_empty_log_driver() {
        let mut logged = step("a", &[]);
        logged.container.log_driver = Some(String::new());
        let text = message(&run(vec![logged]));
        assert!(text.contains("step `a` has an empty log driver"), "{text}");
    }

    #[test]
    fn validate_rejects_empty_run() {
        assert!(message(&run(vec![])).contains("no steps"));
    }

    #[test]
    fn retry_delay_grows_by_backoff() {
        let policy = RetryPolicy {
            max_retries: 3,
            delay_secs: 2,
            backoff: 3.0,
        };
        assert_eq!(policy.delay_before(1).as_secs(), 2);
        assert_eq!(policy.delay_before(2).as_secs(), 6);
        assert_eq!(policy.delay_before(3).as_secs(), 18);
    }

    #[test]
    fn retry_delay_constant_without_backoff() {
        let policy = RetryPolicy {
            max_retries: 3,
            delay_secs: 5,
            backoff: 0.0,
        };
        assert_eq!(policy.delay_before(1).as_secs(), 5);
        assert_eq!(policy.delay_before(3).as_secs(), 5);
    }

    #[test]
    fn spec_rejects_unknown_fields() {
        let json = r#"{"run_id": "r", "steps": [], "max_paralelism": 2}"#;
        let err = serde_json::from_str::<RunSpec>(json)
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_paralelism"), "{err}");
    }
}
