"""Command line of zenml-docker-rs: `python -m zenml_docker_rs gc [--dry-run]`.

`gc` lists the containers of this orchestrator whose run has ended or whose
coordinator is gone, and removes them (stopping those that still run). Runs whose
coordinator still runs are left alone. Containers of runs without a run record in
this ZenML configuration (another configuration, or another host) are only listed,
unless `--include-unknown` is given.
"""

import argparse
import sys
from collections import defaultdict
from typing import Dict, List, Optional

LABEL_ORCHESTRATOR = "io.zenml.orchestrator"
LABEL_RUN_ID = "io.zenml.run-id"


def collect_garbage(dry_run: bool, include_unknown: bool) -> int:
    """List and remove leftover containers of ended or orphaned runs.

    Args:
        dry_run: Only list what would be removed.
        include_unknown: Also remove containers of runs without a local run record.

    Returns:
        The number of containers removed (or, with `dry_run`, that would be).
    """
    from zenml_docker_rs import _core
    from zenml_docker_rs.runs import RunRecord

    containers = _core.find_containers({LABEL_ORCHESTRATOR: "docker_rs"})
    by_run: Dict[str, List[dict]] = defaultdict(list)
    for container in containers:
        by_run[container["labels"].get(LABEL_RUN_ID, "?")].append(container)

    removable: List[str] = []
    for run_id, run_containers in sorted(by_run.items()):
        try:
            record: Optional[RunRecord] = RunRecord(run_id)
        except ValueError:
            record = None
        if record is None or not record.exists():
            verdict = "no run record here" + (": removing" if include_unknown else ": kept")
            remove = include_unknown
        else:
            alive = record.coordinator_alive()
            if alive is True:
                verdict, remove = "coordinator running: kept", False
            elif alive is None:
                verdict, remove = "coordinator on another host: kept", False
            else:
                ended = record.result() or "coordinator gone"
                verdict, remove = f"{ended}: removing", True
        print(f"run {run_id} ({len(run_containers)} container(s)), {verdict}")
        for container in run_containers:
            exit_code = container.get("exit_code")
            detail = container["state"] if exit_code is None else f"exited {exit_code}"
            print(f"  {container['name']}  {container['id'][:12]}  {detail}")
        if remove:
            removable.extend(container["id"] for container in run_containers)

    if dry_run:
        print(f"{len(removable)} container(s) would be removed (dry run).")
        return len(removable)
    removed = _core.stop_and_remove(removable, 10) if removable else []
    print(f"removed {len(removed)} container(s).")
    return len(removed)


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line.

    Args:
        argv: Arguments without the program name.

    Returns:
        The process exit code.
    """
    parser = argparse.ArgumentParser(prog="python -m zenml_docker_rs", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    gc = commands.add_parser("gc", help="remove containers of ended or orphaned runs")
    gc.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    gc.add_argument(
        "--include-unknown",
        action="store_true",
        help="also remove containers of runs that have no run record in this ZenML configuration",
    )
    args = parser.parse_args(argv)
    if args.command == "gc":
        collect_garbage(dry_run=args.dry_run, include_unknown=args.include_unknown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
