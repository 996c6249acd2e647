"""`tunespec diff OLD NEW`: what changes in the spec and, above all, in the plan."""
import json
import sys

from rich.table import Table

from ..compiler import diff
from ..compiler.plan import build_plan
from ..compiler.render import plan_files
from .console import out
from .loading import load_spec_argument


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("diff", help="compare two specs (paths or git-ref:path) and their plans")
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--format", choices=("text", "markdown", "json"), default="text")
    parser.set_defaults(run=run)


def run(args) -> int:
    old_spec, new_spec = load_spec_argument(args.old), load_spec_argument(args.new)
    old_plan, new_plan = build_plan(old_spec), build_plan(new_spec)
    spec_rows = diff.changes(old_spec.spec.model_dump(mode="json"), new_spec.spec.model_dump(mode="json"))
    plan_rows = [row for row in diff.changes(old_plan, new_plan) if not row[0].startswith("spec.")]
    files = diff.changed_files(plan_files(old_plan), plan_files(new_plan))
    title = f"tunespec diff {args.old} → {args.new}"
    if args.format == "markdown":
        sys.stdout.write(diff.markdown(title, spec_rows, plan_rows, files))
    elif args.format == "json":
        payload = {"spec": [list(r) for r in spec_rows], "plan": [list(r) for r in plan_rows],
                   "files": [list(f) for f in files]}
        sys.stdout.write(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
    else:
        for heading, rows in (("Plan changes", plan_rows), ("Spec changes", spec_rows)):
            if not rows:
                continue
            table = Table(title=heading, title_justify="left")
            for column in ("field", "old", "new"):
                table.add_column(column, overflow="fold")
            for key, old, new in rows:
                table.add_row(key, diff.show(old), diff.show(new))
            out.print(table)
        for name, state in files:
            out.print(f"  {state:8} {name}")
        if not spec_rows and not plan_rows:
            out.print("No changes.")
    return 0
