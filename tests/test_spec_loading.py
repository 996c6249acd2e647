"""Spec loading: YAML numbers, `extends` merging and where errors point."""
from pathlib import Path

import pytest

from tunespec.compiler.errors import SpecError
from tunespec.compiler.spec_loader import load_spec

from conftest import REPO

BASE = REPO / "specs" / "mixtral-8x7b-viggo-qlora-fsdp.yaml"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_exponent_without_dot_is_a_number(tmp_path):
    text = BASE.read_text().replace("learning_rate: 2.0e-4", "learning_rate: 2e-4")
    spec = load_spec(write(tmp_path, "s.yaml", text)).spec
    assert spec.training.learning_rate == pytest.approx(2e-4)


def test_extends_merges_mappings_replaces_scalars_and_null_removes():
    loaded = load_spec(REPO / "specs" / "mixtral-8x7b-viggo-qlora-p4de-spot.yaml")
    spec = loaded.spec
    assert spec.name == "mixtral-viggo-qlora-spot"
    assert spec.training.micro_batch_size == 16  # child wins
    assert spec.training.epochs == 1  # inherited
    assert spec.backend.instance_type == "ml.p4de.24xlarge"
    assert spec.backend.keep_alive_seconds == 0  # null removed the base's 1800: the default applies
    assert spec.backend.role.endswith("SageMakerTrainingRole")


def test_extends_child_changing_the_backend_type_replaces_the_block(tmp_path):
    child = write(tmp_path, "child.yaml", f"apiVersion: tunespec/v1\nextends: {BASE}\nname: local-copy\n"
                                          "backend:\n  type: local\n  device: cpu\n")
    assert load_spec(child).spec.backend.type == "local"


def test_error_in_inherited_value_points_into_the_base_file(tmp_path):
    base = write(tmp_path, "base.yaml", BASE.read_text().replace("micro_batch_size: 10", "micro_batch_size: -1"))
    child = write(tmp_path, "child.yaml", "apiVersion: tunespec/v1\nextends: base.yaml\nname: child\n")
    with pytest.raises(SpecError) as caught:
        load_spec(child)
    error = caught.value
    assert error.file.endswith("base.yaml") and error.field_name() == "training.micro_batch_size"
    assert base.read_text().splitlines()[error.line - 1].strip().startswith("micro_batch_size")
