"""Every import between tunespec's folders resolves for a static reader: an editor's go-to-definition (jedi)
on each cross-folder import lands in the file that Python imports, read straight from the checkout."""
import ast
import importlib
import inspect
from pathlib import Path

import jedi
import pytest

from conftest import REPO

FOLDERS = ("cli", "schema", "compiler", "runtime")


def cross_folder_imports():
    """(file, line, column of the first imported name, the file Python defines it in) per `from ..x import y`."""
    for folder in FOLDERS:
        for path in sorted((REPO / folder).glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and node.level >= 2:
                    alias = node.names[0]
                    yield path, alias.lineno, alias.col_offset, defining_file(path, node, alias.name)


def defining_file(path: Path, node: ast.ImportFrom, name: str) -> Path:
    """Where the installed package defines `name` as this import reaches it: a module, a class, a function,
    or (for a constant) the module it is imported from."""
    package = ["tunespec", *path.relative_to(REPO).parent.parts][:-(node.level - 1) or None]
    module = importlib.import_module(".".join(package + ([node.module] if node.module else [])))
    if not hasattr(module, name):  # a submodule not imported by its package's __init__
        importlib.import_module(f"{module.__name__}.{name}")
    value = getattr(module, name)
    if inspect.ismodule(value):
        return Path(value.__file__)
    if inspect.isclass(value) or inspect.isfunction(value):
        return Path(inspect.getsourcefile(value))
    return Path(module.__file__)


IMPORTS = list(cross_folder_imports())


def test_each_folder_imports_across_folders():
    assert {path.parent.name for path, *_ in IMPORTS} >= {"cli", "compiler", "runtime"}
    assert len(IMPORTS) > 50


@pytest.mark.parametrize("path,line,column,target", IMPORTS,
                         ids=[f"{p.relative_to(REPO)}:{line}" for p, line, _, _ in IMPORTS])
def test_go_to_definition_lands_in_the_imported_file(path, line, column, target):
    script = jedi.Script(path=str(path), project=jedi.Project(str(REPO)))
    found = script.goto(line, column, follow_imports=True)
    assert found, f"{path.relative_to(REPO)}:{line}: jedi resolves nothing"
    assert {Path(d.module_path).resolve() for d in found} == {target.resolve()}
