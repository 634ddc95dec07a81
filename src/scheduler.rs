//! The scheduler: runs a validated [`RunSpec`] as a DAG on a [`ContainerEngine`].
//!
//! A step starts as soon as all its upstream steps have succeeded and fewer than
//! `max_parallelism` steps are running, so steps start in the order their upstream steps
//! finish, not in a fixed sequence. When a step fails, the run's [`ExecutionMode`]
//! decides what happens next:
//!
//! - `FailFast`: the running steps are stopped and no other step starts.
//! - `StopOnFailure`: no other step starts; the running steps finish.
//! - `ContinueOnFailure`: only the steps downstream of the failed one are skipped.
//!
//! # Cancellation
//!
//! When the run's cancel signal fires, no other step starts and every running container
//! is stopped (SIGTERM, SIGKILL after its grace period) and removed. [`run`] returns only
//! after the engine has reported every started container as finished, so when it
//! returns, the run has no container left, except failed ones the spec asked to keep.
//!
//! This module has no Docker types: the engine handles Docker.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::engine::{ContainerEngine, ContainerExit, StopSignal, StopTrigger};
use crate::error::Error;
use crate::events::{Event, RunStatus, StepReport, StepState};
use crate::logs::OutputSink;
use crate::spec::{ExecutionMode, RunSpec};

/// Life-cycle phase of a step, from the scheduler's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Waiting,
    Running,
    Finished(StepState),
}

/// Result of a step task: the step index, the container's exit and the last lines of
/// its output.
type StepResult = (usize, Result<ContainerExit, Error>, Vec<String>);

/// Runs every step of `spec` on `engine`, sends [`Event`]s to `events` and returns the
/// run's final status. The last event sent is always [`Event::RunFinished`].
///
/// `spec` must have passed [`RunSpec::validate`].
pub async fn run<E: ContainerEngine>(
    spec: Arc<RunSpec>,
    engine: Arc<E>,
    events: mpsc::Sender<Event>,
    mut cancel: StopSignal,
) -> RunStatus {
    let mut state = RunState::new(&spec, events);
    let mut tasks: JoinSet<StepResult> = JoinSet::new();
    let mut task_steps = HashMap::new();
    let mut stop_triggers: HashMap<usize, StopTrigger> = HashMap::new();
    let limit = spec.max_parallelism.unwrap_or(usize::MAX);

    loop {
        if state.halt_reason.is_none() {
            for index in state.ready_steps(limit.saturating_sub(tasks.len())) {
                let (trigger, signal) = StopSignal::new();
                stop_triggers.insert(index, trigger);
                let handle = tasks.spawn(run_step(
                    Arc::clone(&spec),
                    Arc::clone(&engine),
                    index,
                    state.events.clone(),
                    signal,
                ));
                task_steps.insert(handle.id(), index);
                state
                    .set(index, Phase::Running, StepReport::new(StepState::Running))
                    .await;
            }
        }
        if tasks.is_empty() {
            break;
        }

        tokio::select! {
            joined = tasks.join_next_with_id() => {
                let (index, result, tail) = match joined {
                    Some(Ok((_, step_result))) => step_result,
                    Some(Err(join_error)) => {
                        let index = task_steps[&join_error.id()];
                        let message = format!("the task supervising the step ended abnormally: {join_error}");
                        (index, Err(Error::Internal(message)), Vec::new())
                    }
                    None => continue,
                };
                stop_triggers.remove(&index);
                let failed = state.finish_step(index, result, &tail).await;
                if failed {
                    state.apply_execution_mode(index, &stop_triggers).await;
                }
            }
            _ = cancel.fired(), if !state.cancelled => {
                state.cancelled = true;
                state.halt_reason = Some("the run was cancelled".into());
                for trigger in stop_triggers.values() {
                    trigger.fire();
                }
            }
        }
    }

    state.skip_waiting_steps().await;
    state.finish_run().await
}

/// Runs one step's container and collects its result; the body of a step task.
async fn run_step<E: ContainerEngine>(
    spec: Arc<RunSpec>,
    engine: Arc<E>,
    index: usize,
    events: mpsc::Sender<Event>,
    stop: StopSignal,
) -> StepResult {
    let step = &spec.steps[index];
    let mut output = OutputSink::new(step.name.clone(), events);
    let result = engine
        .run_container(&step.container, &mut output, stop)
        .await;
    (index, result, output.tail())
}

/// The scheduler's bookkeeping for one run.
struct RunState<'a> {
    spec: &'a RunSpec,
    upstream: Vec<Vec<usize>>,
    downstream: Vec<Vec<usize>>,
    phases: Vec<Phase>,
    reports: Vec<StepReport>,
    events: mpsc::Sender<Event>,
    /// Reason no further step may start; `None` while steps may still start.
    halt_reason: Option<String>,
    cancelled: bool,
}

impl<'a> RunState<'a> {
    fn new(spec: &'a RunSpec, events: mpsc::Sender<Event>) -> Self {
        let index = spec.index_by_name();
        let upstream = spec
            .steps
            .iter()
            .map(|step| {
                step.upstream
                    .iter()
                    .map(|name| index[name.as_str()])
                    .collect()
            })
            .collect();
        let downstream = spec.downstream_indices(&index);
        RunState {
            spec,
            upstream,
            downstream,
            phases: vec![Phase::Waiting; spec.steps.len()],
            reports: vec![StepReport::new(StepState::Skipped); spec.steps.len()],
            events,
            halt_reason: None,
            cancelled: false,
        }
    }

    /// Returns up to `free_slots` waiting steps whose upstream steps all succeeded, in
    /// spec order.
    fn ready_steps(&self, free_slots: usize) -> Vec<usize> {
        (0..self.phases.len())
            .filter(|&i| self.phases[i] == Phase::Waiting)
            .filter(|&i| {
                self.upstream[i]
                    .iter()
                    .all(|&u| self.phases[u] == Phase::Finished(StepState::Succeeded))
            })
            .take(free_slots)
            .collect()
    }

    /// Records how a step's container ended and returns true if the step failed.
    async fn finish_step(
        &mut self,
        index: usize,
        result: Result<ContainerExit, Error>,
        tail: &[String],
    ) -> bool {
        let step = &self.spec.steps[index];
        let report = match result {
            Ok(exit) if exit.succeeded() => step_report(StepState::Succeeded, &exit),
            Ok(exit) if exit.stopped => {
                let reason = self.halt_reason.as_deref().unwrap_or("the run stopped");
                step_report(StepState::Stopped, &exit)
                    .with_message(format!("step `{}` was stopped because {reason}", step.name))
            }
            Ok(exit) => {
                let memory_limit = step.container.resources.memory_bytes;
                let message = failure_message(&step.name, &exit, memory_limit, tail);
                step_report(StepState::Failed, &exit).with_message(message)
            }
            Err(error) => StepReport::new(StepState::Failed)
                .with_message(format!("step `{}` could not run: {error}", step.name)),
        };
        let failed = report.state == StepState::Failed;
        let state = report.state;
        self.set(index, Phase::Finished(state), report).await;
        failed
    }

    /// Applies the run's execution mode after step `failed` failed.
    async fn apply_execution_mode(
        &mut self,
        failed: usize,
        stop_triggers: &HashMap<usize, StopTrigger>,
    ) {
        let name = &self.spec.steps[failed].name;
        match self.spec.execution_mode {
            ExecutionMode::FailFast => {
                self.halt_reason.get_or_insert_with(|| {
                    format!("step `{name}` failed (execution mode fail_fast)")
                });
                for trigger in stop_triggers.values() {
                    trigger.fire();
                }
            }
            ExecutionMode::StopOnFailure => {
                self.halt_reason.get_or_insert_with(|| {
                    format!("step `{name}` failed (execution mode stop_on_failure)")
                });
            }
            ExecutionMode::ContinueOnFailure => self.skip_downstream(failed).await,
        }
    }

    /// Skips every waiting step that depends, directly or not, on step `failed`.
    async fn skip_downstream(&mut self, failed: usize) {
        let failed_name = self.spec.steps[failed].name.clone();
        let mut pending = self.downstream[failed].clone();
        while let Some(index) = pending.pop() {
            if self.phases[index] != Phase::Waiting {
                continue;
            }
            let report = StepReport::new(StepState::Skipped).with_message(format!(
                "skipped because upstream step `{failed_name}` failed"
            ));
            self.set(index, Phase::Finished(StepState::Skipped), report)
                .await;
            pending.extend(self.downstream[index].iter().copied());
        }
    }

    /// Marks every step that never started as skipped, with the reason.
    async fn skip_waiting_steps(&mut self) {
        for index in 0..self.phases.len() {
            if self.phases[index] != Phase::Waiting {
                continue;
            }
            let reason = match &self.halt_reason {
                Some(reason) => format!("not started because {reason}"),
                None => "not started because an upstream step did not succeed".to_string(),
            };
            let report = StepReport::new(StepState::Skipped).with_message(reason);
            self.set(index, Phase::Finished(StepState::Skipped), report)
                .await;
        }
    }

    /// Sends the final event and returns the run's status.
    async fn finish_run(self) -> RunStatus {
        let status = if self.cancelled {
            RunStatus::Cancelled
        } else if self.reports.iter().all(|r| r.state == StepState::Succeeded) {
            RunStatus::Succeeded
        } else {
            RunStatus::Failed
        };
        let steps: BTreeMap<String, StepReport> = self
            .spec
            .steps
            .iter()
            .map(|step| step.name.clone())
            .zip(self.reports)
            .collect();
        let _ = self.events.send(Event::RunFinished { status, steps }).await;
        status
    }

    async fn set(&mut self, index: usize, phase: Phase, report: StepReport) {
        self.phases[index] = phase;
        self.reports[index] = report.clone();
        let event = Event::Step {
            step: self.spec.steps[index].name.clone(),
            report,
        };
        // A closed channel means the observer is gone. The run goes on so it still
        // cleans up its containers.
        let _ = self.events.send(event).await;
    }
}

fn step_report(state: StepState, exit: &ContainerExit) -> StepReport {
    StepReport {
        state,
        container_id: Some(exit.container_id.clone()),
        exit_code: Some(exit.exit_code),
        oom_killed: exit.oom_killed,
        message: None,
    }
}

/// Describes a failed container for the person reading the run's error.
fn failure_message(
    step: &str,
    exit: &ContainerExit,
    memory_limit: Option<i64>,
    tail: &[String],
) -> String {
    let mut message = if exit.oom_killed {
        let limit = memory_limit.map_or_else(|| "the host's memory".to_string(), format_bytes);
        format!(
            "step `{step}` ran out of memory: the kernel killed it for exceeding {limit} \
             (exit code {}). Raise the step's memory in ResourceSettings, or use less memory",
            exit.exit_code
        )
    } else {
        format!("step `{step}` failed with exit code {}", exit.exit_code)
    };
    if exit.kept {
        message.push_str(&format!(
            "; its container {} was kept for debugging (keep_failed_containers)",
            exit.container_id
        ));
    }
    if tail.is_empty() {
        message.push_str(". It printed no output.");
    } else {
        message.push_str(&format!(". Last {} lines of its output:\n", tail.len()));
        message.push_str(&tail.join("\n"));
    }
    message
}

/// Formats a byte count with the largest binary unit that keeps it exact enough to read.
fn format_bytes(bytes: i64) -> String {
    const UNITS: [&str; 4] = ["GiB", "MiB", "KiB", "B"];
    for (power, unit) in (0..4).rev().zip(UNITS) {
        let size = 1i64 << (10 * power);
        if bytes >= size && power > 0 {
            let value = bytes as f64 / size as f64;
            return format!("{value:.1} {unit} ({bytes} bytes)");
        }
    }
    format!("{bytes} B")
}

#[cfg(test)]
mod tests;
