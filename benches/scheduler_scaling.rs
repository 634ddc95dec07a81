//! Scheduler scaling: time and peak heap memory of one run of a 10,000-step DAG on the
//! in-memory engine, whose containers finish at once.
//!
//! The DAG is layered: `LAYERS` layers of `STEPS_PER_LAYER` steps, and every step after
//! the first layer depends on 1 to `MAX_UPSTREAM` distinct steps of the layer before,
//! drawn by a splitmix64 generator from `SEED`. Steps are listed layer by layer.
//!
//! Criterion times two things:
//!
//! - `validate`: [`RunSpec::validate`] on the built spec.
//! - `run`: one [`scheduler::run`] to its end plus the consumption of every event it
//!   sends. Building and validating the spec, and starting the tokio runtime, are outside
//!   the timing.
//!
//! Before criterion starts, one run is measured with a counting global allocator: the
//! peak of heap bytes allocated above the level before the run. That number and the DAG
//! parameters go to a JSON file, `target/scheduler_scaling/memory.json` unless the
//! environment variable `SCHEDULER_SCALING_MEMORY_JSON` names another path.
//!
//! Run it with `python bench/scheduler_scaling.py`, which also writes BENCHMARKS.md.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use tokio::runtime::Runtime;
use tokio::sync::mpsc;

use zenml_docker_rs::engine::memory::{MemoryEngine, Script};
use zenml_docker_rs::engine::StopSignal;
use zenml_docker_rs::events::RunStatus;
use zenml_docker_rs::scheduler::{self, RunControls};
use zenml_docker_rs::spec::{ContainerSpec, ExecutionMode, RunSpec, StepSpec};

const LAYERS: usize = 100;
const STEPS_PER_LAYER: usize = 100;
const MAX_UPSTREAM: usize = 3;
const SEED: u64 = 0x5eed_da65;
/// The Python module's event buffer, so the run waits on a full channel as it does there.
const EVENT_BUFFER: usize = 4096;

/// Counts live heap bytes while `COUNTING` is set and keeps their peak.
///
/// The count is allocations minus deallocations since counting started, so it is the
/// live heap above its level at the start, whichever thread allocates.
struct CountingAllocator;

static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
static PEAK_BYTES: AtomicIsize = AtomicIsize::new(0);

impl CountingAllocator {
    fn add(delta: isize) {
        if COUNTING.load(Ordering::Relaxed) {
            let live = LIVE_BYTES.fetch_add(delta, Ordering::Relaxed) + delta;
            PEAK_BYTES.fetch_max(live, Ordering::Relaxed);
        }
    }
}

// SAFETY: every call is forwarded to `System` unchanged; the counting touches only
// atomics and never allocates.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let pointer = System.alloc(layout);
        if !pointer.is_null() {
            Self::add(layout.size() as isize);
        }
        pointer
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let pointer = System.alloc_zeroed(layout);
        if !pointer.is_null() {
            Self::add(layout.size() as isize);
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        System.dealloc(pointer, layout);
        Self::add(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new_pointer = System.realloc(pointer, layout, new_size);
        if !new_pointer.is_null() {
            Self::add(new_size as isize - layout.size() as isize);
        }
        new_pointer
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Returns the peak of live heap bytes, above the level at the call, while `work` runs.
fn peak_heap_bytes<T>(work: impl FnOnce() -> T) -> (T, usize) {
    LIVE_BYTES.store(0, Ordering::SeqCst);
    PEAK_BYTES.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    let result = work();
    COUNTING.store(false, Ordering::SeqCst);
    let peak = PEAK_BYTES.load(Ordering::SeqCst).max(0) as usize;
    (result, peak)
}

/// The splitmix64 generator: small, fast and good enough to draw a DAG.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Returns a number in `0..bound`; the modulo bias is negligible for small bounds.
    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }
}

fn step_name(layer: usize, position: usize) -> String {
    format!("step-{layer:03}-{position:03}")
}

/// Builds the layered random DAG described in the module doc and validates it.
fn layered_spec() -> RunSpec {
    let mut random = SplitMix64(SEED);
    let mut steps = Vec::with_capacity(LAYERS * STEPS_PER_LAYER);
    for layer in 0..LAYERS {
        for position in 0..STEPS_PER_LAYER {
            let mut upstream = Vec::new();
            if layer > 0 {
                let count = 1 + random.below(MAX_UPSTREAM);
                while upstream.len() < count {
                    let name = step_name(layer - 1, random.below(STEPS_PER_LAYER));
                    if !upstream.contains(&name) {
                        upstream.push(name);
                    }
                }
            }
            let name = step_name(layer, position);
            steps.push(StepSpec {
                container: ContainerSpec {
                    name: format!("bench-run-{name}"),
                    image: "bench/step:latest".into(),
                    ..Default::default()
                },
                name,
                upstream,
                retry: None,
                timeout_secs: None,
            });
        }
    }
    let spec = RunSpec {
        run_id: "bench-run".into(),
        steps,
        execution_mode: ExecutionMode::FailFast,
        max_parallelism: None,
    };
    spec.validate().expect("the benchmark DAG is valid");
    spec
}

fn edge_count(spec: &RunSpec) -> usize {
    spec.steps.iter().map(|step| step.upstream.len()).sum()
}

/// Runs `spec` to its end on an in-memory engine whose containers finish at once, and
/// consumes every event. Returns the run's status and the number of events.
async fn run_to_end(spec: Arc<RunSpec>) -> (RunStatus, usize) {
    let instant = Script {
        duration: Duration::ZERO,
        removal_time: Duration::ZERO,
        ..Default::default()
    };
    let engine = Arc::new(MemoryEngine::default().with_default_script(instant));
    let (events_tx, mut events_rx) = mpsc::channel(EVENT_BUFFER);
    let consumer = tokio::spawn(async move {
        let mut count = 0;
        while let Some(event) = events_rx.recv().await {
            std::hint::black_box(&event);
            count += 1;
        }
        count
    });
    // The triggers stay alive, unfired, until the run ends.
    let (_cancel_trigger, cancel) = StopSignal::new();
    let (_drain_trigger, drain) = StopSignal::new();
    let controls = RunControls { cancel, drain };

    let status = scheduler::run(spec, engine, events_tx, controls).await;
    let events = consumer.await.expect("the event consumer panicked");
    (status, events)
}

/// Runs `spec` once with the allocator counting, checks the run, and writes the peak
/// heap use with the DAG parameters as JSON.
fn measure_memory(runtime: &Runtime, spec: &Arc<RunSpec>) {
    let ((status, events), run_peak) =
        peak_heap_bytes(|| runtime.block_on(run_to_end(Arc::clone(spec))));
    assert_eq!(
        status,
        RunStatus::Succeeded,
        "the benchmark run must succeed"
    );
    // Each step sends `running` and `succeeded`, and the run ends with `run_finished`.
    assert_eq!(
        events,
        2 * spec.steps.len() + 1,
        "unexpected number of events"
    );
    let (_, spec_peak) = peak_heap_bytes(|| std::hint::black_box(layered_spec()));

    let path = std::env::var_os("SCHEDULER_SCALING_MEMORY_JSON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/scheduler_scaling/memory.json")
        });
    let json = format!(
        concat!(
            "{{\n",
            "  \"steps\": {},\n",
            "  \"layers\": {},\n",
            "  \"steps_per_layer\": {},\n",
            "  \"max_upstream_per_step\": {},\n",
            "  \"edges\": {},\n",
            "  \"seed\": {},\n",
            "  \"events\": {},\n",
            "  \"event_buffer\": {},\n",
            "  \"run_peak_heap_bytes\": {},\n",
            "  \"spec_peak_heap_bytes\": {}\n",
            "}}\n"
        ),
        spec.steps.len(),
        LAYERS,
        STEPS_PER_LAYER,
        MAX_UPSTREAM,
        edge_count(spec),
        SEED,
        events,
        EVENT_BUFFER,
        run_peak,
        spec_peak,
    );
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("cannot create the directory of the memory JSON");
    }
    std::fs::write(&path, json).expect("cannot write the memory JSON");
    println!(
        "scheduler_scaling: peak heap of one run {run_peak} bytes ({:.1} MiB) above the \
         level before it; written to {}",
        run_peak as f64 / (1 << 20) as f64,
        path.display()
    );
}

fn main() {
    // The multi-threaded runtime with one worker per CPU, as the Python module uses.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("cannot start the tokio runtime");
    let spec = Arc::new(layered_spec());
    measure_memory(&runtime, &spec);

    let mut criterion = Criterion::default().configure_from_args();
    let mut group = criterion.benchmark_group("scheduler_scaling");
    group.throughput(Throughput::Elements(spec.steps.len() as u64));
    group.bench_function("validate", |bencher| {
        bencher.iter(|| spec.validate().expect("the benchmark DAG is valid"));
    });
    group.bench_function("run", |bencher| {
        bencher.iter(|| runtime.block_on(run_to_end(Arc::clone(&spec))));
    });
    group.finish();
    criterion.final_summary();
}
