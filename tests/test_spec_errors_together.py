"""A spec's independent mistakes are reported together, each located, from one `tunespec validate`;
a mistake's consequences (a misspelt key is also a missing one) are not reported again."""
import inspect
import re
import subprocess
import sys

from conftest import REPO
from tunespec.compiler import checks, rules

DEFAULT = REPO / "cli" / "defaults" / "smollm2-viggo-lora.yaml"
ERROR_LINE = re.compile(r"^spec\.yaml:(?P<line>\d+):(?P<column>\d+): error: (?P<field>\S+): (?P<message>.+)$")


def validate(tmp_path, text: str) -> subprocess.CompletedProcess:
    (tmp_path / "spec.yaml").write_text(text, encoding="utf-8")
    return subprocess.run([sys.executable, "-m", "tunespec.cli.main", "validate", "spec.yaml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)


def errors_of(done: subprocess.CompletedProcess) -> dict:
    lines = [ERROR_LINE.match(line) for line in done.stderr.splitlines() if ": error: " in line]
    assert all(lines), done.stderr
    return {match["field"]: (int(match["line"]), match["message"]) for match in lines}


def test_three_independent_mistakes_are_reported_together(tmp_path):
    text = DEFAULT.read_text(encoding="utf-8")
    text = text.replace("  type: lora\n", "  type: lorra\n")
    text = text.replace("  max_seq_length: 256\n", "  max_seq_length: -5\n")
    text = text.replace("  learning_rate: 1.0e-3\n", "  learning_rate: fast\n")
    done = validate(tmp_path, text)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    errors = errors_of(done)
    lines = text.splitlines()
    assert set(errors) == {"method.type", "data.max_seq_length", "training.learning_rate"}, done.stderr
    for field, (line, _) in errors.items():
        assert field.rsplit(".", 1)[-1] + ":" in lines[line - 1], (field, lines[line - 1])
    assert "did you mean `lora`?" in done.stderr


def test_a_misspelt_key_is_one_mistake(tmp_path):
    done = validate(tmp_path, DEFAULT.read_text(encoding="utf-8").replace("\ntraining:\n", "\ntrainig:\n"))
    assert done.returncode == 2
    assert list(errors_of(done)) == ["trainig"], done.stderr


def test_refusals_of_independent_plan_rules_are_reported_together(tmp_path):
    text = DEFAULT.read_text(encoding="utf-8").replace("  precision: auto ", "  precision: fp16 ")
    text = text.replace("lora: {r: 16, alpha: 32,", "lora: {r: 4096, alpha: 32,")
    text = text.replace("pkg://tunespec/tunespec/cli/defaults/data/", str(REPO / "cli" / "defaults" / "data") + "/")
    done = validate(tmp_path, text)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    errors = errors_of(done)
    assert set(errors) == {"training.precision", "method.lora.r"}, done.stderr
    assert "not available on a CPU" in errors["training.precision"][1]


def test_mistakes_found_while_building_the_plan_are_reported_together(tmp_path):
    """An unknown architecture (the model section), a missing data file (the data section) and a strategy
    the backend cannot run (a check): three phases of building the plan, three located errors."""
    text = DEFAULT.read_text(encoding="utf-8").replace("  architecture: smollm2-135m\n", "  architecture: smollm2-135mm\n")
    text = text.replace('train: {path: "pkg://tunespec/tunespec/cli/defaults/data/viggo_train.csv"',
                        'train: {path: "data/missing.csv"')
    text = text.replace("\nbackend:\n", "\ndistribution:\n  strategy: smp\nbackend:\n")
    done = validate(tmp_path, text)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    errors = errors_of(done)
    assert set(errors) == {"model.architecture", "data.train.path", "distribution.strategy"}, done.stderr
    lines = text.splitlines()
    for value, field in (("smollm2-135mm", "model.architecture"), ("data/missing.csv", "data.train.path"),
                         ("strategy: smp", "distribution.strategy")):
        assert value in lines[errors[field][0] - 1], (field, errors[field])
    assert "unknown architecture" in errors["model.architecture"][1]
    assert "no such file" in errors["data.train.path"][1]
    assert "runs only in SageMaker training jobs" in errors["distribution.strategy"][1]
    assert done.stderr.count("hint: ") == 3, done.stderr


def test_a_backends_refusals_are_reported_with_the_others(tmp_path):
    """Seed 000 on SageMaker with four backend mistakes (an old framework image, spot with a warm pool, a
    reserved tag, a token from this machine in the request): the SageMaker backend's own refusals."""
    text = (REPO / "specs" / "mixtral-8x7b-viggo-qlora-fsdp.yaml").read_text(encoding="utf-8")
    text = text.replace('  framework_version: "2.5.1"', '  framework_version: "2.2.0"')
    text = text.replace("  keep_alive_seconds: 1800\n", "  keep_alive_seconds: 1800\n  spot: {enabled: true}\n"
                                                         "  tags: {tunespec:spec: other}\n")
    text = re.sub(r"  hf_token: \{secrets_manager_arn: .*\}", "  hf_token: {env: HF_TOKEN}", text)
    done = validate(tmp_path, text)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    errors = errors_of(done)
    assert set(errors) == {"backend.framework_version", "backend.keep_alive_seconds", "backend.tags.tunespec:spec",
                           "secrets.hf_token"}, done.stderr
    assert "too old" in errors["backend.framework_version"][1]
    assert "reserved" in errors["backend.tags.tunespec:spec"][1]


def test_one_rules_refusals_of_several_fields_are_reported_together(tmp_path):
    """GPU settings on the CPU: the precision, the Liger kernels, the attention kernel and TF32."""
    text = DEFAULT.read_text(encoding="utf-8").replace("  precision: auto ", "  precision: fp16 ")
    text = text.replace("  seed: 42\n", "  seed: 42\n  liger_kernels: true\n  tf32: true\n")
    text = text.replace("  offline: true\n", "  offline: true\n  attn_implementation: flash_attention_2\n")
    done = validate(tmp_path, text)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert set(errors_of(done)) == {"training.precision", "training.liger_kernels", "model.attn_implementation",
                                    "training.tf32"}, done.stderr


def test_independent_parts_of_one_section_are_reported_together(tmp_path):
    """Both data files missing, and two adapter settings the model cannot take."""
    text = DEFAULT.read_text(encoding="utf-8").replace("pkg://tunespec/tunespec/cli/defaults/data/", "data/")
    text = text.replace("target_modules: all-linear}", "target_modules: [q_proj, qkv_proj], include_experts: true}")
    done = validate(tmp_path, text)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    errors = errors_of(done)
    assert set(errors) == {"data.train.path", "data.eval.path", "method.lora.target_modules",
                           "method.lora.include_experts"}, done.stderr


def test_every_rule_is_in_a_group_of_checks():
    walked = [check.rule for group in checks.GROUPS.values() for check in group]
    rule_functions = [function for _, function in inspect.getmembers(rules, inspect.isfunction)
                      if function.__module__ == rules.__name__
                      and list(inspect.signature(function).parameters) == ["spec", "plan"]]
    assert rule_functions and not [function.__name__ for function in rule_functions if function not in walked]


def test_a_layouts_refusals_of_several_fields_are_reported_together(tmp_path):
    """Seed 001 under SMP with an expert parallel degree that does not divide the 8 experts and a tensor
    parallel degree that does not divide the 16 GPUs; the hybrid shard degree, checked against a valid
    expert parallel degree only, is not a third mistake."""
    text = (REPO / "specs" / "mixtral-8x7b-sst2-smp-expert-parallel.yaml").read_text(encoding="utf-8")
    text = text.replace("  expert_parallel_degree: 2\n", "  expert_parallel_degree: 3\n  tensor_parallel_degree: 3\n")
    done = validate(tmp_path, text)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    errors = errors_of(done)
    assert set(errors) == {"distribution.expert_parallel_degree", "distribution.tensor_parallel_degree"}, done.stderr
    assert "8 experts" in errors["distribution.expert_parallel_degree"][1]
