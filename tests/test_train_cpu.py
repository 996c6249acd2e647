"""The trainer for real on the CPU: the embedded default (SmolLM2-135M-Instruct + LoRA on the ViGGO
slice), shortened, killed with SIGKILL after a checkpoint, resumed by `apply`, then its outputs,
generations and scores checked. Plus fast checks of the pieces around it."""
import json
import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest
from rich.console import Console

from tunespec.compiler.plan import build_plan, canonical_json
from tunespec.compiler.spec_loader import load_spec
from tunespec.runtime import run_layout
from tunespec.runtime.local import apply_local, start_trainer, trainer_command
from tunespec.package_files import package_file
from tunespec.runtime.progress import read_events

DEFAULT_SPEC = Path(__file__).resolve().parents[1] / "tunespec" / "defaults" / "smollm2-viggo-lora.yaml"
DATA = "pkg://tunespec/tunespec/defaults/data/"
MAX_STEPS, SAVE_EVERY, KILL_AFTER_STEP = 12, 4, 6
VALID_SENTENCES = [
    "I wanted to like Grimlore Games' 2017 entry, but in SpellForce 3 they just didn't get anything right.",
    "Have you ever played a game developed by EA Canada, like FIFA 12?",
]


def compile_test_plan(root: Path) -> dict:
    """The default spec, extended: fewer steps and eval rows, so the whole file runs in minutes."""
    spec = root / "spec.yaml"
    spec.write_text(textwrap.dedent(f"""\
        apiVersion: tunespec/v1
        name: smollm2-viggo-cpu-test
        extends: {DEFAULT_SPEC}
        data:
          train: {{path: {package_file(DATA + "viggo_train.csv")}}}
          eval: {{path: {package_file(DATA + "viggo_valid.csv")}, limit: 16}}
        training:
          max_steps: {MAX_STEPS}
          checkpoint_every_steps: {SAVE_EVERY}
          eval_every_steps: {MAX_STEPS}
        outputs:
          merged_model: true
        backend: {{type: local, device: cpu, run_dir: {root / "run"}}}
        """))
    return build_plan(load_spec(spec), cwd=root)


def console() -> Console:
    return Console(record=True, width=200)


def step_losses(events: list) -> dict:
    return {e["step"]: e["loss"] for e in events if e["event"] == "loss"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Train, SIGKILL after step 6 (checkpoint-4 written), fake a checkpoint cut short mid-save, apply again."""
    root = tmp_path_factory.mktemp("cpu-train")
    plan = compile_test_plan(root)
    run_dir = Path(plan["backend"]["run_dir"])
    run_dir.mkdir()
    (run_dir / run_layout.PLAN).write_text(canonical_json(plan))
    with (run_dir / "first-session.log").open("wb") as log:
        first = start_trainer(trainer_command(plan, run_dir / run_layout.PLAN, run_dir), log)
        deadline, reached = time.time() + 400, False
        while not reached and time.time() < deadline and first.poll() is None:
            time.sleep(0.2)
            events, _ = read_events(run_dir / run_layout.PROGRESS)
            steps = [e["step"] for e in events if e["event"] == "step"]
            complete = run_layout.last_complete_checkpoint(run_dir)
            reached = bool(steps) and steps[-1] >= KILL_AFTER_STEP and complete is not None \
                and complete.name == f"checkpoint-{SAVE_EVERY}"
        assert reached and first.poll() is None, (run_dir / "first-session.log").read_text()[-3000:]
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    killed_session, _ = read_events(run_dir / run_layout.PROGRESS)
    # A kill during a save leaves a checkpoint folder without trainer_state.json: resume must skip it.
    partial = run_dir / run_layout.CHECKPOINTS / f"checkpoint-{SAVE_EVERY + 1}"
    partial.mkdir()
    (partial / "adapter_model.safetensors").write_bytes(b"cut short")

    resumed = console()
    code = apply_local(plan, run_dir, resumed)
    assert code == 0, resumed.export_text() + (run_dir / run_layout.CONSOLE_LOG).read_text()[-3000:]
    return {"plan": plan, "run_dir": run_dir, "killed_session": killed_session, "report": resumed.export_text(),
            "resumed_session": read_events(run_dir / run_layout.PROGRESS)[0]}


def test_eval_loss_falls(run):
    metrics = json.loads((run["run_dir"] / run_layout.METRICS).read_text())
    assert metrics["eval_loss_history"][0]["step"] == 0  # measured before any training
    assert metrics["final_eval_loss"] < 0.6 * metrics["initial_eval_loss"], metrics["eval_loss_history"]
    assert metrics["best_eval_loss"] == min(e["eval_loss"] for e in metrics["eval_loss_history"])
    assert metrics["tokens_per_s"] > 0 and metrics["peak_memory_bytes"] > 2**28
    assert "eval loss" in run["report"] and str(run["run_dir"] / "adapter") in run["report"]


def test_resume_after_kill_continues_from_the_last_complete_checkpoint(run):
    killed, resumed = run["killed_session"], run["resumed_session"]
    [start] = [e for e in resumed if e["event"] == "start"]
    assert start["resumed_from_step"] == SAVE_EVERY
    assert [e["step"] for e in resumed if e["event"] == "step"] == list(range(SAVE_EVERY + 1, MAX_STEPS + 1))
    metrics = json.loads((run["run_dir"] / run_layout.METRICS).read_text())
    assert (metrics["global_step"], metrics["resumed_from_step"]) == (MAX_STEPS, SAVE_EVERY)
    history = {e["step"]: e["loss"] for e in metrics["train_loss_history"]}
    assert sorted(history) == list(range(1, MAX_STEPS + 1))
    before_kill = step_losses(killed)
    # The steps up to the checkpoint are the first session's own (carried in the checkpoint) ...
    assert all(history[step] == before_kill[step] for step in range(1, SAVE_EVERY + 1))
    # ... and the redone ones repeat them: same data order, same weights and optimizer state.
    for step in range(SAVE_EVERY + 1, KILL_AFTER_STEP + 1):
        assert history[step] == pytest.approx(before_kill[step], abs=2e-3), (step, history[step], before_kill[step])


def test_outputs_are_written(run):
    run_dir = run["run_dir"]
    adapter = run_dir / run_layout.ADAPTER
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json"} <= {p.name for p in adapter.iterdir()}
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 16
    assert (run_dir / run_layout.MERGED / "model.safetensors").is_file()
    assert (run_dir / run_layout.LOSS_PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((run_dir / run_layout.TENSORBOARD).rglob("events.out.tfevents.*"))
    assert "resuming from" in (run_dir / run_layout.TRAIN_LOG).read_text()
    [sample] = json.loads((run_dir / run_layout.SAMPLES).read_text())
    assert sample["base"] != sample["tuned"]


def test_adapter_loads_back_and_changes_generations(run):
    from tunespec.runtime.generate import generate

    answers = generate(run["run_dir"], VALID_SENTENCES, max_new_tokens=40)
    assert [prompt for prompt, _, _ in answers] == VALID_SENTENCES
    for _, base, tuned in answers:
        assert base != tuned
    acts = ("inform", "request", "give_opinion", "confirm", "verify_attribute", "suggest",
            "request_explanation", "recommend", "request_attribute")
    assert any(tuned.startswith(tuple(act + "(" for act in acts)) for _, _, tuned in answers), answers


def test_tuned_model_scores_better_on_valid_rows(run):
    from tunespec.runtime.evaluate import evaluate

    result = evaluate(run["run_dir"], limit=4, max_new_tokens=48)
    assert result["tuned"]["rows"] == 4
    assert result["tuned"]["slot_f1"] > result["base"]["slot_f1"], result


def test_apply_on_a_finished_run_reports_without_training(run):
    run_dir = run["run_dir"]
    before = (run_dir / run_layout.PROGRESS).read_text()
    again = console()
    started = time.time()
    assert apply_local(run["plan"], run_dir, again) == 0
    assert time.time() - started < 5
    assert "holds a finished run" in again.export_text()
    assert (run_dir / run_layout.PROGRESS).read_text() == before


# ---- fast checks ------------------------------------------------------------------------------------

def test_last_complete_checkpoint_skips_checkpoints_cut_short(tmp_path):
    folder = tmp_path / run_layout.CHECKPOINTS
    for step, state in ((5, '{"global_step": 5}'), (10, '{"global_step": 10}'), (15, '{"global_st')):
        (folder / f"checkpoint-{step}").mkdir(parents=True)
        (folder / f"checkpoint-{step}" / "trainer_state.json").write_text(state)
    (folder / "checkpoint-20").mkdir()
    assert run_layout.last_complete_checkpoint(tmp_path).name == "checkpoint-10"
    assert run_layout.last_complete_checkpoint(tmp_path / "nothing") is None


def test_apply_refuses_a_run_folder_of_another_spec(tmp_path):
    plan = compile_test_plan(tmp_path)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    other = dict(plan, spec=dict(plan["spec"], hash="0" * 64))
    (run_dir / run_layout.PLAN).write_text(canonical_json(other))
    out = console()
    assert apply_local(plan, run_dir, out) == 2
    assert "holds a run of another spec" in out.export_text()


def test_several_processes_start_under_torchrun(tmp_path):
    plan = compile_test_plan(tmp_path)
    plan["launch"] = dict(plan["launch"], launcher="torchrun", processes_per_node=2)
    command = trainer_command(plan, Path("p.json"), Path("r"))
    assert command[:6] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    assert command[6:] == ["-m", "tunespec.runtime.train", "--plan", "p.json", "--run-dir", "r"]


def test_trainer_config_refuses_unknown_keys_and_maps_warmup_ratio(tmp_path):
    from tunespec.runtime.train import PlanError, trainer_config

    plan = compile_test_plan(tmp_path)
    plan["trainer"]["warmup_ratio"] = 0.1
    config = trainer_config(plan, tmp_path, has_eval=True, resuming=True)
    assert config.warmup_steps == 0.1 and config.eval_on_start is False and config.use_cpu
    plan["trainer"]["learning_rat"] = 1e-4
    with pytest.raises(PlanError, match="learning_rat"):
        trainer_config(plan, tmp_path, has_eval=True, resuming=False)


def test_lora_adapts_fused_moe_experts_when_asked():
    from peft import get_peft_model
    from transformers import MixtralConfig, MixtralForCausalLM

    from tunespec.runtime.model_loading import lora_config

    model = MixtralForCausalLM(MixtralConfig(vocab_size=64, hidden_size=16, intermediate_size=32,
                                             num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                             num_local_experts=4, num_experts_per_tok=2))
    lora = {"r": 2, "alpha": 4, "dropout": 0.0, "target_modules": ["q_proj"], "include_experts": True,
            "bias": "none", "use_dora": False}
    config = lora_config({"method": {"type": "lora", "lora": lora}}, model)
    assert sorted(config.target_parameters) == ["experts.down_proj", "experts.gate_up_proj"]
    trainable = [n for n, p in get_peft_model(model, config).named_parameters() if p.requires_grad]
    assert any("experts" in name and "lora_A" in name for name in trainable)


def test_viggo_scores():
    from tunespec.runtime.evaluate_mr import parse_mr, score

    reference = "inform(name[FIFA 12], genres[sport, simulation], rating[good])"
    assert parse_mr(reference) == ("inform", {("name", "fifa 12"), ("genres", "sport, simulation"),
                                              ("rating", "good")})
    result = score([reference, "confirm(name[FIFA 12], rating[poor])"], [reference, "confirm(name[FIFA 12])"])
    assert result["exact_match"] == 0.5 and result["act_accuracy"] == 1.0
    assert result["slot_precision"] == 0.8 and result["slot_recall"] == 1.0
    assert result["slot_f1"] == pytest.approx(0.8889, abs=1e-4)
