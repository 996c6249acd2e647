"""`tunespec lock SPEC...`: pin what each plan took from outside its spec into the `tunespec.lock` beside it.

Also the lock steps of `plan --write-lock`, `plan --check-lock` and `apply`."""
from pathlib import Path
import sys
from typing import Optional

from ..compiler import lock
from ..compiler.plan import build_plan
from ..schema import exit_codes
from .loading import load_spec_argument


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("lock", help="write tunespec.lock: model revision, data hashes, image, versions")
    parser.add_argument("specs", nargs="+", metavar="SPEC")
    parser.set_defaults(run=run)


def run(args) -> int:
    for spec in args.specs:
        write_lock(build_plan(load_spec_argument(spec)), Path(spec))
    return exit_codes.OK


def write_lock(plan: dict, spec: Path) -> None:
    """Record the plan's inputs in the lock beside its spec."""
    lock_file, key = lock.lock_location(spec)
    entry = lock.resolve(plan, Path.cwd(), lock_file.parent)
    lock.write_entry(lock_file, key, entry)
    unpinned = lock.compare(entry, entry).unverified_lines()
    print(f"Locked {spec} in {lock_file}", file=sys.stderr)
    for line in unpinned:
        print(f"  not pinned: {line}", file=sys.stderr)


def copy_entry(spec: Path, plan_dir: Path) -> None:
    """The spec's lock entry into a plan folder, for `apply DIR` (its paths are informational, not compared)."""
    lock_file, key = lock.lock_location(spec)
    entry = lock.read_entries(lock_file).get(key)
    if entry is not None:
        lock.write_entry(plan_dir / lock.LOCK_FILE, "plan.json", entry)


def check_lock(plan: dict, target: Path, required: bool) -> int:
    """Print the check of `target`'s lock; LOCK_DRIFT on drift (or, when `required`, on no lock)."""
    check = lock.check_target(plan, target, Path.cwd())
    if check.missing:
        if required:
            print(f"{target}: lock: {check.missing}\n  hint: `tunespec lock {target}` writes it; commit it with the spec",
                  file=sys.stderr)
            return exit_codes.LOCK_DRIFT
        return exit_codes.OK
    for line in check.unverified_lines():
        print(f"{target}: lock: not verified: {line}", file=sys.stderr)
    if check.drift:
        print(f"error: {lock.drift_error(check, str(target))}", file=sys.stderr)
        return exit_codes.LOCK_DRIFT
    print(f"{target}: lock: {len(check.verified)} inputs match" +
          (f", {len(check.unverified)} not verifiable here" if check.unverified else ""), file=sys.stderr)
    return exit_codes.OK


def refuse_drift(plan: dict, target: Optional[str]) -> None:
    """`apply`: a spec or plan folder whose lock drifted does not run (no lock: nothing to check)."""
    if target is None:
        return
    check = lock.check_target(plan, Path(target), Path.cwd())
    if check.drift:
        raise lock.drift_error(check, target)
    for line in check.unverified_lines() if not check.missing else []:
        print(f"{target}: lock: not verified: {line}", file=sys.stderr)
