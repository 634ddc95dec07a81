//! Running one step: its attempts, the delay between them and its timeout.
//!
//! A step runs as one container per attempt. An attempt fails by a non-zero exit, out
//! of memory, a timeout, or a container that cannot start. Another attempt follows after
//! the retry delay while the step's retry policy allows it and the run has not requested
//! a stop. Each attempt gets a container of its own, named after the step's container
//! with `-retry<N>` appended, so a kept failed container never blocks the name.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::engine::{ContainerEngine, ContainerExit, StopSignal};
use crate::error::Error;
use crate::events::{Event, StepReport, StepState};
use crate::logs::OutputSink;
use crate::spec::{ContainerSpec, RunSpec, StepSpec};

/// Outcome of a step after its last attempt.
#[derive(Debug)]
pub(super) struct StepOutcome {
    pub index: usize,
    /// The last attempt's container exit, or why it could not run.
    pub result: Result<ContainerExit, Error>,
    /// The last lines the last attempt printed.
    pub tail: Vec<String>,
    pub timed_out: bool,
    /// Number of attempts made, from 1.
    pub attempts: u32,
}

impl StepOutcome {
    /// True when the last attempt failed by itself: not succeeded, not stopped by the run.
    pub fn failed(&self) -> bool {
        match &self.result {
            Ok(exit) => !exit.succeeded() && (!exit.stopped || self.timed_out),
            Err(_) => true,
        }
    }
}

/// Runs the step at `index` to its end, with retries and timeout; the body of a step task.
///
/// `stop` fires when the run wants the step stopped: the running attempt is stopped and
/// no further attempt starts.
pub(super) async fn run_step<E: ContainerEngine>(
    spec: Arc<RunSpec>,
    engine: Arc<E>,
    index: usize,
    events: mpsc::Sender<Event>,
    mut stop: StopSignal,
) -> StepOutcome {
    let step = &spec.steps[index];
    let max_attempts = step
        .retry
        .as_ref()
        .map_or(1, |r| r.max_retries.saturating_add(1));
    let mut attempt = 1;
    loop {
        let container = attempt_container(&step.container, attempt);
        let mut output = OutputSink::new(step.name.clone(), events.clone());
        let (result, timed_out) =
            run_attempt(&*engine, step, &container, &mut output, &mut stop).await;
        let outcome = StepOutcome {
            index,
            result,
            tail: output.tail(),
            timed_out,
            attempts: attempt,
        };
        if !outcome.failed() || attempt >= max_attempts || stop.is_set() {
            return outcome;
        }

        let delay = step
            .retry
            .as_ref()
            .map_or(Duration::ZERO, |retry| retry.delay_before(attempt));
        let report = attempt_report(&outcome, StepState::Retrying).with_message(format!(
            "{}\nRetrying in {:.0?} (attempt {} of {max_attempts}).",
            describe_failure(step, &outcome),
            delay,
            attempt + 1
        ));
        let _ = events
            .send(Event::Step {
                step: step.name.clone(),
                report,
            })
            .await;

        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.fired() => return outcome,
        }
        attempt += 1;
        let mut running = StepReport::new(StepState::Running);
        running.attempt = attempt;
        let _ = events
            .send(Event::Step {
                step: step.name.clone(),
                report: running,
            })
            .await;
    }
}

/// Runs one attempt's container, stopping it on the run's request or at the timeout.
/// Returns the engine's result and whether the attempt timed out.
async fn run_attempt<E: ContainerEngine>(
    engine: &E,
    step: &StepSpec,
    container: &ContainerSpec,
    output: &mut OutputSink,
    stop: &mut StopSignal,
) -> (Result<ContainerExit, Error>, bool) {
    let (attempt_trigger, attempt_signal) = StopSignal::new();
    let timeout = step.timeout_secs.map(Duration::from_secs);
    let deadline = tokio::time::sleep(timeout.unwrap_or(Duration::MAX));
    tokio::pin!(deadline);
    let run = engine.run_container(container, output, attempt_signal);
    tokio::pin!(run);

    let mut timed_out = false;
    let mut stop_requested = false;
    loop {
        tokio::select! {
            result = &mut run => {
                // A container that vanished while it was being stopped (removed by
                // another process, say) was stopped all the same.
                let result = match result {
                    Err(_) if stop_requested => Ok(ContainerExit {
                        exit_code: -1,
                        stopped: true,
                        ..Default::default()
                    }),
                    other => other,
                };
                return (result, timed_out);
            }
            _ = stop.fired(), if !stop_requested => {
                stop_requested = true;
                attempt_trigger.fire();
            }
            _ = &mut deadline, if timeout.is_some() && !stop_requested => {
                stop_requested = true;
                timed_out = true;
                attempt_trigger.fire();
            }
        }
    }
}

/// Returns the container spec of attempt `attempt`: the step's own for the first, a
/// copy with a `-retry<N>` name for later ones.
fn attempt_container(container: &ContainerSpec, attempt: u32) -> ContainerSpec {
    let mut container = container.clone();
    if attempt > 1 {
        container.name = format!("{}-retry{}", container.name, attempt - 1);
    }
    container
}

/// Builds the report of a step from its last attempt.
pub(super) fn attempt_report(outcome: &StepOutcome, state: StepState) -> StepReport {
    let mut report = StepReport::new(state);
    report.attempt = outcome.attempts;
    report.timed_out = outcome.timed_out;
    if let Ok(exit) = &outcome.result {
        report.container_id = Some(exit.container_id.clone());
        report.exit_code = Some(exit.exit_code);
        report.oom_killed = exit.oom_killed;
        report.started_at = exit.started_at.clone();
        report.finished_at = exit.finished_at.clone();
        report.peak_memory_bytes = exit.peak_memory_bytes;
    }
    report
}

/// Describes a failed attempt for the person reading the run's error.
pub(super) fn describe_failure(step: &StepSpec, outcome: &StepOutcome) -> String {
    let exit = match &outcome.result {
        Ok(exit) => exit,
        Err(error) => return format!("step `{}` could not run: {error}", step.name),
    };
    let name = &step.name;
    let mut message = if outcome.timed_out {
        format!(
            "step `{name}` timed out after {} s and was stopped (exit code {})",
            step.timeout_secs.unwrap_or_default(),
            exit.exit_code
        )
    } else if exit.oom_killed {
        let limit = step
            .container
            .resources
            .memory_bytes
            .map_or_else(|| "the host's memory".to_string(), format_bytes);
        format!(
            "step `{name}` ran out of memory: the kernel killed it for exceeding {limit} \
             (exit code {}). Raise the step's memory in ResourceSettings, or use less memory",
            exit.exit_code
        )
    } else {
        format!("step `{name}` failed with exit code {}", exit.exit_code)
    };
    if exit.kept {
        message.push_str(&format!(
            "; its container `{}` was kept for debugging (keep_failed_containers); \
             see `docker logs {}`, remove it with `docker rm {}`",
            exit.container_name, exit.container_name, exit.container_name
        ));
    }
    if outcome.tail.is_empty() {
        message.push_str(". It printed no output.");
    } else {
        message.push_str(&format!(
            ". Last {} lines of its output:\n",
            outcome.tail.len()
        ));
        message.push_str(&outcome.tail.join("\n"));
    }
    message
}

/// Formats a byte count with the largest binary unit that keeps it exact enough to read.
pub(super) fn format_bytes(bytes: i64) -> String {
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
