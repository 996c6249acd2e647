"""`tunespec schema`: print the JSON Schema of the spec format."""
import sys

from ..schema.json_schema import schema_text


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("schema", help="print the spec's JSON Schema")
    parser.set_defaults(run=run)


def run(args) -> int:
    sys.stdout.write(schema_text())
    return 0
