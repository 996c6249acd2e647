"""`tunespec` command line: one module per verb, listed in VERBS."""
import argparse
import sys
from typing import List, Optional

from ..compiler.errors import SpecError
from ..compiler.lock import LockDrift
from ..runtime.errors import BackendError, MissingExtra, missing_extra
from ..schema import exit_codes
from . import apply, diff, evaluate, generate, lock, plan, probe, schema, status, validate
from .plan_source import CommandLineError

# Each verb module has `add_parser(subparsers)` and `run(args) -> int`.
VERBS = [validate, plan, diff, lock, schema, apply, status, probe, generate, evaluate]


def build_parser() -> argparse.ArgumentParser:
    from ..schema.contract import VERSION

    parser = argparse.ArgumentParser(prog="tunespec", description="Compile fine-tune specs into plans and run them.")
    parser.add_argument("--version", action="version", version=f"tunespec {VERSION}")
    subparsers = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb in VERBS:
        verb.add_parser(subparsers)
    return parser


def _report_missing(error: MissingExtra) -> int:
    print(f"error: {error}", file=sys.stderr)
    return exit_codes.MISSING_EXTRA


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
    except CommandLineError as error:
        print(f"tunespec {args.verb}: error: {error}", file=sys.stderr)
        return 2  # as argparse's own usage errors
    except BackendError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as error:
        # An optional dependency (an extra) is missing: say which install brings it.
        missing = missing_extra(error, f"`tunespec {args.verb}`")
        if missing is None:
            raise
        return _report_missing(missing)
    except MissingExtra as error:
        return _report_missing(error)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
