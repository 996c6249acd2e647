"""Every number the estimates rest on has a source (compiler/calibration.py): a measured value names
results files that exist and cases they hold; and the estimator's modules keep no calibration of their own."""
import ast
import fnmatch
import inspect
import json

import pytest

from tunespec.compiler import calibration, catalog
from tunespec.compiler.calibration import Assumption, Calibrated, Datasheet, Measured

from conftest import REPO

SOURCE_TYPES = (Measured, Datasheet, Assumption, Calibrated)
GROUPS = [group for _, group in inspect.getmembers(calibration, inspect.isclass)
          if group.__module__ == calibration.__name__ and group not in SOURCE_TYPES]
# The modules whose numbers calibration.py holds.
ESTIMATOR_MODULES = ("estimate_memory.py", "estimate_speed.py", "estimate.py")


def _leaves(value, name: str):
    """(name, value) for a group attribute, through any nesting of mappings."""
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _leaves(inner, f"{name}[{key!r}]")
    else:
        yield name, value


def _constants():
    for group in GROUPS:
        for attribute, value in vars(group).items():
            if not attribute.startswith("_"):
                yield from _leaves(value, f"{group.__name__}.{attribute}")


CONSTANTS = list(_constants())


def _case_names(path) -> set:
    cases = json.loads((REPO / path).read_text())["cases"]
    return set(cases) if isinstance(cases, dict) else {case.get("id") or case.get("name") for case in cases}


def test_every_group_holds_calibrated_constants():
    assert len(GROUPS) >= 10
    for group in GROUPS:
        assert [name for name in vars(group) if not name.startswith("_")], f"{group.__name__} holds nothing"


@pytest.mark.parametrize("name, constant", CONSTANTS, ids=[name for name, _ in CONSTANTS])
def test_constant_has_a_source(name, constant):
    assert isinstance(constant, Calibrated), f"{name} = {constant!r} is not Calibrated(value, source)"
    source = constant.source
    assert isinstance(source, (Measured, Datasheet, Assumption)), f"{name}: no source"
    assert isinstance(constant.value, (int, float, dict)), f"{name}: {constant.value!r} is not a number"
    if isinstance(source, Datasheet):
        assert source.document.strip(), f"{name}: which datasheet?"
    elif isinstance(source, Assumption):
        assert source.why.strip(), f"{name}: an assumption says why"
    else:
        assert source.results or source.elsewhere.strip(), f"{name}: measured where?"
        for path, patterns in source.results.items():
            assert path.startswith("benchmarks/") and (REPO / path).is_file(), f"{name}: no results file {path}"
            assert patterns, f"{name}: which cases of {path}?"
            names = _case_names(path)
            for pattern in patterns:
                assert fnmatch.filter(names, pattern), f"{name}: no case of {path} matches {pattern!r}"


def test_sources_of_each_kind_are_used():
    kinds = {type(constant.source) for _, constant in CONSTANTS if isinstance(constant, Calibrated)}
    assert kinds == {Measured, Datasheet, Assumption}


@pytest.mark.parametrize("module", ESTIMATOR_MODULES)
def test_estimator_modules_keep_no_calibration(module):
    """Shares, rates and sizes are calibration; what may stay in the formulas is counting (bytes per
    element, passes, small integers), half a byte for 4 bits, and unit conversions."""
    allowed = {0.0, 0.5, 1.0, 2.0, 1024, 3600, 1e9, 1e12}
    tree = ast.parse((REPO / "compiler" / module).read_text())
    found = [f"{module}:{node.lineno}: {node.value!r}" for node in ast.walk(tree)
             if isinstance(node, ast.Constant) and type(node.value) in (int, float) and node.value not in allowed
             and not (type(node.value) is int and 0 <= node.value <= 16)]
    assert not found, "numbers belong in compiler/calibration.py with their source:\n" + "\n".join(found)


def test_every_hardware_number_cites_its_source():
    """The catalog's hardware facts are data with their own sources: each accelerator its datasheet, each
    instance family AWS's page, the prices the pricing pages."""
    hardware = catalog.load_hardware()
    for name, accelerator in hardware["accelerators"].items():
        assert accelerator.get("source", "").strip(), f"accelerator {name}: no source"
    families = hardware["instance_source"]
    for name in hardware["instances"]:
        family = name.split(".")[1]
        assert any(family.startswith(prefix) for prefix in families), f"instance {name}: no instance_source"
    assert set(hardware["price_source"]) == {"sagemaker", "ec2"}
