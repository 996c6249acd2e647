"""`tunespec` command line: one module per verb, listed in VERBS."""
import argparse
import sys
from typing import List, Optional

from ..compiler.errors import SpecError
from ..compiler.lock import LockDrift
from ..runtime.errors import BackendError
from . import apply, diff, evaluate, exit_codes, generate, lock, plan, probe, schema, status, validate

# Each verb module has `add_parser(subparsers)` and `run(args) -> int`.
VERBS = [validate, plan, diff, lock, schema, apply, status, probe, generate, evaluate]


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(prog="tunespec", description="Compile fine-tune specs into plans and run them.")
    parser.add_argument("--version", action="version", version=f"tunespec {__version__}")
    subparsers = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb in VERBS:
        verb.add_parser(subparsers)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except SpecError as error:
        from .console import print_spec_error

        print_spec_error(error)
        return 2
    except LockDrift as error:
        print(f"error: {error}", file=sys.stderr)
        return exit_codes.LOCK_DRIFT
    except BackendError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
