"""`tunespec schema`: print the JSON Schema of the spec format (or, with --plan, of plan.json)."""
import sys

from ..schema.json_schema import plan_schema_text, schema_text


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("schema", help="print the spec's JSON Schema")
    parser.add_argument("--plan", action="store_true", help="print plan.json's JSON Schema instead")
    parser.set_defaults(run=run)


def run(args) -> int:
    sys.stdout.write(plan_schema_text() if args.plan else schema_text())
    return 0
