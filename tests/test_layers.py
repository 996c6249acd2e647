"""Layers go one way: CLI → compiler / runtime → schema (the spec and plan models and the contract both
sides share, schema/contract.py). The runtime never imports the compiler: it reads the plan, and what
both must agree on is written once in schema/. Checked on the source (every import statement, also the
ones inside functions), so a lazy import cannot hide an edge."""
import ast
from pathlib import Path

import pytest

from conftest import REPO

# Folder → the package it installs as (pyproject.toml's package-dir).
PACKAGES = {"schema": "tunespec.schema", "compiler": "tunespec.compiler", "runtime": "tunespec.runtime",
            "cli": "tunespec.cli"}
FORBIDDEN = {
    "tunespec.schema": ("tunespec.compiler", "tunespec.runtime", "tunespec.cli"),
    "tunespec.compiler": ("tunespec.runtime", "tunespec.cli"),
    "tunespec.runtime": ("tunespec.compiler", "tunespec.cli"),
}


def imported_modules(path: Path, package: str) -> set:
    """Absolute names of everything a module imports (`from .. import x` counts as `<parent>.x`)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                parent = ".".join(base + ([node.module] if node.module else []))
            else:
                parent = node.module
            found.add(parent)
            found.update(f"{parent}.{alias.name}" for alias in node.names)
    return found


def modules_of(package: str):
    folder = next(folder for folder, name in PACKAGES.items() if name == package)
    return sorted((REPO / folder).glob("*.py"))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layer_imports_nothing_above_it(package: str):
    crossings = [f"{path.relative_to(REPO)} imports {name}"
                 for path in modules_of(package) for name in sorted(imported_modules(path, package))
                 if name.startswith(FORBIDDEN[package])]
    assert not crossings, "\n".join(crossings)


def test_the_check_sees_relative_imports(tmp_path: Path):
    module = tmp_path / "m.py"
    module.write_text("from ..compiler import plan\nfrom .. import cli\n\ndef f():\n    import tunespec.compiler.x\n")
    assert {"tunespec.compiler.plan", "tunespec.cli", "tunespec.compiler.x"} <= imported_modules(
        module, "tunespec.runtime")
