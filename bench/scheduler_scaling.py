"""Scheduler scaling: schedule a 10,000-step DAG on the in-memory engine.

Runs the criterion benchmark `benches/scheduler_scaling.rs` with
`cargo bench --bench scheduler_scaling`, reads criterion's estimates and the peak heap
use that the benchmark writes, and replaces the `scheduler_scaling` section of
BENCHMARKS.md. The raw numbers go to bench/results/scheduler_scaling.json.

    python bench/scheduler_scaling.py [--sample-size N] [--before RESULTS_JSON]

`--before` takes the results file of an earlier run (for example one saved before a
change) and adds a before/after table to the section.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402 - the path above makes common importable
    REPO_ROOT,
    Machine,
    command_line,
    save_results,
    setup_logger,
    utc_now,
    write_section,
)

NAME = "scheduler_scaling"
TARGET_DIR = Path(os.environ.get("CARGO_TARGET_DIR", REPO_ROOT / "target"))
CRITERION_DIR = TARGET_DIR / "criterion" / NAME
MEMORY_JSON = TARGET_DIR / NAME / "memory.json"

# The last commit before step readiness became incremental, the one the profile notes
# and bench/results/scheduler_scaling_before.json were measured on.
READINESS_BEFORE_COMMIT = "1db309a"

# Targets on the 2-CPU benchmark machine.
RUN_TARGET_MS = 200.0
MEMORY_TARGET_BYTES = 50 * 1000 * 1000

# Callgrind findings for one run, before and after making readiness incremental.
# Written by hand from the command given in the text, because callgrind takes minutes
# and its instruction counts do not depend on the load.
PROFILE_NOTES = """\
Profile: `valgrind --tool=callgrind target/release/deps/scheduler_scaling-<hash> --bench
no-such-benchmark`, which runs only the counted run and two spec builds. Before the
change, at commit 1db309a, one run took 2.31 billion instructions (2.20 on the
thread that drives the run, 0.11 on tokio's workers), and 2.08 billion of them, 90 %,
were `Vec::from_iter` inlined from `RunState::ready_steps`. That function scanned every
step, and the upstream steps of each waiting one, after every finished step: O(n^2) for
n steps.

The change keeps, for each step, the number of upstream steps that have not succeeded,
and an ordered set of ready steps (a `BTreeSet` of spec indices). A step that succeeds
decrements the counts of its downstream steps and queues those that reach zero, so the
scheduling work is O((n + e) log n) for e dependencies. Ready steps still start in spec
order and within `max_parallelism`. Failed, skipped, drained and cancelled runs behave
as before, and the scheduler tests pass unchanged. New tests cover the start order
under a limit on a 200-step fan-out, a newly ready step going before later spec steps,
a repeated upstream name, and a join whose other upstream step fails.

After the change, one run takes 0.21 billion instructions. The largest parts are the
step tasks with the in-memory engine (0.05 billion), spawning them (0.03), sending step
events (`RunState::set`, 0.02) and setting up the run (`RunState::new`, 0.01). No
other part grows faster than (n + e) log n: `skip_downstream` visits each skipped step
once, and each event clones one step name.
"""


def run_benchmark(sample_size: int, logger) -> List[float]:
    """Run the criterion benchmark; return the load averages before and after."""
    command = [
        "cargo", "bench", "--bench", NAME, "--",
        "--sample-size", str(sample_size), "--noplot",
    ]
    env = dict(os.environ, SCHEDULER_SCALING_MEMORY_JSON=str(MEMORY_JSON))
    load_before = os.getloadavg()[0]
    logger.info("running %s (1-minute load %.2f)", " ".join(command), load_before)
    subprocess.run(command, cwd=REPO_ROOT, env=env, check=True)
    load_after = os.getloadavg()[0]
    logger.info("done (1-minute load %.2f)", load_after)
    return [load_before, load_after]


def read_estimate(function: str) -> Dict[str, float]:
    """Return criterion's median and its 95 % confidence interval, in milliseconds."""
    path = CRITERION_DIR / function / "new" / "estimates.json"
    median = json.loads(path.read_text())["median"]
    interval = median["confidence_interval"]
    to_ms = 1e-6  # criterion stores nanoseconds
    return {
        "median_ms": median["point_estimate"] * to_ms,
        "ci_lower_ms": interval["lower_bound"] * to_ms,
        "ci_upper_ms": interval["upper_bound"] * to_ms,
        "confidence_level": interval["confidence_level"],
    }


def mib(size: float) -> str:
    return f"{size / (1 << 20):.1f} MiB"


def met(ok: bool) -> str:
    return "met" if ok else "**missed**"


def comparison_intro(before: Dict[str, Any]) -> str:
    """Introduce the before/after table, naming the change only for its own baseline."""
    if before["machine"]["commit"] == READINESS_BEFORE_COMMIT:
        return (
            "Before and after making step readiness incremental, each measured by this "
            "script. Spec validation is the same code at both commits, so its change "
            "shows how much the load alone moves these numbers."
        )
    return (
        f"Compared with an earlier run of this script at commit "
        f"{before['machine']['commit']} ({before['date']}), passed with `--before`."
    )


def render_section(results: Dict[str, Any], before: Optional[Dict[str, Any]]) -> str:
    dag = results["dag"]
    run = results["run"]
    validate = results["validate"]
    memory = results["memory"]
    machine = Machine(**results["machine"])
    load_before, load_after = results["load_average"]

    lines = [
        "## Scheduler scaling: a 10,000-step DAG on the in-memory engine",
        "",
        f"Written by `bench/{NAME}.py`. Run it again to replace this section.",
        "",
        f"The DAG has {dag['steps']} steps in {dag['layers']} layers of "
        f"{dag['steps_per_layer']}. Every step after the first layer depends on 1 to "
        f"{dag['max_upstream_per_step']} distinct steps of the layer before, drawn by a "
        f"splitmix64 generator with seed {dag['seed']} ({dag['edges']} edges in all). "
        "Steps are listed layer by layer, the run has no `max_parallelism`, and its "
        "execution mode is fail_fast. The in-memory engine finishes every container at "
        "once with exit code 0, so the time is the scheduler's own work.",
        "",
        *machine.markdown_lines(results["command"], results["date"]),
        f"- Load: 1-minute load average {load_before:.2f} at the start and "
        f"{load_after:.2f} at the end",
        f"- Statistic: criterion's median time per iteration over "
        f"{results['sample_size']} samples, with criterion's "
        f"{run['confidence_level'] * 100:.0f} % confidence interval of that median",
        "",
        "| measurement | median | confidence interval | target | result |",
        "|---|---:|---|---:|---|",
        f"| run: schedule all steps and consume the events | {run['median_ms']:.1f} ms | "
        f"{run['ci_lower_ms']:.1f} to {run['ci_upper_ms']:.1f} ms | "
        f"< {RUN_TARGET_MS:.0f} ms | {met(run['median_ms'] < RUN_TARGET_MS)} |",
        f"| peak heap of one run | {mib(memory['run_peak_heap_bytes'])} | one run | "
        f"< {MEMORY_TARGET_BYTES / 1e6:.0f} MB | "
        f"{met(memory['run_peak_heap_bytes'] < MEMORY_TARGET_BYTES)} |",
        f"| validate the spec (not part of the run) | {validate['median_ms']:.2f} ms | "
        f"{validate['ci_lower_ms']:.2f} to {validate['ci_upper_ms']:.2f} ms | none | |",
        "",
        "How it is measured:",
        "",
        "- The run is one `scheduler::run` on the multi-threaded tokio runtime (one "
        "worker per CPU, as the Python module uses), from the start of the run to the "
        "last event. It includes spawning a task per step, the in-memory engine's "
        "containers, the `running` and `succeeded` event of each step and the final "
        f"`run_finished` event ({dag['events']} events), sent through a channel of "
        f"{dag['event_buffer']} events that a second task drains, as Python does. It "
        "does not include building or validating the spec or starting the runtime. "
        "Spec validation is timed on its own in the last row.",
        "- Peak heap is measured by a counting global allocator in the benchmark: the "
        "highest number of live heap bytes above the level just before the run, in any "
        "thread, during one run. It includes the in-memory engine's record of started "
        "and exited containers. Building the spec itself peaks at "
        f"{mib(memory['spec_peak_heap_bytes'])}, which is not part of the run.",
        "- MB in the target is 10^6 bytes.",
    ]
    if before is not None:
        lines += [
            "",
            comparison_intro(before),
            "",
            "| | commit | load at start | run median | peak heap | validate median |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for label, item in (("before", before), ("after", results)):
            lines.append(
                f"| {label} | {item['machine']['commit']} | "
                f"{item['load_average'][0]:.2f} | {item['run']['median_ms']:.1f} ms | "
                f"{mib(item['memory']['run_peak_heap_bytes'])} | "
                f"{item['validate']['median_ms']:.2f} ms |"
            )
        lines += ["", PROFILE_NOTES]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sample-size", type=int, default=30,
        help="criterion samples per benchmark, 10 or more (default: 30)",
    )
    parser.add_argument(
        "--before", type=Path,
        help="results JSON of an earlier run, shown next to this one",
    )
    args = parser.parse_args()
    if args.sample_size < 10:
        parser.error(f"--sample-size is {args.sample_size}; criterion needs 10 or more")
    if args.before is not None and not args.before.is_file():
        parser.error(
            f"--before {args.before}: no such file; pass a scheduler_scaling results JSON"
        )
    before = json.loads(args.before.read_text()) if args.before else None
    if shutil.which("cargo") is None:
        raise SystemExit(
            "error: cargo not found on PATH; install a Rust toolchain 1.85 or newer "
            "(for example with rustup)"
        )

    logger = setup_logger(NAME)
    machine = Machine.describe()
    date = utc_now()
    load_average = run_benchmark(args.sample_size, logger)

    memory = json.loads(MEMORY_JSON.read_text())
    dag_keys = (
        "steps", "layers", "steps_per_layer", "max_upstream_per_step", "edges",
        "seed", "events", "event_buffer",
    )
    results = {
        "command": command_line(),
        "date": date,
        "machine": machine,
        "load_average": load_average,
        "sample_size": args.sample_size,
        "dag": {key: memory[key] for key in dag_keys},
        "run": read_estimate("run"),
        "validate": read_estimate("validate"),
        "memory": {
            "run_peak_heap_bytes": memory["run_peak_heap_bytes"],
            "spec_peak_heap_bytes": memory["spec_peak_heap_bytes"],
        },
        "targets": {
            "run_median_ms_below": RUN_TARGET_MS,
            "run_peak_heap_bytes_below": MEMORY_TARGET_BYTES,
        },
    }
    results["targets_met"] = {
        "run": results["run"]["median_ms"] < RUN_TARGET_MS,
        "memory": memory["run_peak_heap_bytes"] < MEMORY_TARGET_BYTES,
    }
    # The section and the JSON read the machine as plain fields.
    results["machine"] = vars(machine)
    write_section(NAME, render_section(results, before))
    path = save_results(NAME, results)
    logger.info(
        "run median %.1f ms, peak heap %s; wrote BENCHMARKS.md and %s",
        results["run"]["median_ms"], mib(memory["run_peak_heap_bytes"]), path,
    )

if __name__ == "__main__":
    main()
