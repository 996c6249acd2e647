"""Spec argument → loaded spec, for the verbs that take one (a path, or `git-ref:path`)."""
import subprocess
from pathlib import Path

from ..compiler.errors import SpecError
from ..compiler.spec_loader import LoadedSpec, load_spec


def load_spec_argument(argument: str) -> LoadedSpec:
    path = Path(argument)
    if not path.exists() and ":" in argument and not argument.startswith(("/", ".")):
        ref, _, relative = argument.partition(":")
        shown = subprocess.run(["git", "show", f"{ref}:{relative}"], capture_output=True, text=True)
        if shown.returncode != 0:
            raise SpecError(f"cannot read {relative} at git ref {ref}: {shown.stderr.strip()}", (), file=argument)
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True).stdout.strip()
        return load_spec(Path(top) / relative, display=argument, text=shown.stdout)
    return load_spec(path)
