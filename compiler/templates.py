"""User format strings (prompt templates, `run_dir`): checked before Python's `str.format` sees them.

`str.format` raises on `{}` or `{0}` (positional), `{x!z}` (unknown conversion) and `{x.y}` on
plain values, and `{x:>100000000}` builds a 100 MB string. A spec only needs named placeholders, so
everything else is refused with a SpecError at the field.
"""
import string
from typing import Iterable, List, Optional

from .errors import SpecError, SpecPath

HINT = "placeholders are `{name}` only; write a literal brace as `{{` or `}}`"


def placeholders(template: str, path: SpecPath, allowed: Optional[Iterable[str]] = None) -> List[str]:
    """The placeholder names of `template`, in order; a SpecError at `path` for anything else."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise SpecError(f"not a valid template: {exc}", path, hint=HINT) from None
    names: List[str] = []
    allowed = list(allowed) if allowed is not None else None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
        if not name or name.isdigit():
            raise SpecError(f"`{shown}` is a positional placeholder; placeholders are named", path, hint=HINT)
        if conversion or spec:
            raise SpecError(f"`{shown}` has a conversion or format specification", path, hint=HINT)
        if any(char in name for char in ".["):
            raise SpecError(f"`{shown}` reaches into a value (`.` or `[`)", path, hint=HINT)
        if allowed is not None and name not in allowed:
            raise SpecError(f"unknown placeholder `{shown}`", path,
                            hint="the placeholders here are " + ", ".join(f"`{{{a}}}`" for a in allowed))
        if name not in names:
            names.append(name)
    return names
