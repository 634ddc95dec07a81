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
//! # Stopping
//!
//! When the run's drain signal fires (a graceful stop), no other step starts and the
//! running steps finish. When the run's cancel signal fires (a forceful stop), no other step starts and every running container
//! is stopped (SIGTERM, SIGKILL after its grace period) and removed. [`run`] returns only
//! after the engine has reported every started container as finished and has finished
//! removing them, so when it returns, the run has no container left, except failed ones
//! the spec asked to keep.
//!
//! This module has no Docker types: the engine handles Docker.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::engine::{ContainerEngine, StopSignal, StopTrigger};
use crate::error::Error;
use crate::events::{Event, RunStatus, StepReport, StepState};
use crate::spec::{ExecutionMode, RunSpec};

mod step;

use step::{attempt_report, describe_failure, run_step, StepOutcome};

/// Life-cycle phase of a step, from the scheduler's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Waiting,
    Running,
    Finished(StepState),
}

/// Signals through which the observer of a run steers it.
#[derive(Debug, Clone)]
pub struct RunControls {
    /// Stop every running container and start no more: a forceful stop.
    pub cancel: StopSignal,
    /// Start no more steps but let the running ones finish: a graceful stop.
    pub drain: StopSignal,
}

/// Runs every step of `spec` on `engine`, sends [`Event`]s to `events` and returns the
/// run's final status. The last event sent is always [`Event::RunFinished`].
///
/// `spec` must have passed [`RunSpec::validate`].
pub async fn run<E: ContainerEngine>(
    spec: Arc<RunSpec>,
    engine: Arc<E>,
    events: mpsc::Sender<Event>,
    mut controls: RunControls,
) -> RunStatus {
    let mut state = RunState::new(&spec, events);
    let mut tasks: JoinSet<StepOutcome> = JoinSet::new();
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
                let mut running = StepReport::new(StepState::Running);
                running.attempt = 1;
                state.set(index, Phase::Running, running).await;
            }
        }
        if tasks.is_empty() {
            break;
        }

        tokio::select! {
            joined = tasks.join_next_with_id() => {
                let outcome = match joined {
                    Some(Ok((id, outcome))) => {
                        task_steps.remove(&id);
                        outcome
                    }
                    Some(Err(join_error)) => {
                        let message = format!(
                            "the task supervising the step ended abnormally: {join_error}"
                        );
                        StepOutcome {
                            index: task_steps
                                .remove(&join_error.id())
                                .expect("every step task is registered when spawned"),
                            result: Err(Error::Internal(message)),
                            tail: Vec::new(),
                            timed_out: false,
                            attempts: 1,
                        }
                    }
                    None => continue,
                };
                let index = outcome.index;
                stop_triggers.remove(&index);
                let failed = state.finish_step(outcome).await;
                if failed {
                    state.apply_execution_mode(index, &stop_triggers).await;
                }
            }
            _ = controls.cancel.fired(), if !state.cancelled => {
                state.cancelled = true;
                state.halt_reason = Some("the run was cancelled".into());
                for trigger in stop_triggers.values() {
                    trigger.fire();
                }
            }
            _ = controls.drain.fired(), if !state.draining && !state.cancelled => {
                state.draining = true;
                state
                    .halt_reason
                    .get_or_insert_with(|| "a graceful stop was requested".into());
            }
        }
    }

    state.skip_waiting_steps().await;
    // The engine may still be removing exited containers. The run ends only after
    // that, so that it leaves no container behind.
    engine.finish_removals().await;
    state.finish_run().await
}

/// The scheduler's bookkeeping for one run.
///
/// Readiness is updated as steps finish, so the scheduler never scans all steps to find
/// the next ones to start. A run of n steps and e dependencies does O((n + e) log n)
/// scheduling work, not O(n^2).
struct RunState<'a> {
    spec: &'a RunSpec,
    downstream: Vec<Vec<usize>>,
    /// For each step, the number of its upstream steps that have not succeeded yet.
    unfinished_upstream: Vec<usize>,
    /// Waiting steps whose upstream steps all succeeded, ordered by spec index so that
    /// ready steps start in spec order.
    ready: BTreeSet<usize>,
    phases: Vec<Phase>,
    reports: Vec<StepReport>,
    events: mpsc::Sender<Event>,
    /// Reason no further step may start; `None` while steps may still start.
    halt_reason: Option<String>,
    cancelled: bool,
    draining: bool,
}

impl<'a> RunState<'a> {
    fn new(spec: &'a RunSpec, events: mpsc::Sender<Event>) -> Self {
        let index = spec.index_by_name();
        let downstream = spec.downstream_indices(&index);
        // Counted from `downstream`, which lists a step once per upstream entry, so a
        // step that names the same upstream step twice counts it twice and is still
        // released when that step succeeds.
        let mut unfinished_upstream = vec![0; spec.steps.len()];
        for &d in downstream.iter().flatten() {
            unfinished_upstream[d] += 1;
        }
        let ready = (0..spec.steps.len())
            .filter(|&i| unfinished_upstream[i] == 0)
            .collect();
        RunState {
            spec,
            downstream,
            unfinished_upstream,
            ready,
            phases: vec![Phase::Waiting; spec.steps.len()],
            reports: vec![StepReport::new(StepState::Skipped); spec.steps.len()],
            events,
            halt_reason: None,
            cancelled: false,
            draining: false,
        }
    }

    /// Takes up to `free_slots` waiting steps whose upstream steps all succeeded, in
    /// spec order. The caller starts them.
    fn ready_steps(&mut self, free_slots: usize) -> Vec<usize> {
        let mut steps = Vec::new();
        while steps.len() < free_slots {
            let Some(index) = self.ready.pop_first() else {
                break;
            };
            debug_assert_eq!(self.phases[index], Phase::Waiting);
            steps.push(index);
        }
        steps
    }

    /// Counts step `succeeded` as done for its downstream steps and queues those that
    /// have no unfinished upstream step left.
    fn release_downstream(&mut self, succeeded: usize) {
        for &d in &self.downstream[succeeded] {
            self.unfinished_upstream[d] -= 1;
            if self.unfinished_upstream[d] == 0 && self.phases[d] == Phase::Waiting {
                self.ready.insert(d);
            }
        }
    }

    /// Records how a step ended and returns true if it failed.
    async fn finish_step(&mut self, outcome: StepOutcome) -> bool {
        let step = &self.spec.steps[outcome.index];
        let failed = outcome.failed();
        let report = match &outcome.result {
            Ok(exit) if exit.succeeded() => attempt_report(&outcome, StepState::Succeeded),
            _ if failed => attempt_report(&outcome, StepState::Failed)
                .with_message(describe_failure(step, &outcome)),
            _ => {
                let reason = self.halt_reason.as_deref().unwrap_or("the run stopped");
                attempt_report(&outcome, StepState::Stopped).with_message(reason.to_string())
            }
        };
        let state = report.state;
        self.set(outcome.index, Phase::Finished(state), report)
            .await;
        if state == StepState::Succeeded {
            self.release_downstream(outcome.index);
        }
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
            let report = StepReport::new(StepState::Skipped)
                .with_message(format!("upstream step `{failed_name}` failed"));
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
                Some(reason) => reason.clone(),
                None => "an upstream step did not succeed".to_string(),
            };
            let report = StepReport::new(StepState::Skipped).with_message(reason);
            self.set(index, Phase::Finished(StepState::Skipped), report)
                .await;
        }
    }

    /// Sends the final event and returns the run's status.
    async fn finish_run(self) -> RunStatus {
        let any_failed = self.reports.iter().any(|r| r.state == StepState::Failed);
        let status = if self.cancelled {
            RunStatus::Cancelled
        } else if self.reports.iter().all(|r| r.state == StepState::Succeeded) {
            RunStatus::Succeeded
        } else if self.draining && !any_failed {
            RunStatus::Stopped
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

#[cfg(test)]
mod tests;
