"""Errors a user can fix in their spec. Each carries where in the file the problem is."""
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Tuple, TypeVar

from .secret_scan import mask

SpecPath = Tuple[object, ...]
T = TypeVar("T")


def same_field(path: SpecPath, other: SpecPath) -> bool:
    """One path is the other or inside it: problems there are one mistake, reported once."""
    return tuple(path[:len(other)]) == tuple(other) or tuple(other[:len(path)]) == tuple(path)


@dataclass
class SpecError(Exception):
    """One problem in a spec: what is wrong, at which field, and what to do about it.

    `path` is the field's path in the merged spec, e.g. ("backend", "instance_type"). The CLI turns
    it into `file:line:column` with the positions the loader recorded.
    """

    message: str
    path: SpecPath = ()
    hint: Optional[str] = None
    file: Optional[str] = None
    line: Optional[int] = None
    column: Optional[int] = None
    # Further independent problems of the same spec, each located: a spec's mistakes are reported together.
    others: list = field(default_factory=list)

    def __str__(self) -> str:
        return self.format()

    def field_name(self) -> str:
        return ".".join(str(p) for p in self.path) or "(spec)"

    def format(self) -> str:
        """The message as printed; any secret-shaped text in it (a value echoed back) is masked."""
        where = self.file or "<spec>"
        if self.line is not None:
            where += f":{self.line}:{self.column}"
        text = f"{where}: error: {self.field_name()}: {self.message}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return "\n".join([mask(text)] + [other.format() for other in self.others])


def locate(error: SpecError, values: Dict[SpecPath, tuple], keys: Dict[SpecPath, tuple], default_file: str) -> SpecError:
    """Fill in file:line:column (of the error and its others) from the loader's positions: the value at
    the error's path, else at the nearest enclosing field the file has."""
    for other in error.others:
        locate(other, values, keys, default_file)
    if error.line is not None:
        return error
    path = tuple(error.path)
    while path and path not in values:
        path = path[:-1]
    file, line, column = values.get(path, (default_file, None, None))
    error.file = error.file or file
    error.line, error.column = line, column
    return error


def raise_together(refusals: Iterable[SpecError]) -> None:
    """Raise the refusals (and their others) as one error, the first with the rest; nothing when none."""
    errors = [each for error in refusals for each in (error, *error.others)]
    if not errors:
        return
    for error in errors:
        error.others = []
    errors[0].others = errors[1:]
    raise errors[0]


def all_of(*steps: Callable[[], T]) -> List[T]:
    """Every independent step's result; when some are refused, all their refusals raised together."""
    results, refusals = [], []
    for step in steps:
        try:
            results.append(step())
        except SpecError as error:
            refusals.append(error)
    raise_together(refusals)
    return results
