"""YAML text → plain data, remembering where every key and value came from.

PyYAML's composer gives nodes with marks; we build the data ourselves so we can refuse duplicate
keys, cap alias expansion (billion-laughs files, by values and by bytes), nesting, integer length and
non-finite numbers, each with a location, and record `path → (file, line, column)`.
"""
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Tuple

import yaml

from .errors import SpecError, SpecPath
from .files import read_text

MAX_FILE_BYTES = 1 << 20
MAX_NODES = 20_000
# Text the values add up to once aliases are expanded: a file without aliases stays under its size.
MAX_EXPANDED_BYTES = 2 * MAX_FILE_BYTES
MAX_DEPTH = 64
# Whole numbers longer than this are no setting's value (int64 has 19 digits); Python refuses to
# parse those beyond 4300 digits with a ValueError of its own.
MAX_INTEGER_DIGITS = 19

Position = Tuple[str, int, int]


@dataclass
class LoadedYaml:
    data: object
    file: str
    values: Dict[SpecPath, Position] = field(default_factory=dict)
    keys: Dict[SpecPath, Position] = field(default_factory=dict)


def value_at(data: object, path: SpecPath) -> object:
    """The value at `path` in loaded data, or None where the data has no such field."""
    for part in path:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


class _SpecLoader(yaml.SafeLoader):
    """SafeLoader whose floats follow YAML 1.2 (`2e-4` is a number, not the string '2e-4') and whose
    composer refuses deep nesting before Python's recursion limit does."""

    depth = 0

    def compose_node(self, parent, index):
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nesting deeper than {MAX_DEPTH} levels",
                                                  self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


_SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _position(file: str, node: yaml.Node) -> Position:
    return (file, node.start_mark.line + 1, node.start_mark.column + 1)


class _Builder:
    def __init__(self, loader: _SpecLoader, file: str):
        self.loader = loader
        self.file = file
        self.count = 0
        self.expanded_bytes = 0
        self.result = LoadedYaml(data=None, file=file)

    def _too_large(self, message: str, path: SpecPath, node: yaml.Node) -> SpecError:
        # Deep inside an alias expansion the path and position say nothing useful: name the
        # top-level key whose value grew too large.
        top = path[:1]
        _, line, column = self.result.keys.get(top) or _position(self.file, node)
        return SpecError(message, top,
                         hint="aliases (`*name`) that expand exponentially are refused; write the values out",
                         file=self.file, line=line, column=column)

    def build(self, node: yaml.Node, path: SpecPath) -> object:
        self.count += 1
        if self.count > MAX_NODES:
            raise self._too_large(f"the YAML expands to more than {MAX_NODES} values", path, node)
        if len(path) > MAX_DEPTH:  # an alias inside its own anchor (`&a [*a]`) nests without end
            raise SpecError(f"nesting deeper than {MAX_DEPTH} levels", path[:1], file=self.file,
                            line=node.start_mark.line + 1, column=node.start_mark.column + 1)
        self.result.values[path] = _position(self.file, node)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, path + (i,)) for i, item in enumerate(node.value)]
        self.expanded_bytes += len(node.value)
        if self.expanded_bytes > MAX_EXPANDED_BYTES:
            raise self._too_large(f"the YAML expands to more than {MAX_EXPANDED_BYTES >> 20} MiB of text", path, node)
        return self._scalar(node, path)

    def _scalar(self, node: yaml.ScalarNode, path: SpecPath) -> object:
        """A scalar's value; numbers no setting can hold are refused where they are written."""
        if node.tag == "tag:yaml.org,2002:timestamp":
            return node.value  # dates and times stay text: no spec field is a date
        if node.tag == "tag:yaml.org,2002:int" and \
                len(re.sub(r"[^0-9a-fA-F]", "", node.value.split("0x")[-1])) > MAX_INTEGER_DIGITS:
            raise SpecError(f"a whole number of more than {MAX_INTEGER_DIGITS} digits", path,
                            hint="no setting takes a number this large; quote it if it is meant as text",
                            file=self.file, line=node.start_mark.line + 1, column=node.start_mark.column + 1)
        value = self.loader.construct_object(node, deep=True)
        if isinstance(value, float) and not math.isfinite(value):
            raise SpecError(f"`{node.value}` is not a finite number", path,
                            hint="no setting takes infinity or NaN; write a number (quote it if it is meant as text)",
                            file=self.file, line=node.start_mark.line + 1, column=node.start_mark.column + 1)
        return value

    def _mapping(self, node: yaml.MappingNode, path: SpecPath) -> dict:
        out: dict = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise SpecError(
                    "YAML merge keys (`<<`) are not supported",
                    path,
                    hint="use `extends:` to build on a base spec",
                    file=self.file,
                    line=key_node.start_mark.line + 1,
                    column=key_node.start_mark.column + 1,
                )
            if not isinstance(key_node, yaml.ScalarNode):
                raise SpecError("mapping keys must be plain names", path, file=self.file,
                                line=key_node.start_mark.line + 1, column=key_node.start_mark.column + 1)
            key = self._scalar(key_node, path)
            if not isinstance(key, str):
                key = str(key_node.value)
            if key in out:
                first = self.result.keys[path + (key,)]
                raise SpecError(
                    f"duplicate key `{key}` (first given at line {first[1]})",
                    path + (key,),
                    hint="YAML keeps only the last of duplicate keys; remove one of them",
                    file=self.file,
                    line=key_node.start_mark.line + 1,
                    column=key_node.start_mark.column + 1,
                )
            self.result.keys[path + (key,)] = _position(self.file, key_node)
            out[key] = self.build(value_node, path + (key,))
        return out


_UNCLOSED = {"while parsing a flow sequence": "`[`", "while parsing a flow mapping": "`{`",
             "while scanning a quoted scalar": "quote"}


def _syntax_error(exc: yaml.MarkedYAMLError, file: str) -> SpecError:
    """PyYAML's error, at the line the user has to fix, with a hint for the usual causes."""
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or exc.context
    message = f"not valid YAML: {problem}"
    hint = None
    opener = _UNCLOSED.get(exc.context or "")
    if opener and exc.context_mark is not None and exc.problem_mark is not None \
            and exc.problem_mark.line != exc.context_mark.line:
        # The parser notices a missing `]`, `}` or quote lines later; the fix is where it was opened.
        message = f"not valid YAML: the {opener} opened here is not closed ({problem} at line {exc.problem_mark.line + 1})"
        mark = exc.context_mark
    elif "mapping values are not allowed" in problem or "expected <block end>" in problem:
        hint = "check this line's indentation against the lines above; quote a value that contains `: `"
    elif "'\\t'" in problem:
        hint = "indent with spaces: YAML does not allow tabs"
    return SpecError(message, (), hint=hint, file=file,
                     line=mark.line + 1 if mark else None, column=mark.column + 1 if mark else None)


def _reader_error(exc: yaml.reader.ReaderError, text: str, file: str) -> SpecError:
    """PyYAML names a forbidden character by its offset only: turn it into line and column."""
    position = min(exc.position, len(text))
    line = text.count("\n", 0, position) + 1
    column = position - (text.rfind("\n", 0, position) + 1) + 1
    return SpecError(f"not valid YAML: control character U+{exc.character:04X} is not allowed", (),
                     hint="remove it; inside a double-quoted value write a tab as `\\t` and a line break as `\\n`",
                     file=file, line=line, column=column)


def load_yaml_text(text: str, file: str) -> LoadedYaml:
    """Parse one YAML document into plain data with positions."""
    if len(text.encode("utf-8", "replace")) > MAX_FILE_BYTES:
        raise SpecError(f"the file is larger than {MAX_FILE_BYTES // 1024} KiB", (),
                        hint="a spec is a short document; keep data out of it", file=file)
    try:
        loader = _SpecLoader(text)
    except yaml.reader.ReaderError as exc:
        raise _reader_error(exc, text, file) from None
    try:
        node = loader.get_single_node()
        if node is None:
            raise SpecError("the file is empty", (), hint="start from one of the examples in specs/", file=file)
        builder = _Builder(loader, file)
        builder.result.data = builder.build(node, ())
        return builder.result
    except yaml.MarkedYAMLError as exc:
        raise _syntax_error(exc, file) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"not valid YAML: {exc}", (), file=file) from None
    finally:
        loader.dispose()


def load_yaml_file(path: Path, display: Optional[str] = None) -> LoadedYaml:
    name = display or str(path)
    text = read_text(path, (), "the file", MAX_FILE_BYTES, file=name,
                     hint="a spec is a short document; keep data out of it")
    return load_yaml_text(text, name)
