//! Events a run sends to its observer: output lines, step state changes and the end of the run.
//!
//! The Python side receives these as dicts whose `kind` key is the variant name in snake
//! case, with the fields below as the other keys.

use std::collections::BTreeMap;

use serde::Serialize;

/// Output stream of a container that a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// Final or intermediate state of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// The container was created and started.
    Running,
    /// The container exited with code 0.
    Succeeded,
    /// The container exited with another code, was killed for memory, timed out, or
    /// could not start, and no retry is left.
    Failed,
    /// An attempt failed and the step runs again after the retry delay.
    Retrying,
    /// The core stopped the container because the run failed fast or was cancelled.
    Stopped,
    /// The step never started: an upstream step failed, or the run stopped first.
    Skipped,
}

impl StepState {
    pub fn is_finished(self) -> bool {
        !matches!(self, StepState::Running | StepState::Retrying)
    }
}

/// Final status of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Succeeded,
    Failed,
    /// The observer cancelled the run; every container it had was stopped and removed.
    Cancelled,
    /// The observer asked for a graceful stop: the running steps finished, no other
    /// step started, and none failed.
    Stopped,
}

/// Report of a step's state, sent when the state changes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepReport {
    pub state: StepState,
    /// Docker's container id, once the container exists.
    pub container_id: Option<String>,
    pub exit_code: Option<i64>,
    /// True only when the kernel killed the container for exceeding its memory limit.
    pub oom_killed: bool,
    /// True when the attempt ran past the step's timeout and was stopped.
    pub timed_out: bool,
    /// Number of the attempt this report is about, from 1; 0 for a step that never ran.
    pub attempt: u32,
    /// Start and end of the attempt's container (RFC 3339), when it ran.
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// Highest memory use of the attempt's container, in bytes, when it was measured.
    pub peak_memory_bytes: Option<u64>,
    /// Human-readable cause for failed, stopped and skipped steps.
    pub message: Option<String>,
}

impl StepReport {
    pub fn new(state: StepState) -> Self {
        StepReport {
            state,
            container_id: None,
            exit_code: None,
            oom_killed: false,
            timed_out: false,
            attempt: 0,
            started_at: None,
            finished_at: None,
            peak_memory_bytes: None,
            message: None,
        }
    }

    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }
}

/// One event of a run, in the order it happened for each step.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// One line of step output, without its line terminator. A line longer than the
    /// core's maximum is cut into pieces; `continued` is true on every piece but the last.
    Log {
        step: String,
        stream: OutputStream,
        line: String,
        continued: bool,
    },
    /// A step changed state.
    Step {
        step: String,
        #[serde(flatten)]
        report: StepReport,
    },
    /// The run ended; always the last event. `steps` has the final report of every step.
    RunFinished {
        status: RunStatus,
        steps: BTreeMap<String, StepReport>,
    },
}

/// Consecutive output lines of one step and stream, joined for delivery to Python.
///
/// Python gets one string per run of lines instead of one object per line. A step that
/// prints a million short lines would otherwise cost a million dicts and a million log
/// records on the observer's side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputText {
    pub step: String,
    pub stream: OutputStream,
    /// The lines, joined with `\n`. The pieces of a cut line are joined without one.
    pub text: String,
    /// True when the last line goes on in the next output of this step and stream.
    pub continued: bool,
}

impl OutputText {
    fn push(&mut self, line: &str, continued: bool) {
        if !self.continued {
            self.text.push('\n');
        }
        self.text.push_str(line);
        self.continued = continued;
    }
}

/// An event as delivered to Python: output lines joined into text, other events as
/// they are.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivered {
    Output(OutputText),
    Other(Event),
}

/// Joins each run of consecutive [`Event::Log`] events of the same step and stream into
/// one [`OutputText`], keeping the order of all events.
pub fn join_output(events: Vec<Event>) -> Vec<Delivered> {
    let mut delivered = Vec::new();
    let mut current: Option<OutputText> = None;
    for event in events {
        match event {
            Event::Log {
                step,
                stream,
                line,
                continued,
            } => match &mut current {
                Some(output) if output.step == step && output.stream == stream => {
                    output.push(&line, continued);
                }
                _ => {
                    delivered.extend(current.take().map(Delivered::Output));
                    current = Some(OutputText {
                        step,
                        stream,
                        text: line,
                        continued,
                    });
                }
            },
            other => {
                delivered.extend(current.take().map(Delivered::Output));
                delivered.push(Delivered::Other(other));
            }
        }
    }
    delivered.extend(current.map(Delivered::Output));
    delivered
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(step: &str, stream: OutputStream, line: &str, continued: bool) -> Event {
        Event::Log {
            step: step.into(),
            stream,
            line: line.into(),
            continued,
        }
    }

    fn output(step: &str, stream: OutputStream, text: &str, continued: bool) -> Delivered {
        Delivered::Output(OutputText {
            step: step.into(),
            stream,
            text: text.into(),
            continued,
        })
    }

    #[test]
    fn join_output_merges_same_stream_lines() {
        use OutputStream::{Stderr, Stdout};
        let events = vec![
            log("a", Stdout, "one", false),
            log("a", Stdout, "", false),
            log("a", Stdout, "two", false),
            log("a", Stderr, "err", false),
            log("b", Stderr, "other step", false),
            log("a", Stdout, "three", false),
        ];
        assert_eq!(
            join_output(events),
            vec![
                output("a", Stdout, "one\n\ntwo", false),
                output("a", Stderr, "err", false),
                output("b", Stderr, "other step", false),
                output("a", Stdout, "three", false),
            ]
        );
    }

    #[test]
    fn join_output_joins_pieces_without_newline() {
        use OutputStream::Stdout;
        let events = vec![
            log("a", Stdout, "short", false),
            log("a", Stdout, "long ", true),
            log("a", Stdout, "line", false),
            log("a", Stdout, "cut at the ", true),
        ];
        assert_eq!(
            join_output(events),
            vec![output("a", Stdout, "short\nlong line\ncut at the ", true)]
        );
    }

    #[test]
    fn join_output_keeps_other_events_in_order() {
        use OutputStream::Stdout;
        let running = Event::Step {
            step: "a".into(),
            report: StepReport::new(StepState::Running),
        };
        let events = vec![
            log("a", Stdout, "before", false),
            running.clone(),
            log("a", Stdout, "after", false),
        ];
        assert_eq!(
            join_output(events),
            vec![
                output("a", Stdout, "before", false),
                Delivered::Other(running),
                output("a", Stdout, "after", false),
            ]
        );
    }
}
