"""Careless and hostile specs beyond the one-error corpus: what must still be accepted, and a seeded
fuzz of the example specs (any traceback, an exit other than 0/2, or over 2 s of CPU fails)."""
import contextlib
import io
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunespec.cli.console import print_sections
from tunespec.compiler.errors import SpecError
from tunespec.compiler.plan import build_plan
from tunespec.compiler.render import plan_files
from tunespec.compiler.secret_scan import scan
from tunespec.compiler.spec_loader import load_spec
from tunespec.compiler.summary import summary_markdown, summary_sections

from conftest import REPO

FILES = REPO / "tests" / "broken_specs" / "files"
EXAMPLES = sorted((REPO / "specs").glob("*.yaml")) + [REPO / "cli" / "defaults" / "smollm2-viggo-lora.yaml"]
MAX_CPU_SECONDS = 2.0
LOCAL_SPEC = """apiVersion: tunespec/v1
name: careful-case
model: {source: HuggingFaceTB/SmolLM2-135M-Instruct}
method: {type: lora}
data:
  train: {path: DATA}
  format: {type: template, prompt: "Sentence: {ref}\\nMeaning:\\n", completion: "{mr}"}
  max_seq_length: 512
training: {max_steps: 20, micro_batch_size: 2, precision: fp32}
backend: {type: local, device: cpu}
"""


def test_excel_csv_utf8_with_byte_order_mark_is_read(tmp_path):
    shutil.copy(FILES / "viggo-excel-bom.csv", tmp_path / "data.csv")
    (tmp_path / "spec.yaml").write_text(LOCAL_SPEC.replace("DATA", "data.csv"))
    plan = build_plan(load_spec(tmp_path / "spec.yaml"), cwd=tmp_path)
    assert plan["data"]["train"]["stats"]["rows"] == 20


def test_inherited_data_path_resolves_against_the_base_spec(tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "team" / "variants").mkdir(parents=True)
    shutil.copy(FILES / "base-with-data.yaml", tmp_path / "base" / "base.yaml")
    shutil.copy(FILES / "viggo-20.csv", tmp_path / "base" / "viggo-20.csv")
    (tmp_path / "team" / "variants" / "longer.yaml").write_text(
        "apiVersion: tunespec/v1\nextends: ../../base/base.yaml\nname: longer\ntraining: {max_steps: 40}\n")
    plan = build_plan(load_spec(tmp_path / "team" / "variants" / "longer.yaml"), cwd=tmp_path)
    assert plan["data"]["train"]["path"] == "base/viggo-20.csv"
    assert plan["batch"]["total_steps"] == 40


def test_accepted_risk_plans_and_keeps_its_warning():
    text = (REPO / "tests" / "broken_specs" / "164-does-not-fit.yaml").read_text()
    spec = REPO / "tests" / "broken_specs" / "164-does-not-fit.yaml"
    plan = build_plan(load_spec(spec, text=text + "accept_risks: [does-not-fit]\n"), cwd=REPO)
    assert plan["estimates"]["memory"]["verdict"] == "does-not-fit"
    assert "does-not-fit" in [w["code"] for w in plan["warnings"]]
    with pytest.raises(SpecError, match="does not fit"):  # without the field: tests/broken_specs/164
        build_plan(load_spec(spec), cwd=REPO)


def test_ordinary_environment_and_tags_are_not_secrets():
    data = {"backend": {"environment": {"TOKENIZERS_PARALLELISM": "false", "HF_HUB_ENABLE_HF_TRANSFER": "1",
                                        "HF_HUB_DISABLE_TOKEN": "true", "MAX_TOKENS": "4096",
                                        "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True",
                                        "MODEL_ID": "mistralai/Mixtral-8x7B-Instruct-v0.1"},
                        "tags": {"team": "ml-research", "cost-center": "cc-12345",
                                 "model": "Llama3170BInstructAWQ4bit", "commit": "main"}},
            "model": {"revision": "0123456789abcdef0123456789abcdef01234567"}}
    assert list(scan(data, (), (("backend", "environment"), ("backend", "tags")), ("env",))) == []


def test_markup_in_a_value_is_printed_as_text(tmp_path):
    # Markup closing a tag it never opened crashed rich's printing; here it is a folder's path.
    model = tmp_path / "[red]m[/bold]"
    model.mkdir(parents=True)
    (model / "config.json").write_text('{"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 64, '
                                       '"num_attention_heads": 4, "vocab_size": 100, "intermediate_size": 128}')
    shutil.copy(FILES / "viggo-20.csv", tmp_path / "data.csv")
    (tmp_path / "spec.yaml").write_text(LOCAL_SPEC.replace("DATA", "data.csv")
                                        .replace("{source: HuggingFaceTB/SmolLM2-135M-Instruct}",
                                                 '{source: "./[red]m[/bold]"}'))
    done = subprocess.run([sys.executable, "-m", "tunespec.cli.main", "plan", "spec.yaml", "-o", "plan"],
                          cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"},
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "[red]m[/bold]" in done.stdout


# --- seeded fuzz over the example specs -----------------------------------------------------------

HOSTILE_TEXT = ["", " ", "\n", "gpu\nrm -rf /", "$(touch /tmp/pwned)", "`id`", "{}", "{x!z}", "{name:>99999999}",
                "[/]", "[bold]x[/bold]", "../../../../etc/passwd", "/dev/zero", "hf_" + "A" * 34,
                "https://user:pass@example.com", "aws:tag", "é" * 40, "\u202e", "x" * 5000, "null", "~", "*"]
HOSTILE_NUMBERS = [0, -1, 1, 2**31, 2**32, 2**63, -(2**63), 10**18, 0.0, -0.0, 1e-300, 1e300, 0.5, 1.0, 1.5]
VALUES = st.one_of(
    st.sampled_from(HOSTILE_TEXT), st.sampled_from(HOSTILE_NUMBERS), st.booleans(), st.none(),
    st.integers(min_value=-10**19, max_value=10**19),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.text(max_size=20), st.lists(st.sampled_from(HOSTILE_TEXT + [1, None]), max_size=3),
    st.dictionaries(st.sampled_from(["type", "x", "path", "env"]), st.sampled_from(HOSTILE_TEXT + [1]), max_size=2),
)


def _paths(data: object, prefix: tuple = ()) -> list:
    out = [prefix] if prefix else []
    if isinstance(data, dict):
        for key, value in data.items():
            out += _paths(value, prefix + (key,))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            out += _paths(value, prefix + (index,))
    return out


def _mutate(data: dict, path: tuple, action: str, value: object) -> None:
    parent = data
    for part in path[:-1]:
        parent = parent[part]
    if action == "delete" and isinstance(parent, dict):
        del parent[path[-1]]
    elif action == "sibling" and isinstance(parent, dict):
        parent[f"{path[-1]}_extra" if isinstance(path[-1], str) else "extra"] = value
    else:
        parent[path[-1]] = value


def plan_in_process(spec: Path, text: str) -> int:
    """What `tunespec plan` does, in this process: the exit status it would give (0 or 2)."""
    try:
        plan = build_plan(load_spec(spec, text=text), cwd=REPO)
        plan_files(plan)
        summary_markdown(plan)
        print_sections("plan", summary_sections(plan))
        return 0
    except SpecError as error:
        error.format()
        return 2


@settings(max_examples=150, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_mutated_example_specs_plan_or_are_refused(data):
    spec = data.draw(st.sampled_from(EXAMPLES), label="example")
    tree = yaml.safe_load(spec.read_text(encoding="utf-8"))
    for _ in range(data.draw(st.integers(min_value=1, max_value=3), label="mutations")):
        paths = _paths(tree)
        if not paths:
            break
        path = data.draw(st.sampled_from(paths), label="path")
        _mutate(tree, path, data.draw(st.sampled_from(["replace", "delete", "sibling"]), label="action"),
                data.draw(VALUES, label="value"))
    text = yaml.safe_dump(tree, allow_unicode=True, sort_keys=False)
    started = time.process_time()
    # Any exception other than SpecError propagates: hypothesis reports it with the spec that raised it.
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        status = plan_in_process(spec, text)
    cpu_seconds = time.process_time() - started
    assert status in (0, 2)
    assert cpu_seconds < MAX_CPU_SECONDS, f"{cpu_seconds:.1f} s of CPU for a mutated {spec.name}:\n{text}"
