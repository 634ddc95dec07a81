//! Integration tests of `DockerEngine` against the real Docker daemon.
//!
//! The tests run the busybox test image built by `scripts/build-test-image.sh` (the
//! environment variable `ZENML_DOCKER_RS_TEST_IMAGE` overrides its name). They fail,
//! and are never skipped, when the daemon or the image is missing.
//!
//! Every container carries two labels: `io.zenml.docker-rs.test` with a value unique to
//! this test process, and `io.zenml.docker-rs.test-case` with the test's name. A
//! [`TestCase`] guard removes the containers carrying both labels when the test ends,
//! also when it panics, and never touches other containers, because other test runs
//! may share the daemon.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::future::Future;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::errors::Error as DockerError;
use bollard::models::ContainerInspectResponse;
use bollard::query_parameters::{ListContainersOptionsBuilder, RemoveContainerOptionsBuilder};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use zenml_docker_rs::engine::docker::DockerEngine;
use zenml_docker_rs::engine::{ContainerEngine, ContainerExit, StopSignal, StopTrigger};
use zenml_docker_rs::error::Error;
use zenml_docker_rs::events::{Event, OutputStream};
use zenml_docker_rs::logs::{OutputSink, MAX_LINE_BYTES, TAIL_LINES};
use zenml_docker_rs::spec::{ContainerSpec, Mount, MountKind, Resources};

const RUN_LABEL: &str = "io.zenml.docker-rs.test";
const CASE_LABEL: &str = "io.zenml.docker-rs.test-case";
const DEFAULT_TEST_IMAGE: &str = "zenml-docker-rs-test/busybox:latest";

/// Step name given to every `OutputSink`; each Log event must carry it.
const STEP: &str = "step";

/// Upper bound for anything a test waits for, so that a bug makes the test fail
/// instead of hang. It is a hang guard, not a performance assertion.
const HANG_GUARD: Duration = Duration::from_secs(120);

fn test_image() -> String {
    std::env::var("ZENML_DOCKER_RS_TEST_IMAGE").unwrap_or_else(|_| DEFAULT_TEST_IMAGE.to_string())
}

/// Value of the run label: unique to this test process, from its id and start time.
fn run_id() -> &'static str {
    static RUN_ID: OnceLock<String> = OnceLock::new();
    RUN_ID.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("the system clock is before 1970")
            .as_nanos();
        format!("{:x}-{:x}", std::process::id(), nanos)
    })
}

async fn guarded<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(HANG_GUARD, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {HANG_GUARD:?}"))
}

fn is_not_found(error: &DockerError) -> bool {
    matches!(
        error,
        DockerError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// Lists the ids of the containers, running or not, that carry both test labels.
async fn labelled_containers(
    engine: &DockerEngine,
    case: &str,
) -> Result<Vec<String>, DockerError> {
    let filters = HashMap::from([(
        "label",
        vec![
            format!("{RUN_LABEL}={}", run_id()),
            format!("{CASE_LABEL}={case}"),
        ],
    )]);
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    let containers = engine.client().list_containers(Some(options)).await?;
    Ok(containers.into_iter().filter_map(|c| c.id).collect())
}

/// One test's connection to Docker and the guard over the containers it creates.
struct TestCase {
    case: &'static str,
    engine: DockerEngine,
    containers_made: usize,
}

impl TestCase {
    /// Connects to the daemon and checks the test image, panicking with what to do
    /// when either is missing.
    async fn new(case: &'static str) -> Self {
        let engine = guarded("connecting to Docker", DockerEngine::connect(None))
            .await
            .unwrap_or_else(|e| {
                panic!("these tests need a running Docker daemon (set DOCKER_HOST to use another one): {e}")
            });
        let image = test_image();
        if let Err(e) = engine.client().inspect_image(&image).await {
            panic!(
                "test image `{image}` is not available ({e}); build it with \
                 scripts/build-test-image.sh or set ZENML_DOCKER_RS_TEST_IMAGE"
            );
        }
        TestCase {
            case,
            engine,
            containers_made: 0,
        }
    }

    /// Returns a spec that runs `script` with `sh -c` under a fresh unique name, with
    /// the test labels and a 1-second stop grace period.
    fn spec(&mut self, script: &str) -> ContainerSpec {
        self.containers_made += 1;
        ContainerSpec {
            name: format!(
                "zdrs-test-{}-{}-{}",
                run_id(),
                self.case,
                self.containers_made
            ),
            image: test_image(),
            command: vec!["sh".into(), "-c".into(), script.into()],
            labels: BTreeMap::from([
                (RUN_LABEL.to_string(), run_id().to_string()),
                (CASE_LABEL.to_string(), self.case.to_string()),
            ]),
            stop_grace_period_secs: 1,
            ..Default::default()
        }
    }

    /// Runs `spec` to the end and returns its result with every event it sent.
    async fn run(&self, spec: &ContainerSpec) -> Finished {
        self.start(spec).finish().await
    }

    /// Starts `run_container` in a task, so the test can act while the container runs.
    fn start(&self, spec: &ContainerSpec) -> Running {
        let (trigger, signal) = StopSignal::new();
        self.start_with_stop(spec, trigger, signal)
    }

    fn start_with_stop(
        &self,
        spec: &ContainerSpec,
        trigger: StopTrigger,
        signal: StopSignal,
    ) -> Running {
        let (events_tx, events_rx) = mpsc::channel(64);
        let engine = self.engine.clone();
        let spec = spec.clone();
        let task = tokio::spawn(async move {
            let mut output = OutputSink::new(STEP, events_tx);
            let exit = engine.run_container(&spec, &mut output, signal).await;
            // Dropping the sink here closes the event channel when the run ends.
            (exit, output.tail())
        });
        Running {
            task,
            engine: self.engine.clone(),
            events: events_rx,
            seen: Vec::new(),
            trigger,
        }
    }

    /// Inspects a container by id or name; `None` when it does not exist.
    async fn inspect(&self, container: &str) -> Option<ContainerInspectResponse> {
        match self
            .engine
            .client()
            .inspect_container(container, None)
            .await
        {
            Ok(response) => Some(response),
            Err(e) if is_not_found(&e) => None,
            Err(e) => panic!("inspecting container `{container}` failed: {e}"),
        }
    }

    async fn assert_removed(&self, container: &str) {
        assert!(
            self.inspect(container).await.is_none(),
            "container `{container}` still exists, but run_container should have removed it"
        );
    }

    async fn remove(&self, container: &str) {
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        self.engine
            .client()
            .remove_container(container, Some(options))
            .await
            .unwrap_or_else(|e| panic!("removing container `{container}` failed: {e}"));
    }

    /// Asserts that no container of this test exists any more.
    async fn assert_no_leftovers(&self) {
        let leftovers = labelled_containers(&self.engine, self.case)
            .await
            .unwrap_or_else(|e| panic!("listing the test's containers failed: {e}"));
        assert!(
            leftovers.is_empty(),
            "test `{}` left containers behind: {leftovers:?}",
            self.case
        );
    }
}

impl Drop for TestCase {
    /// Removes the containers this test left, even when it panicked. Drop cannot await,
    /// so the removal runs on its own thread and runtime and this waits for it.
    fn drop(&mut self) {
        let host = self.engine.host().to_string();
        let case = self.case;
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cannot start a runtime for the cleanup");
            runtime.block_on(async {
                let engine = DockerEngine::connect(Some(&host)).await?;
                let options = RemoveContainerOptionsBuilder::new()
                    .force(true)
                    .v(true)
                    .build();
                for id in labelled_containers(&engine, case)
                    .await
                    .map_err(|e| e.to_string())?
                {
                    if let Err(e) = engine
                        .client()
                        .remove_container(&id, Some(options.clone()))
                        .await
                    {
                        if !is_not_found(&e) {
                            eprintln!(
                                "cleanup of test `{case}`: removing container {id} failed: {e}"
                            );
                        }
                    }
                }
                Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
            })
        });
        match cleanup.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("cleanup of test `{case}` failed: {e}"),
            Err(_) => eprintln!("cleanup of test `{case}` panicked"),
        }
    }
}

/// A `run_container` call in progress.
struct Running {
    task: JoinHandle<(Result<ContainerExit, Error>, Vec<String>)>,
    engine: DockerEngine,
    events: mpsc::Receiver<Event>,
    /// Events already taken from the channel by `wait_for_line`.
    seen: Vec<Event>,
    trigger: StopTrigger,
}

impl Running {
    /// Waits until the container prints `text` as a whole line on stdout.
    async fn wait_for_line(&mut self, text: &str) {
        guarded(&format!("waiting for the line `{text}`"), async {
            loop {
                let event = self.events.recv().await.unwrap_or_else(|| {
                    panic!("the run ended before printing `{text}`: {:?}", self.seen)
                });
                let found = matches!(
                    &event,
                    Event::Log { stream: OutputStream::Stdout, line, .. } if line == text
                );
                self.seen.push(event);
                if found {
                    return;
                }
            }
        })
        .await
    }

    fn stop(&self) {
        self.trigger.fire();
    }

    /// Takes every remaining event, then the result of `run_container`, and waits
    /// until the engine finished removing the container.
    async fn finish(mut self) -> Finished {
        guarded("run_container", async {
            let mut events = std::mem::take(&mut self.seen);
            while let Some(event) = self.events.recv().await {
                events.push(event);
            }
            let (exit, tail) = self.task.await.expect("the run_container task panicked");
            self.engine.finish_removals().await;
            Finished { exit, events, tail }
        })
        .await
    }
}

/// What one `run_container` call returned and sent.
struct Finished {
    exit: Result<ContainerExit, Error>,
    events: Vec<Event>,
    /// `OutputSink::tail()` after the run.
    tail: Vec<String>,
}

impl Finished {
    fn exit(&self) -> &ContainerExit {
        match &self.exit {
            Ok(exit) => exit,
            Err(e) => panic!("run_container failed: {e}"),
        }
    }

    /// Returns the Log events of `stream` as `(line, continued)`, in arrival order, and
    /// checks that every event carries the sink's step name.
    fn pieces(&self, stream: OutputStream) -> Vec<(String, bool)> {
        let mut pieces = Vec::new();
        for event in &self.events {
            let Event::Log {
                step,
                stream: s,
                line,
                continued,
            } = event
            else {
                panic!("OutputSink sent an event that is not a Log event: {event:?}");
            };
            assert_eq!(step, STEP, "Log event with the wrong step name: {event:?}");
            if *s == stream {
                pieces.push((line.clone(), *continued));
            }
        }
        pieces
    }

    /// Returns the whole lines of `stream`, failing when a line came in pieces.
    fn lines(&self, stream: OutputStream) -> Vec<String> {
        self.pieces(stream)
            .into_iter()
            .map(|(line, continued)| {
                assert!(!continued, "unexpected continued piece: {line:?}");
                line
            })
            .collect()
    }
}

#[tokio::test]
async fn run_container_streams_output_and_removes() {
    let mut test = TestCase::new("streams-output").await;
    let spec = test.spec(
        "echo out1; echo err1 >&2; echo out2; echo err2 >&2; echo out3; echo err3 >&2; exit 0",
    );

    let finished = test.run(&spec).await;
    let exit = finished.exit();

    assert_eq!(exit.exit_code, 0);
    assert!(!exit.oom_killed);
    assert!(!exit.stopped);
    assert!(!exit.kept);
    assert!(exit.succeeded());
    assert!(!exit.container_id.is_empty());
    assert_eq!(
        finished.lines(OutputStream::Stdout),
        ["out1", "out2", "out3"]
    );
    assert_eq!(
        finished.lines(OutputStream::Stderr),
        ["err1", "err2", "err3"]
    );
    test.assert_removed(&exit.container_id).await;
    test.assert_removed(&spec.name).await;
    test.assert_no_leftovers().await;
}

#[tokio::test]
async fn finish_removals_waits_for_removal() {
    let mut test = TestCase::new("finish-removals").await;
    let spec = test.spec("echo done");
    // The receiver stays open so that the output reaches a live channel.
    let (events_tx, _events_rx) = mpsc::channel(64);
    let mut output = OutputSink::new(STEP, events_tx);
    let (_trigger, signal) = StopSignal::new();

    let exit = guarded(
        "run_container",
        test.engine.run_container(&spec, &mut output, signal),
    )
    .await
    .unwrap_or_else(|e| panic!("run_container failed: {e}"));
    assert!(exit.succeeded());
    guarded("finish_removals", test.engine.finish_removals()).await;

    test.assert_removed(&exit.container_id).await;
    test.assert_no_leftovers().await;
}

#[tokio::test]
async fn run_container_reports_exit_code() {
    let mut test = TestCase::new("exit-code").await;
    let spec = test.spec("echo failing >&2; exit 3");

    let finished = test.run(&spec).await;
    let exit = finished.exit();

    assert_eq!(exit.exit_code, 3);
    assert!(!exit.oom_killed);
    assert!(!exit.stopped);
    assert!(!exit.kept);
    assert!(!exit.succeeded());
    assert_eq!(finished.lines(OutputStream::Stderr), ["failing"]);
    test.assert_removed(&exit.container_id).await;
    test.assert_no_leftovers().await;
}

#[tokio::test]
async fn run_container_keeps_failed_when_asked() {
    let mut test = TestCase::new("keep-failed").await;
    let mut spec = test.spec("exit 3");
    spec.keep_if_failed = true;

    let finished = test.run(&spec).await;
    let exit = finished.exit();

    assert_eq!(exit.exit_code, 3);
    assert!(exit.kept);
    assert!(!exit.stopped);
    let inspect = test
        .inspect(&exit.container_id)
        .await
        .expect("the failed container should have been kept");
    let state = inspect.state.expect("inspect returned no state");
    assert_eq!(state.exit_code, Some(3));
    assert_eq!(state.running, Some(false));

    test.remove(&exit.container_id).await;
    test.assert_no_leftovers().await;
}

#[tokio::test]
async fn run_container_sets_log_driver() {
    let mut test = TestCase::new("log-driver").await;
    // Kept on failure so that its host config can be inspected afterwards.
    let mut spec = test.spec("echo through attach; exit 4");
    spec.keep_if_failed = true;
    spec.log_driver = Some("none".into());

    let finished = test.run(&spec).await;
    let exit = finished.exit();

    assert_eq!(exit.exit_code, 4);
    assert_eq!(
        finished.lines(OutputStream::Stdout),
        vec!["through attach".to_string()]
    );
    let inspect = test
        .inspect(&exit.container_id)
        .await
        .expect("the failed container should have been kept");
    let log_config = inspect
        .host_config
        .and_then(|config| config.log_config)
        .expect("inspect returned no log config");
    assert_eq!(log_config.typ.as_deref(), Some("none"));

    test.remove(&exit.container_id).await;
    test.assert_no_leftovers().await;
}

#[tokio::test]
async fn run_container_keep_if_failed_removes_success() {
    let mut test = TestCase::new("keep-success").await;
    let mut spec = test.spec("exit 0");
    spec.keep_if_failed = true;

    let finished = test.run(&spec).await;
    let exit = finished.exit();

    assert_eq!(exit.exit_code, 0);
    assert!(!exit.kept);
    test.assert_removed(&exit.container_id).await;
    test.assert_no_leftovers().await;
}

#[tokio::test]
async fn run_container_reports_oom_kill() {
    let mut test = TestCase::new("oom").await;
    // `tail` keeps the last lines of its input in memory, and /dev/zero is one endless
    // line, so its memory grows until the kernel kills it.
    let mut spec = test.spec("echo allocating; tail /dev/zero");
    spec.resources = Resources {
        memory_bytes: Some(24 << 20),
        ..Default::default()
    };

    let finished = test.run(&spec).await;
    let exit = finished.exit();

    assert!(exit.oom_killed, "expected an OOM kill, got {exit:?}");
    assert_eq!(exit.exit_code, 137);
    assert!(!exit.stopped);
    assert!(!exit.kept);
    assert_eq!(finished.lines(OutputStream::Stdout), ["allocating"]);
    test.assert_removed(&exit.container_id).await;
    test.assert_no_leftovers().await;
}

#[tokio::test]
async fn stop_kills_sleeping_container() {
    let mut test = TestCase::new("stop-sleeping").await;
    // The shell is PID 1 of the container, and the kernel does not apply the default
    // action of SIGTERM to PID 1, so only the SIGKILL after the grace period ends it.
    let spec = test.spec("echo ready; sleep 1000");

    let mut running = test.start(&spec);
    running.wait_for_line("ready").await;
    running.stop();
    let finished = running.finish().await;
    let exit = finished.exit();

    assert!(exit.stopped);
    assert!(
        !exit.oom_killed,
        "a SIGKILL from stop must not count as an OOM kill"
    );
    assert_eq!(exit.exit_code, 137);
    assert!(!exit.kept);
    test.assert_removed(&exit.container_id).await;
    test.assert_no_leftovers().await;
}

#[tokio::test]
async fn stop_lets_trapping_container_exit() {
    let mut test = TestCase::new("stop-trap").await;
    // `wait` returns when a trapped signal arrives, unlike a foreground `sleep`.
    let mut spec = test.spec("trap 'echo terminating; exit 0' TERM; echo ready; sleep 1000 & wait");
    // A grace period this long means exit code 0 can only come from the trap.
    spec.stop_grace_period_secs = 60;

    let mut running = test.start(&spec);
    running.wait_for_line("ready").await;
    running.stop();
    let finished = running.finish().await;
    let exit = finished.exit();

    assert!(exit.stopped);
    assert_eq!(exit.exit_code, 0);
    assert!(!exit.oom_killed);
    assert!(
        !exit.succeeded(),
        "a stopped container must not count as succeeded"
    );
    assert_eq!(
        finished.lines(OutputStream::Stdout),
        ["ready", "terminating"]
    );
    test.assert_removed(&exit.container_id).await;
    test.assert_no_leftovers().await;
}

#[tokio::test]
async fn stop_kills_container_ignoring_sigterm() {
    let mut test = TestCase::new("stop-ignore").await;
    let spec = test.spec("trap '' TERM; echo ready; sleep 1000 & wait");

    let mut running = test.start(&spec);
    running.wait_for_line("ready").await;
    running.stop();
    let finished = running.finish().await;
    let exit = finished.exit();

    assert!(exit.stopped);
    assert_eq!(exit.exit_code, 137);
    assert!(
        !exit.oom_killed,
        "a SIGKILL from stop must not count as an OOM kill"
    );
    test.assert_removed(&exit.container_id).await;
    test.assert_no_leftovers().await;
}

#[tokio::test]
async fn stop_removes_container_despite_keep() {
    let mut test = TestCase::new("stop-keep").await;
    // keep_if_failed keeps failed containers, but a stopped one is not a failure.
    let mut spec = test.spec("echo ready; sleep 1000");
    spec.keep_if_failed = true;

    let mut running = test.start(&spec);
    running.wait_for_line("ready").await;
    running.stop();
    let finished = running.finish().await;
    let exit = finished.exit();

    assert!(exit.stopped);
    assert!(!exit.kept);
    test.assert_removed(&exit.container_id).await;
    test.assert_no_leftovers().await;
}

#[tokio::test]
async fn stop_before_start_runs_nothing() {
    let mut test = TestCase::new("stop-before-start").await;
    let spec = test.spec("echo started");
    let (trigger, signal) = StopSignal::new();
    trigger.fire();

    let finished = test.start_with_stop(&spec, trigger, signal).finish().await;
    let exit = finished.exit();

    assert!(exit.stopped);
    assert!(!exit.oom_killed);
    assert!(!exit.kept);
    assert!(
        finished.events.is_empty(),
        "the container printed: {:?}",
        finished.events
    );
    test.assert_removed(&spec.name).await;
    test.assert_no_leftovers().await;
}

#[tokio::test]
async fn output_sends_each_progress_redraw() {
    let mut test = TestCase::new("progress").await;
    let spec = test.spec(r"printf ' 10%%\r 50%%\r100%%\n'; echo done");

    let finished = test.run(&spec).await;

    assert_eq!(finished.exit().exit_code, 0);
    assert_eq!(
        finished.lines(OutputStream::Stdout),
        [" 10%", " 50%", "100%", "done"]
    );
    test.assert_no_leftovers().await;
}

#[tokio::test]
async fn output_delivers_unterminated_last_line() {
    let mut test = TestCase::new("partial-line").await;
    // The unterminated line reaches Docker's log only when the container exits, so
    // losing it is a race; repeating the run makes a loss show up.
    for iteration in 0..10 {
        let spec = test.spec("echo first; printf 'no newline'; printf 'err no newline' >&2");

        let finished = test.run(&spec).await;

        assert_eq!(finished.exit().exit_code, 0, "iteration {iteration}");
        assert_eq!(
            finished.lines(OutputStream::Stdout),
            ["first", "no newline"],
            "iteration {iteration}"
        );
        assert_eq!(
            finished.lines(OutputStream::Stderr),
            ["err no newline"],
            "iteration {iteration}"
        );
    }
    test.assert_no_leftovers().await;
}

#[tokio::test]
async fn output_keeps_all_lines_of_heavy_exit() {
    let mut test = TestCase::new("heavy-exit").await;
    // The container exits while Docker is still writing its output to the log, which
    // is when a reader that follows the log can stop early.
    let expected: Vec<String> = (1..=20000).map(|i| i.to_string()).collect();
    for iteration in 0..5 {
        let spec = test.spec("seq 1 20000; seq 1 20000 >&2");

        let finished = test.run(&spec).await;

        assert_eq!(finished.exit().exit_code, 0, "iteration {iteration}");
        let stdout = finished.lines(OutputStream::Stdout);
        let stderr = finished.lines(OutputStream::Stderr);
        assert_eq!(
            stdout.len(),
            expected.len(),
            "stdout lines, iteration {iteration}"
        );
        assert!(stdout == expected, "stdout differs, iteration {iteration}");
        assert_eq!(
            stderr.len(),
            expected.len(),
            "stderr lines, iteration {iteration}"
        );
        assert!(stderr == expected, "stderr differs, iteration {iteration}");
    }
    test.assert_no_leftovers().await;
}

#[tokio::test]
async fn output_cuts_long_line_into_pieces() {
    let mut test = TestCase::new("long-line").await;
    // One line of "1,2,...,60000," (348,894 bytes) with varied content, so a lost or
    // repeated piece changes the concatenation.
    let spec = test.spec("seq 1 60000 | tr '\\n' ,; echo; echo after");
    let expected: String = (1..=60000).map(|i| format!("{i},")).collect();

    let finished = test.run(&spec).await;
    assert_eq!(finished.exit().exit_code, 0);
    let mut pieces = finished.pieces(OutputStream::Stdout);

    let after = pieces.pop().expect("no stdout at all");
    assert_eq!(after, ("after".to_string(), false));
    let (last_text, last_continued) = pieces.last().expect("the long line is missing").clone();
    assert!(
        !last_continued,
        "the last piece of the line must not be continued"
    );
    assert!(!last_text.is_empty());
    for (index, (text, continued)) in pieces.iter().enumerate() {
        assert!(
            text.len() <= MAX_LINE_BYTES,
            "piece {index} has {} bytes, more than {MAX_LINE_BYTES}",
            text.len()
        );
        if index + 1 < pieces.len() {
            assert!(
                continued,
                "piece {index} of {} is not marked continued",
                pieces.len()
            );
        }
    }
    assert_eq!(pieces.len(), expected.len().div_ceil(MAX_LINE_BYTES));
    let whole: String = pieces.iter().map(|(text, _)| text.as_str()).collect();
    assert_eq!(whole.len(), expected.len());
    assert!(
        whole == expected,
        "the pieces do not concatenate to the original line"
    );
    test.assert_no_leftovers().await;
}

#[tokio::test]
async fn output_keeps_last_lines_of_quick_exit() {
    let mut test = TestCase::new("quick-exit").await;
    for iteration in 0..20 {
        let spec = test.spec("echo a; echo b; exit 1");

        let finished = test.run(&spec).await;
        let exit = finished.exit();

        assert_eq!(exit.exit_code, 1, "iteration {iteration}");
        assert_eq!(
            finished.lines(OutputStream::Stdout),
            ["a", "b"],
            "iteration {iteration}"
        );
        test.assert_removed(&exit.container_id).await;
    }
    test.assert_no_leftovers().await;
}

#[tokio::test]
async fn output_replaces_invalid_utf8() {
    let mut test = TestCase::new("invalid-utf8").await;
    // \377 can never occur in UTF-8, and \303 starts a 2-byte character that `(` does
    // not continue.
    let spec = test.spec(r"printf 'a\377b\n'; printf '\303(\n'; printf 'caf\303\251\n'");

    let finished = test.run(&spec).await;

    assert_eq!(finished.exit().exit_code, 0);
    assert_eq!(
        finished.lines(OutputStream::Stdout),
        ["a\u{fffd}b", "\u{fffd}(", "café"]
    );
    test.assert_no_leftovers().await;
}

#[tokio::test]
async fn output_sink_tail_holds_last_lines() {
    let mut test = TestCase::new("tail").await;
    // All on one stream: Docker does not order lines across stdout and stderr.
    let spec = test.spec(
        "i=1; while [ $i -le 30 ]; do echo line $i >&2; i=$((i+1)); done; echo fatal >&2; exit 2",
    );

    let finished = test.run(&spec).await;

    assert_eq!(finished.exit().exit_code, 2);
    let mut expected: Vec<String> = (12..=30).map(|i| format!("line {i}")).collect();
    expected.push("fatal".to_string());
    assert_eq!(expected.len(), TAIL_LINES);
    assert_eq!(finished.tail, expected);
    test.assert_no_leftovers().await;
}

#[tokio::test]
async fn create_sets_labels_and_name() {
    let mut test = TestCase::new("labels").await;
    let mut spec = test.spec("echo ready; sleep 1000");
    spec.labels.insert("io.zenml.step".into(), "trainer".into());
    spec.labels
        .insert("io.zenml.run-id".into(), "run-42".into());

    let mut running = test.start(&spec);
    running.wait_for_line("ready").await;
    let inspect = test.inspect(&spec.name).await;
    running.stop();
    let finished = running.finish().await;

    let inspect = inspect.expect("the running container was not found by its name");
    assert_eq!(
        inspect.name.as_deref(),
        Some(format!("/{}", spec.name).as_str())
    );
    assert_eq!(
        inspect.id.as_deref(),
        Some(finished.exit().container_id.as_str())
    );
    let labels = inspect.config.and_then(|c| c.labels).unwrap_or_default();
    for (key, value) in &spec.labels {
        assert_eq!(labels.get(key), Some(value), "label {key}");
    }
    test.assert_removed(&spec.name).await;
    test.assert_no_leftovers().await;
}

#[tokio::test]
async fn create_rejects_duplicate_name() {
    let mut test = TestCase::new("duplicate-name").await;
    let spec = test.spec("echo ready; sleep 1000");
    let mut duplicate = test.spec("echo duplicate");
    duplicate.name = spec.name.clone();

    let mut running = test.start(&spec);
    running.wait_for_line("ready").await;
    let second = test.run(&duplicate).await;
    running.stop();
    let first = running.finish().await;

    assert!(first.exit().stopped);
    let error = match second.exit {
        Ok(exit) => panic!("the second container with the same name ran: {exit:?}"),
        Err(e) => e,
    };
    assert!(
        matches!(&error, Error::Container { operation: "create", container, .. } if *container == spec.name),
        "unexpected error: {error:?}"
    );
    assert!(
        error.to_string().contains(&spec.name),
        "message lacks the name: {error}"
    );
    assert!(second.events.is_empty());
    test.assert_removed(&spec.name).await;
    test.assert_no_leftovers().await;
}

#[tokio::test]
async fn connect_reports_unreachable_daemon() {
    let address = "unix:///nonexistent/docker.sock";

    let result = guarded(
        "connecting to a missing socket",
        DockerEngine::connect(Some(address)),
    )
    .await;

    let error = match result {
        Ok(engine) => panic!("connected to {address}, host {}", engine.host()),
        Err(e) => e,
    };
    assert!(
        matches!(&error, Error::DockerUnavailable { host, .. } if host == address),
        "unexpected error: {error:?}"
    );
    assert!(
        error.to_string().contains(address),
        "message lacks the address: {error}"
    );
}

#[tokio::test]
async fn connect_times_out_on_silent_daemon() {
    // A listener that is never accepted from: the kernel completes the TCP handshake,
    // so the client connects, sends its request and waits for a response that never comes.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("cannot bind a loopback port");
    let address = format!(
        "tcp://{}",
        listener.local_addr().expect("listener has no address")
    );

    let result = guarded(
        "connecting to a silent daemon",
        DockerEngine::connect(Some(&address)),
    )
    .await;

    let error = match result {
        Ok(engine) => panic!(
            "connected to a listener that never responds, host {}",
            engine.host()
        ),
        Err(e) => e,
    };
    assert!(
        matches!(&error, Error::DockerUnavailable { host, .. } if *host == address),
        "unexpected error: {error:?}"
    );
    assert!(
        error.to_string().contains(&address),
        "message lacks the address: {error}"
    );
    assert!(
        error.to_string().contains("no answer"),
        "message lacks the cause: {error}"
    );
    drop(listener);
}

#[tokio::test]
async fn ensure_image_reports_missing_image() {
    let test = TestCase::new("missing-image").await;
    let image = "zenml-docker-rs-test/does-not-exist:1";

    let result = guarded("ensure_image", test.engine.ensure_image(image)).await;

    let error =
        result.expect_err("a missing image with no registry to pull from was reported present");
    assert!(
        matches!(&error, Error::ImageUnavailable { image: named, .. } if named == image),
        "unexpected error: {error:?}"
    );
    assert!(
        error.to_string().contains(image),
        "message lacks the image: {error}"
    );
}

#[tokio::test]
async fn run_container_rejects_missing_bind_source() {
    let mut test = TestCase::new("missing-bind").await;
    let source = std::env::temp_dir().join(format!("zdrs-test-{}-missing", run_id()));
    assert!(!source.exists(), "{} should not exist", source.display());
    let source = source.to_string_lossy().into_owned();
    let mut spec = test.spec("echo started");
    spec.mounts = vec![Mount {
        kind: MountKind::Bind,
        source: source.clone(),
        target: "/data".into(),
        read_only: false,
    }];

    let finished = test.run(&spec).await;

    let error = match finished.exit {
        Ok(exit) => panic!("a container with a missing bind source ran: {exit:?}"),
        Err(e) => e,
    };
    assert!(
        matches!(&error, Error::Container { container, .. } if *container == spec.name),
        "unexpected error: {error:?}"
    );
    assert!(
        error.to_string().contains(&source),
        "message lacks the source path: {error}"
    );
    assert!(finished.events.is_empty());
    test.assert_removed(&spec.name).await;
    test.assert_no_leftovers().await;
}

#[tokio::test]
async fn env_path_append_extends_image_value() {
    let mut test = TestCase::new("path-append-image").await;
    let mut spec = test.spec("echo \"PATH=$PATH\"; echo \"PYTHONPATH=$PYTHONPATH\"");
    spec.env_path_append = BTreeMap::from([
        ("PATH".to_string(), "/extra".to_string()),
        ("PYTHONPATH".to_string(), "/pkg".to_string()),
    ]);

    let finished = test.run(&spec).await;

    assert_eq!(finished.exit().exit_code, 0);
    // The test image sets PATH=/bin and no PYTHONPATH.
    assert_eq!(
        finished.lines(OutputStream::Stdout),
        ["PATH=/bin:/extra", "PYTHONPATH=/pkg"]
    );
    test.assert_no_leftovers().await;
}

#[tokio::test]
async fn env_path_append_extends_spec_value() {
    let mut test = TestCase::new("path-append-env").await;
    let mut spec = test.spec("echo \"PATH=$PATH\"");
    spec.env = BTreeMap::from([("PATH".to_string(), "/bin:/opt/bin".to_string())]);
    spec.env_path_append = BTreeMap::from([("PATH".to_string(), "/extra".to_string())]);

    let finished = test.run(&spec).await;

    assert_eq!(finished.exit().exit_code, 0);
    assert_eq!(
        finished.lines(OutputStream::Stdout),
        ["PATH=/bin:/opt/bin:/extra"]
    );
    test.assert_no_leftovers().await;
}

#[tokio::test]
async fn exit_reports_times_and_peak_memory() {
    let mut test = TestCase::new("peak-memory").await;
    // The shell keeps about 30 MB in a variable, then waits so the stats stream
    // samples it at least once.
    let spec = test.spec("x=$(head -c 30000000 /dev/zero | tr '\\0' a); sleep 3; echo ${#x}");

    let finished = test.run(&spec).await;
    let exit = finished.exit();

    assert_eq!(exit.exit_code, 0);
    assert!(exit.started_at.is_some(), "no start time: {exit:?}");
    assert!(exit.finished_at.is_some(), "no end time: {exit:?}");
    let peak = exit.peak_memory_bytes.expect("no memory sample");
    assert!(
        peak >= 30_000_000,
        "peak memory {peak} is below the 30 MB held"
    );
    test.assert_no_leftovers().await;
}

#[tokio::test]
async fn find_containers_lists_by_labels() {
    let mut test = TestCase::new("find").await;
    let mut failed = test.spec("exit 3");
    failed.keep_if_failed = true;
    let kept = test.run(&failed).await.exit().container_id.clone();
    let spec = test.spec("echo ready; sleep 1000");
    let mut running = test.start(&spec);
    running.wait_for_line("ready").await;

    let labels = BTreeMap::from([
        (RUN_LABEL.to_string(), run_id().to_string()),
        (CASE_LABEL.to_string(), "find".to_string()),
    ]);
    let found = guarded("find_containers", test.engine.find_containers(&labels))
        .await
        .expect("find_containers failed");
    running.stop();
    running.finish().await;

    assert_eq!(found.len(), 2, "{found:?}");
    let exited = found
        .iter()
        .find(|c| c.id == kept)
        .expect("kept container not found");
    assert_eq!(exited.state, "exited");
    assert_eq!(exited.exit_code, Some(3));
    assert_eq!(exited.name, failed.name);
    assert!(exited.finished_at.is_some());
    let live = found.iter().find(|c| c.id != kept).unwrap();
    assert_eq!(live.state, "running");
    assert_eq!(live.exit_code, None);
    assert_eq!(live.name, spec.name);
    assert_eq!(
        live.labels.get(CASE_LABEL).map(String::as_str),
        Some("find")
    );
    test.remove(&kept).await;
    test.assert_no_leftovers().await;
}

#[tokio::test]
async fn stop_and_remove_clears_running_container() {
    let mut test = TestCase::new("stop-and-remove").await;
    let spec = test.spec("echo ready; sleep 1000");
    let mut running = test.start(&spec);
    running.wait_for_line("ready").await;
    let id = test
        .inspect(&spec.name)
        .await
        .and_then(|inspect| inspect.id)
        .expect("the running container was not found");

    let removed = guarded(
        "stop_and_remove",
        test.engine.stop_and_remove(std::slice::from_ref(&id), 1),
    )
    .await
    .expect("stop_and_remove failed");
    // The supervising run_container call loses its container and must still end.
    let _ = running.finish().await;

    assert_eq!(removed, vec![id.clone()]);
    test.assert_removed(&id).await;
    test.assert_no_leftovers().await;
}

#[tokio::test]
async fn output_keeps_every_line_of_large_output() {
    let mut test = TestCase::new("large-output").await;
    // About 2.7 MB in 400,000 lines: enough for a followed log to lose lines on Docker
    // 20.10, and for a log with a small max-size to rotate.
    let spec = test.spec("seq 1 400000; echo DONE");

    let finished = test.run(&spec).await;

    assert_eq!(finished.exit().exit_code, 0);
    let lines: Vec<String> = finished
        .pieces(OutputStream::Stdout)
        .into_iter()
        .map(|(line, _)| line)
        .collect();
    assert_eq!(lines.len(), 400_001, "lines were lost or duplicated");
    for (index, line) in lines[..400_000].iter().enumerate() {
        assert_eq!(
            line,
            &(index + 1).to_string(),
            "line {index} is out of order"
        );
    }
    assert_eq!(lines[400_000], "DONE");
    test.assert_no_leftovers().await;
}
