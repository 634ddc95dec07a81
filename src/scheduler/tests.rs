//! Scheduler tests against the in-memory engine, on tokio's paused clock so that the
//! scripted durations decide the order and the tests take no real time.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::*;
use crate::engine::memory::{MemoryEngine, Record, Script};
use crate::engine::StopTrigger;
use crate::spec::{ContainerSpec, Resources, RetryPolicy, StepSpec};

fn step(name: &str, upstream: &[&str]) -> StepSpec {
    StepSpec {
        name: name.into(),
        upstream: upstream.iter().map(|s| s.to_string()).collect(),
        container: ContainerSpec {
            name: name.into(),
            image: "img".into(),
            ..Default::default()
        },
        retry: None,
        timeout_secs: None,
    }
}

fn spec(steps: Vec<StepSpec>, mode: ExecutionMode) -> RunSpec {
    RunSpec {
        run_id: "run".into(),
        steps,
        execution_mode: mode,
        max_parallelism: None,
    }
}

fn lasting(seconds: u64) -> Script {
    Script {
        duration: Duration::from_secs(seconds),
        ..Default::default()
    }
}

fn failing_after(seconds: u64) -> Script {
    Script {
        duration: Duration::from_secs(seconds),
        exit_code: 3,
        output: vec!["loading data".into(), "ValueError: bad row".into()],
        ..Default::default()
    }
}

/// The result of one scheduler run: its status, every event and the engine it used.
struct Outcome {
    status: RunStatus,
    events: Vec<Event>,
    engine: Arc<MemoryEngine>,
}

impl Outcome {
    fn final_steps(&self) -> &BTreeMap<String, StepReport> {
        match self.events.last() {
            Some(Event::RunFinished { steps, .. }) => steps,
            other => panic!("last event is not RunFinished: {other:?}"),
        }
    }

    fn state(&self, step: &str) -> StepState {
        self.final_steps()[step].state
    }

    fn message(&self, step: &str) -> String {
        self.final_steps()[step].message.clone().unwrap_or_default()
    }

    fn position(&self, record: Record) -> usize {
        let records = self.engine.records();
        records
            .iter()
            .position(|r| *r == record)
            .unwrap_or_else(|| panic!("{record:?} not in {records:?}"))
    }

    fn started(&self, step: &str) -> bool {
        self.engine
            .records()
            .contains(&Record::Started(step.into()))
    }
}

async fn execute(spec: RunSpec, engine: MemoryEngine, cancel_after: Option<Duration>) -> Outcome {
    execute_controlled(spec, engine, cancel_after, None).await
}

/// Fires `trigger` after `delay`, or keeps it alive unfired when there is no delay.
async fn fire_after(trigger: StopTrigger, delay: Option<Duration>) {
    match delay {
        Some(delay) => {
            tokio::time::sleep(delay).await;
            trigger.fire();
        }
        None => std::future::pending::<()>().await,
    }
}

async fn execute_controlled(
    spec: RunSpec,
    engine: MemoryEngine,
    cancel_after: Option<Duration>,
    drain_after: Option<Duration>,
) -> Outcome {
    spec.validate().expect("test spec is valid");
    let engine = Arc::new(engine);
    let (events_tx, mut events_rx) = mpsc::channel(1024);
    let (cancel_trigger, cancel) = StopSignal::new();
    let (drain_trigger, drain) = StopSignal::new();
    let collector = tokio::spawn(async move {
        let mut events = Vec::new();
        while let Some(event) = events_rx.recv().await {
            events.push(event);
        }
        events
    });
    let canceller = tokio::spawn(fire_after(cancel_trigger, cancel_after));
    let drainer = tokio::spawn(fire_after(drain_trigger, drain_after));

    let controls = RunControls { cancel, drain };
    let status = run(Arc::new(spec), Arc::clone(&engine), events_tx, controls).await;
    canceller.abort();
    drainer.abort();
    Outcome {
        status,
        events: collector.await.unwrap(),
        engine,
    }
}

#[tokio::test(start_paused = true)]
async fn diamond_runs_in_dependency_order() {
    let spec = spec(
        vec![
            step("d", &["b", "c"]),
            step("b", &["a"]),
            step("c", &["a"]),
            step("a", &[]),
        ],
        ExecutionMode::FailFast,
    );
    let outcome = execute(spec, MemoryEngine::default(), None).await;

    assert_eq!(outcome.status, RunStatus::Succeeded);
    let a_exit = outcome.position(Record::Exited("a".into()));
    assert!(a_exit < outcome.position(Record::Started("b".into())));
    assert!(a_exit < outcome.position(Record::Started("c".into())));
    let d_start = outcome.position(Record::Started("d".into()));
    assert!(outcome.position(Record::Exited("b".into())) < d_start);
    assert!(outcome.position(Record::Exited("c".into())) < d_start);
    assert_eq!(outcome.engine.max_running(), 2);
}

#[tokio::test(start_paused = true)]
async fn step_starts_when_its_upstream_finishes() {
    // `fast_child` must not wait for the unrelated `slow` step.
    let spec = spec(
        vec![
            step("slow", &[]),
            step("fast", &[]),
            step("fast_child", &["fast"]),
        ],
        ExecutionMode::FailFast,
    );
    let engine = MemoryEngine::with_scripts([("slow", lasting(10)), ("fast", lasting(1))]);
    let outcome = execute(spec, engine, None).await;

    assert_eq!(outcome.status, RunStatus::Succeeded);
    assert!(
        outcome.position(Record::Started("fast_child".into()))
            < outcome.position(Record::Exited("slow".into()))
    );
}

/// Returns the position of a step's report in `state` among the run's events.
fn report_position(outcome: &Outcome, step_name: &str, state: StepState) -> usize {
    outcome
        .events
        .iter()
        .position(|event| {
            matches!(event, Event::Step { step, report } if step == step_name && report.state == state)
        })
        .unwrap_or_else(|| panic!("no {state:?} report of step `{step_name}`"))
}

/// Asserts that the engine removed every container it started, before `run` returned.
fn assert_all_removed(outcome: &Outcome) {
    let records = outcome.engine.records();
    for record in &records {
        if let Record::Started(name) = record {
            assert!(
                records.contains(&Record::Removed(name.clone())),
                "container `{name}` was not removed before the run ended: {records:?}"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn next_step_starts_before_upstream_removal() {
    let spec = spec(
        vec![step("a", &[]), step("b", &["a"]), step("c", &["b"])],
        ExecutionMode::FailFast,
    );
    let outcome = execute(spec, MemoryEngine::default(), None).await;

    assert_eq!(outcome.status, RunStatus::Succeeded);
    let b_start = outcome.position(Record::Started("b".into()));
    assert!(outcome.position(Record::Exited("a".into())) < b_start);
    assert!(b_start < outcome.position(Record::Removed("a".into())));
    assert!(
        report_position(&outcome, "a", StepState::Succeeded)
            < report_position(&outcome, "b", StepState::Running)
    );
    assert!(
        report_position(&outcome, "b", StepState::Succeeded)
            < report_position(&outcome, "c", StepState::Running)
    );
    assert_all_removed(&outcome);
}

#[tokio::test(start_paused = true)]
async fn run_ends_after_last_removal() {
    let spec = spec(
        vec![step("a", &[]), step("b", &["a"])],
        ExecutionMode::FailFast,
    );
    let started = tokio::time::Instant::now();
    let outcome = execute(spec, MemoryEngine::default(), None).await;

    assert_eq!(outcome.status, RunStatus::Succeeded);
    assert_all_removed(&outcome);
    // Paused clock: two 1-second steps, then the removal of the second one's container.
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(2) + Script::DEFAULT_REMOVAL_TIME
    );
}

#[tokio::test(start_paused = true)]
async fn cancel_waits_for_removals() {
    let spec = spec(
        vec![step("a", &[]), step("b", &["a"]), step("c", &[])],
        ExecutionMode::FailFast,
    );
    let engine =
        MemoryEngine::with_scripts([("a", lasting(1)), ("b", lasting(60)), ("c", lasting(60))]);
    let outcome = execute(spec, engine, Some(Duration::from_secs(2))).await;

    assert_eq!(outcome.status, RunStatus::Cancelled);
    assert_eq!(outcome.state("b"), StepState::Stopped);
    assert_eq!(outcome.state("c"), StepState::Stopped);
    assert_all_removed(&outcome);
}

#[tokio::test(start_paused = true)]
async fn parallelism_limit_caps_running_steps() {
    let steps: Vec<StepSpec> = ["s1", "s2", "s3", "s4", "s5", "s6"]
        .iter()
        .map(|name| step(name, &[]))
        .collect();
    let mut limited = spec(steps.clone(), ExecutionMode::FailFast);
    limited.max_parallelism = Some(2);
    let outcome = execute(limited, MemoryEngine::default(), None).await;
    assert_eq!(outcome.status, RunStatus::Succeeded);
    assert_eq!(outcome.engine.max_running(), 2);

    let unlimited = spec(steps, ExecutionMode::FailFast);
    let outcome = execute(unlimited, MemoryEngine::default(), None).await;
    assert_eq!(outcome.engine.max_running(), 6);
}

#[tokio::test(start_paused = true)]
async fn fail_fast_stops_running_steps() {
    let spec = spec(
        vec![
            step("bad", &[]),
            step("long", &[]),
            step("after_long", &["long"]),
        ],
        ExecutionMode::FailFast,
    );
    let engine = MemoryEngine::with_scripts([("bad", failing_after(1)), ("long", lasting(60))]);
    let outcome = execute(spec, engine, None).await;

    assert_eq!(outcome.status, RunStatus::Failed);
    assert_eq!(outcome.state("bad"), StepState::Failed);
    assert_eq!(outcome.state("long"), StepState::Stopped);
    assert_eq!(outcome.state("after_long"), StepState::Skipped);
    assert!(!outcome.started("after_long"));
    assert!(outcome.message("long").contains("step `bad` failed"));
    assert!(outcome
        .message("after_long")
        .contains("step `bad` failed (execution mode fail_fast)"));
}

#[tokio::test(start_paused = true)]
async fn stop_on_failure_lets_running_steps_finish() {
    let spec = spec(
        vec![
            step("bad", &[]),
            step("long", &[]),
            step("after_long", &["long"]),
        ],
        ExecutionMode::StopOnFailure,
    );
    let engine = MemoryEngine::with_scripts([("bad", failing_after(1)), ("long", lasting(5))]);
    let outcome = execute(spec, engine, None).await;

    assert_eq!(outcome.status, RunStatus::Failed);
    assert_eq!(outcome.state("long"), StepState::Succeeded);
    assert_eq!(outcome.state("after_long"), StepState::Skipped);
    assert!(!outcome.started("after_long"));
}

#[tokio::test(start_paused = true)]
async fn continue_on_failure_skips_only_downstream() {
    let spec = spec(
        vec![
            step("bad", &[]),
            step("bad_child", &["bad"]),
            step("bad_grandchild", &["bad_child"]),
            step("good", &[]),
            step("good_child", &["good"]),
            step("join", &["bad_child", "good_child"]),
        ],
        ExecutionMode::ContinueOnFailure,
    );
    let engine = MemoryEngine::with_scripts([("bad", failing_after(1)), ("good", lasting(3))]);
    let outcome = execute(spec, engine, None).await;

    assert_eq!(outcome.status, RunStatus::Failed);
    assert_eq!(outcome.state("bad"), StepState::Failed);
    assert_eq!(outcome.state("bad_child"), StepState::Skipped);
    assert_eq!(outcome.state("bad_grandchild"), StepState::Skipped);
    assert_eq!(outcome.state("join"), StepState::Skipped);
    assert_eq!(outcome.state("good"), StepState::Succeeded);
    assert_eq!(outcome.state("good_child"), StepState::Succeeded);
    assert!(outcome
        .message("bad_grandchild")
        .contains("upstream step `bad` failed"));
}

#[tokio::test(start_paused = true)]
async fn cancel_stops_running_and_skips_waiting() {
    let spec = spec(
        vec![step("a", &[]), step("b", &[]), step("c", &["a"])],
        ExecutionMode::ContinueOnFailure,
    );
    let engine = MemoryEngine::with_scripts([("a", lasting(60)), ("b", lasting(60))]);
    let outcome = execute(spec, engine, Some(Duration::from_secs(2))).await;

    assert_eq!(outcome.status, RunStatus::Cancelled);
    assert_eq!(outcome.state("a"), StepState::Stopped);
    assert_eq!(outcome.state("b"), StepState::Stopped);
    assert_eq!(outcome.state("c"), StepState::Skipped);
    assert!(outcome.message("c").contains("cancelled"));
    let records = outcome.engine.records();
    assert!(records.contains(&Record::Stopped("a".into())));
    assert!(records.contains(&Record::Stopped("b".into())));
}

#[tokio::test(start_paused = true)]
async fn failure_message_has_exit_code_and_output() {
    let spec = spec(vec![step("bad", &[])], ExecutionMode::FailFast);
    let engine = MemoryEngine::with_scripts([("bad", failing_after(1))]);
    let outcome = execute(spec, engine, None).await;

    let message = outcome.message("bad");
    assert!(
        message.contains("step `bad` failed with exit code 3"),
        "{message}"
    );
    assert!(message.contains("ValueError: bad row"), "{message}");
    assert_eq!(outcome.final_steps()["bad"].exit_code, Some(3));
}

#[tokio::test(start_paused = true)]
async fn oom_failure_names_memory_limit() {
    let mut hungry = step("hungry", &[]);
    hungry.container.resources = Resources {
        memory_bytes: Some(64 << 20),
        ..Default::default()
    };
    let spec = spec(vec![hungry], ExecutionMode::FailFast);
    let script = Script {
        exit_code: 137,
        oom_killed: true,
        ..Default::default()
    };
    let outcome = execute(spec, MemoryEngine::with_scripts([("hungry", script)]), None).await;

    let report = &outcome.final_steps()["hungry"];
    assert!(report.oom_killed);
    let message = report.message.clone().unwrap();
    assert!(message.contains("ran out of memory"), "{message}");
    assert!(message.contains("64.0 MiB"), "{message}");
}

#[tokio::test(start_paused = true)]
async fn start_error_fails_step() {
    let spec = spec(
        vec![step("broken", &[]), step("child", &["broken"])],
        ExecutionMode::ContinueOnFailure,
    );
    let script = Script {
        start_error: true,
        ..Default::default()
    };
    let outcome = execute(spec, MemoryEngine::with_scripts([("broken", script)]), None).await;

    assert_eq!(outcome.state("broken"), StepState::Failed);
    assert!(outcome.message("broken").contains("could not run"));
    assert_eq!(outcome.state("child"), StepState::Skipped);
}

#[tokio::test(start_paused = true)]
async fn events_carry_output_then_finish_last() {
    let spec = spec(vec![step("talker", &[])], ExecutionMode::FailFast);
    let script = Script {
        output: vec!["hello".into(), "world".into()],
        ..Default::default()
    };
    let outcome = execute(spec, MemoryEngine::with_scripts([("talker", script)]), None).await;

    let lines: Vec<&str> = outcome
        .events
        .iter()
        .filter_map(|event| match event {
            Event::Log { step, line, .. } if step == "talker" => Some(line.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(lines, vec!["hello", "world"]);
    let states: Vec<StepState> = outcome
        .events
        .iter()
        .filter_map(|event| match event {
            Event::Step { report, .. } => Some(report.state),
            _ => None,
        })
        .collect();
    assert_eq!(states, vec![StepState::Running, StepState::Succeeded]);
    assert!(matches!(
        outcome.events.last(),
        Some(Event::RunFinished { .. })
    ));
}

fn retrying(name: &str, max_retries: u32, delay_secs: u64) -> StepSpec {
    let mut spec = step(name, &[]);
    spec.retry = Some(RetryPolicy {
        max_retries,
        delay_secs,
        backoff: 2.0,
    });
    spec
}

fn retry_events(outcome: &Outcome, step_name: &str) -> Vec<StepReport> {
    outcome
        .events
        .iter()
        .filter_map(|event| match event {
            Event::Step { step, report }
                if step == step_name && report.state == StepState::Retrying =>
            {
                Some(report.clone())
            }
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn retry_succeeds_on_second_attempt() {
    let spec = spec(
        vec![retrying("flaky", 2, 5), step("after", &["flaky"])],
        ExecutionMode::FailFast,
    );
    // Only the first attempt's container, named like the step, fails.
    let engine = MemoryEngine::with_scripts([("flaky", failing_after(1))]);
    let outcome = execute(spec, engine, None).await;

    assert_eq!(outcome.status, RunStatus::Succeeded);
    assert_eq!(outcome.state("flaky"), StepState::Succeeded);
    assert_eq!(outcome.final_steps()["flaky"].attempt, 2);
    assert_eq!(outcome.state("after"), StepState::Succeeded);
    let retries = retry_events(&outcome, "flaky");
    assert_eq!(retries.len(), 1);
    assert_eq!(retries[0].exit_code, Some(3));
    let message = retries[0].message.clone().unwrap();
    assert!(message.contains("exit code 3"), "{message}");
    assert!(message.contains("attempt 2 of 3"), "{message}");
    assert!(outcome.started("flaky-retry1"));
}

#[tokio::test(start_paused = true)]
async fn retry_waits_for_growing_delay() {
    let spec = spec(vec![retrying("flaky", 2, 5)], ExecutionMode::FailFast);
    let engine = MemoryEngine::with_scripts([
        ("flaky", failing_after(1)),
        ("flaky-retry1", failing_after(1)),
    ]);
    let started = tokio::time::Instant::now();
    let outcome = execute(spec, engine, None).await;

    assert_eq!(outcome.state("flaky"), StepState::Succeeded);
    assert_eq!(outcome.final_steps()["flaky"].attempt, 3);
    // Paused clock: 1 s + 5 s delay + 1 s + 10 s delay + 1 s, exactly, and the removal
    // of the last container. The failed attempts' removals overlap the delays.
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(18) + Script::DEFAULT_REMOVAL_TIME
    );
}

#[tokio::test(start_paused = true)]
async fn retries_exhausted_fail_step() {
    let spec = spec(
        vec![retrying("bad", 2, 0), step("after", &["bad"])],
        ExecutionMode::ContinueOnFailure,
    );
    let engine = MemoryEngine::with_scripts([
        ("bad", failing_after(1)),
        ("bad-retry1", failing_after(1)),
        ("bad-retry2", failing_after(1)),
    ]);
    let outcome = execute(spec, engine, None).await;

    assert_eq!(outcome.status, RunStatus::Failed);
    assert_eq!(outcome.state("bad"), StepState::Failed);
    assert_eq!(outcome.final_steps()["bad"].attempt, 3);
    assert_eq!(retry_events(&outcome, "bad").len(), 2);
    assert_eq!(outcome.state("after"), StepState::Skipped);
}

#[tokio::test(start_paused = true)]
async fn timeout_stops_step_as_timed_out() {
    let mut slow = step("slow", &[]);
    slow.timeout_secs = Some(5);
    let spec = spec(vec![slow], ExecutionMode::FailFast);
    let engine = MemoryEngine::with_scripts([("slow", lasting(60))]);
    let outcome = execute(spec, engine, None).await;

    let report = &outcome.final_steps()["slow"];
    assert_eq!(report.state, StepState::Failed);
    assert!(report.timed_out);
    assert!(!report.oom_killed);
    let message = report.message.clone().unwrap();
    assert!(message.contains("timed out after 5 s"), "{message}");
    assert!(outcome
        .engine
        .records()
        .contains(&Record::Stopped("slow".into())));
}

#[tokio::test(start_paused = true)]
async fn timeout_is_retried() {
    let mut slow = retrying("slow", 1, 0);
    slow.timeout_secs = Some(5);
    let spec = spec(vec![slow], ExecutionMode::FailFast);
    let engine = MemoryEngine::with_scripts([("slow", lasting(60)), ("slow-retry1", lasting(1))]);
    let outcome = execute(spec, engine, None).await;

    assert_eq!(outcome.state("slow"), StepState::Succeeded);
    let retries = retry_events(&outcome, "slow");
    assert_eq!(retries.len(), 1);
    assert!(retries[0].timed_out);
}

#[tokio::test(start_paused = true)]
async fn cancel_during_retry_delay_ends_step() {
    let spec = spec(vec![retrying("flaky", 3, 60)], ExecutionMode::FailFast);
    let engine = MemoryEngine::with_scripts([("flaky", failing_after(1))]);
    let outcome = execute(spec, engine, Some(Duration::from_secs(10))).await;

    assert_eq!(outcome.status, RunStatus::Cancelled);
    assert_eq!(outcome.final_steps()["flaky"].attempt, 1);
    assert!(!outcome.started("flaky-retry1"));
}

#[tokio::test(start_paused = true)]
async fn drain_lets_running_finish() {
    let spec = spec(
        vec![
            step("long", &[]),
            step("after_long", &["long"]),
            step("other", &[]),
        ],
        ExecutionMode::FailFast,
    );
    let engine = MemoryEngine::with_scripts([("long", lasting(10)), ("other", lasting(3))]);
    let outcome = execute_controlled(spec, engine, None, Some(Duration::from_secs(1))).await;

    assert_eq!(outcome.status, RunStatus::Stopped);
    assert_eq!(outcome.state("long"), StepState::Succeeded);
    assert_eq!(outcome.state("other"), StepState::Succeeded);
    assert_eq!(outcome.state("after_long"), StepState::Skipped);
    assert!(!outcome.started("after_long"));
    assert!(outcome.message("after_long").contains("graceful stop"));
}

#[tokio::test(start_paused = true)]
async fn drain_with_failure_is_failed() {
    let spec = spec(
        vec![step("bad", &[]), step("after", &["bad"])],
        ExecutionMode::ContinueOnFailure,
    );
    let engine = MemoryEngine::with_scripts([("bad", failing_after(3))]);
    let outcome = execute_controlled(spec, engine, None, Some(Duration::from_secs(1))).await;

    assert_eq!(outcome.status, RunStatus::Failed);
}

/// Returns the names of the steps in the order the engine started them.
fn start_order(outcome: &Outcome) -> Vec<String> {
    outcome
        .engine
        .records()
        .into_iter()
        .filter_map(|record| match record {
            Record::Started(name) => Some(name),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn limited_fan_out_keeps_spec_order() {
    // Spec order differs from name order, so the test checks which of the two decides.
    let branches: Vec<String> = (0..200).rev().map(|i| format!("branch{i:03}")).collect();
    let mut steps = vec![step("root", &[])];
    steps.extend(branches.iter().map(|name| step(name, &["root"])));
    let branch_names: Vec<&str> = branches.iter().map(String::as_str).collect();
    steps.push(step("join", &branch_names));
    let mut limited = spec(steps, ExecutionMode::FailFast);
    limited.max_parallelism = Some(4);
    let outcome = execute(limited, MemoryEngine::default(), None).await;

    assert_eq!(outcome.status, RunStatus::Succeeded);
    assert_eq!(outcome.engine.max_running(), 4);
    let mut expected = vec!["root".to_string()];
    expected.extend(branches.iter().cloned());
    expected.push("join".into());
    assert_eq!(start_order(&outcome), expected);
}

#[tokio::test(start_paused = true)]
async fn newly_ready_step_precedes_later_spec_steps() {
    // With one slot, `child` becomes ready when `parent` ends and goes before the
    // independent steps listed after it, which were ready all along.
    let mut one_at_a_time = spec(
        vec![
            step("parent", &[]),
            step("child", &["parent"]),
            step("independent1", &[]),
            step("independent2", &[]),
        ],
        ExecutionMode::FailFast,
    );
    one_at_a_time.max_parallelism = Some(1);
    let outcome = execute(one_at_a_time, MemoryEngine::default(), None).await;

    assert_eq!(outcome.status, RunStatus::Succeeded);
    assert_eq!(
        start_order(&outcome),
        ["parent", "child", "independent1", "independent2"]
    );
}

#[tokio::test(start_paused = true)]
async fn step_waits_for_its_last_upstream() {
    let spec = spec(
        vec![
            step("fast", &[]),
            step("slow", &[]),
            step("join", &["fast", "slow"]),
        ],
        ExecutionMode::FailFast,
    );
    let engine = MemoryEngine::with_scripts([("fast", lasting(1)), ("slow", lasting(5))]);
    let outcome = execute(spec, engine, None).await;

    assert_eq!(outcome.status, RunStatus::Succeeded);
    assert!(
        outcome.position(Record::Exited("slow".into()))
            < outcome.position(Record::Started("join".into()))
    );
}

#[tokio::test(start_paused = true)]
async fn repeated_upstream_name_still_releases_step() {
    let spec = spec(
        vec![step("a", &[]), step("b", &["a", "a"])],
        ExecutionMode::FailFast,
    );
    let outcome = execute(spec, MemoryEngine::default(), None).await;

    assert_eq!(outcome.status, RunStatus::Succeeded);
    assert!(outcome.started("b"));
}

#[tokio::test(start_paused = true)]
async fn continue_on_failure_skips_failed_join() {
    // `good` succeeds after `bad` failed, which must not make `join` ready.
    let spec = spec(
        vec![
            step("bad", &[]),
            step("good", &[]),
            step("join", &["bad", "good"]),
            step("after_good", &["good"]),
        ],
        ExecutionMode::ContinueOnFailure,
    );
    let engine = MemoryEngine::with_scripts([("bad", failing_after(1)), ("good", lasting(3))]);
    let outcome = execute(spec, engine, None).await;

    assert_eq!(outcome.status, RunStatus::Failed);
    assert_eq!(outcome.state("join"), StepState::Skipped);
    assert!(!outcome.started("join"));
    assert!(outcome
        .message("join")
        .contains("upstream step `bad` failed"));
    assert_eq!(outcome.state("after_good"), StepState::Succeeded);
}

#[tokio::test(start_paused = true)]
async fn zero_duration_steps_finish_without_timer() {
    let instant = Script {
        duration: Duration::ZERO,
        removal_time: Duration::ZERO,
        ..Default::default()
    };
    let steps = (0..50).map(|i| format!("s{i}")).collect::<Vec<_>>();
    let chain: Vec<StepSpec> = steps
        .iter()
        .enumerate()
        .map(|(i, name)| match i {
            0 => step(name, &[]),
            _ => step(name, &[steps[i - 1].as_str()]),
        })
        .collect();
    let engine = MemoryEngine::default().with_default_script(instant);
    let started = tokio::time::Instant::now();
    let outcome = execute(spec(chain, ExecutionMode::FailFast), engine, None).await;

    assert_eq!(outcome.status, RunStatus::Succeeded);
    // The clock is paused and advances only when every task waits on a timer, so a
    // run that never sleeps ends at the instant it began.
    assert_eq!(tokio::time::Instant::now(), started);
}

#[test]
fn format_bytes_picks_readable_unit() {
    assert_eq!(step::format_bytes(512), "512 B");
    assert_eq!(step::format_bytes(64 << 20), "64.0 MiB (67108864 bytes)");
    assert_eq!(step::format_bytes(3 << 30), "3.0 GiB (3221225472 bytes)");
}
