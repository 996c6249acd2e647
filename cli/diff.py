"""`tunespec diff OLD NEW` or `tunespec diff --base REV [--head REV] [PATH...]`: what a change does to the plans.

With `--base`, every spec under PATH that a change between the revisions touches is compared: edited,
added, renamed or deleted specs, and specs whose `extends` base, local data or lock changed."""
import json
import os
import sys
from pathlib import Path
from typing import List, Optional

from rich.table import Table

from ..compiler import budget, diff, lock
from ..compiler.errors import SpecError
from ..compiler.plan import build_plan
from ..compiler.render import plan_files
from ..compiler.spec_loader import load_spec
from ..schema import exit_codes
from . import revisions
from .console import out


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "diff", help="compare two specs (paths or REV:path), or every spec changed since a git revision")
    parser.add_argument("specs", nargs="*", metavar="SPEC",
                        help="OLD NEW; with --base: the paths to look for specs in (default: the whole repository)")
    parser.add_argument("--base", help="git revision to compare against (e.g. the merge base of a pull request)")
    parser.add_argument("--head", help="with --base: git revision to compare (default: the working tree)")
    parser.add_argument("--format", choices=("text", "markdown", "json"), default="text")
    parser.add_argument("--exit-code", action="store_true",
                        help=f"exit {exit_codes.PLAN_CHANGED} when anything changed, {exit_codes.OK} when nothing did")
    parser.set_defaults(run=run)


def run(args) -> int:
    if args.base:
        items = diff_revisions(args.base, args.head, args.specs)
        title = f"tunespec diff {args.base} → {args.head or 'working tree'}"
    elif len(args.specs) == 2 and not args.head:
        items = [diff.compare(load_side(args.specs[0]), load_side(args.specs[1]))]
        title = f"tunespec diff {args.specs[0]} → {args.specs[1]}"
    else:
        raise SpecError("give OLD and NEW specs, or --base REV", (), file="tunespec diff",
                        hint="e.g. `tunespec diff main:specs/x.yaml specs/x.yaml` or `tunespec diff --base main specs/`")
    for item in items:
        for side in (item.old, item.new):
            if side.error:
                print(side.error, file=sys.stderr)
    if args.format == "markdown":
        sys.stdout.write(diff.markdown(items, title))
    elif args.format == "json":
        sys.stdout.write(json.dumps([diff.as_json(item) for item in items], indent=2, default=str) + "\n")
    else:
        print_text(items)
    if any(item.new.error or (item.old.error and not args.base) for item in items):
        return exit_codes.INVALID_SPEC
    return exit_codes.PLAN_CHANGED if args.exit_code and any(item.changed for item in items) else exit_codes.OK


# ---- sides ----------------------------------------------------------------------------------------

def side_of(root: Path, relative: str, display: str, cwd: Path, check_lock: bool) -> diff.Side:
    """A spec at `root/relative`, planned as if from `cwd`; errors are kept, not raised."""
    side = diff.Side(name=display)
    spec_path = root / relative
    try:
        loaded = load_spec(spec_path, display=display)
        side.data, side.positions = loaded.data, loaded.positions
        plan = build_plan(loaded, cwd=cwd, enforce_budget=False)
        side.plan, side.files = plan, plan_files(plan)
        over_budget = budget.refusal(plan["estimates"].get("budget"))
        if over_budget:
            side.error = loaded.locate(over_budget).format()
    except SpecError as error:
        side.error = error.format()
        return side
    lock_file, key = lock.lock_location(spec_path)
    side.lock_entry = lock.read_entries(lock_file).get(key)
    if check_lock and lock_file.is_file():
        side.lock_check = lock.compare(side.lock_entry, lock.resolve(plan, cwd, lock_file.parent)) \
            if side.lock_entry else lock.LockCheck(missing=f"{lock.LOCK_FILE} has no entry for {key}")
    return side


def load_side(argument: str, check_lock: bool = True) -> diff.Side:
    """A spec argument: a path, or `REV:path` read from that revision's tree."""
    at_revision = revisions.split_argument(argument)
    if at_revision is None:
        return side_of(Path.cwd(), argument, argument, Path.cwd(), check_lock)
    revision, relative = at_revision
    root = revisions.tree(revision)
    cwd = root / os.path.relpath(Path.cwd(), revisions.toplevel())
    return side_of(root, relative, argument, cwd, check_lock)


def diff_revisions(base: str, head: Optional[str], paths: List[str]) -> List[diff.SpecDiff]:
    top = revisions.toplevel()
    pathspecs = [os.path.relpath(Path(p).resolve(), top) for p in paths]
    base_root = revisions.tree(base)
    head_root = revisions.tree(head) if head else top
    changed, renames = revisions.changed_paths(base, head)
    base_specs = set(revisions.spec_files(base_root, base, pathspecs))
    head_specs = revisions.spec_files(head_root, head, pathspecs)
    items = []
    for path in head_specs:
        old_path = renames.get(path, path if path in base_specs else None)
        head_deps = revisions.dependencies(head_root, path)
        touched = revisions.touches(changed, head_deps | (revisions.dependencies(base_root, old_path) if old_path else set()))
        if not touched:
            continue
        reason = "renamed" if old_path not in (None, path) else ""
        via = sorted(touched - {path, old_path})
        if via and path not in touched:
            reason = "via " + ", ".join(f"`{name}`" for name in via)
        old = side_of(base_root, old_path, old_path, base_root, False) if old_path else diff.Side()
        items.append(diff.compare(old, side_of(head_root, path, path, head_root, True), reason))
    for path in sorted(base_specs - set(head_specs) - set(renames.values())):
        items.append(diff.compare(side_of(base_root, path, path, base_root, False), diff.Side(), "deleted"))
    return items


# ---- terminal -------------------------------------------------------------------------------------

def _table(title: str, columns, rows) -> Table:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*[value or "" for value in row])
    return table


def print_text(items: List[diff.SpecDiff]) -> None:
    for item in items:
        status = diff.status(item)
        out.print(f"[bold]{item.title}[/]" + (f"  {status}" if status else ""))
        if not item.changed:
            out.print("No changes.")
            continue
        if item.spec:
            out.print(_table("Spec changes", ("key", "old", "new", "line"),
                             [(r.key, diff.show(r.old), diff.show(r.new), r.where) for r in item.spec]))
        if item.headline or item.budget:
            rows = [(h.label, h.old, h.new, h.change) for h in item.headline]
            rows += [(f"budget {h.label}", h.old, h.new, "") for h in item.budget]
            out.print(_table("Estimates", ("", "old", "new", "change"), rows))
        for line in diff.lock_summary(item):
            out.print(f"  lock: {line}")
        if item.plan:
            out.print(_table("Plan changes", ("field", "old", "new"),
                             [(key, diff.show(old), diff.show(new)) for key, old, new in item.plan]))
        for name, state in item.files:
            out.print(f"  {state:8} {name}")
