"""Issue 15's proof on one H200: packed `tunespec apply` against the probe's plain batches, MFU, a torch
profiler trace of the packed apply step against the plain step, and Axolotl side by side.

Ran on one H200 on 2026-12-01 in four calls (speed-h200.md says what each measured). To run it again, from the
repository root on this machine first:

    python3 benchmarks/gpu/make_tokenizer.py .gpu/viggo .gpu/llama3-8b-skeleton 16000   # once (see README.md)
    /work/shared/device/fetch-wheels.sh                                                  # wheels into .whl/
    python3 benchmarks/gpu/axolotl_wheels.py                                            # .whl-axolotl/ (axolotl cases)
    python -m pip wheel --no-deps --no-build-isolation -w .whl .                        # tunespec's own wheel
    # optional, as a wheel in .whl/: flash-attn built for torch 2.11 + CUDA 13 (case apply-flash_attention_2)

then on the device (`run` with carry [".whl", ".gpu", ".whl-axolotl"], kind nvidia-h200, from the repository
root there). The carried tree must stay under 64 MiB: leave .whl's 41 MiB bitsandbytes wheel out (.whl-axolotl
holds a CUDA-13-only one) and move the two committed profile traces (profile-*-h200-*.json.gz, 5 MiB) out of the
working tree for the call:

    source benchmarks/gpu/device_setup.sh > $OUT/setup.log 2>&1
    python3 benchmarks/gpu/packed_apply.py --out $OUT --deadline-s 340 apply-auto-compile axolotl-compile naive-trl apply-auto

(a later call on a warm machine finds the earlier calls' results in /tmp/tunespec-gpu/packed-results.json;
on a fresh one it starts a new file: keep every call's results.json). Rehearsal on a CPU:

    python3 benchmarks/gpu/packed_apply.py --out /tmp/pa-dry --dry-cpu probe apply-sdpa apply-auto profile-packed profile-plain
    PYTHONPATH=<triton> python3 benchmarks/gpu/packed_apply.py --out /tmp/pa-dry --dry-cpu --axolotl-site <site> axolotl

(<site>: a folder where .whl-axolotl's wheels are installed --no-deps, numba and llvmlite for this machine's
Python; <triton>: one where a triton wheel is, as Axolotl's trainer imports it even on a CPU. On a CPU Axolotl runs
with sdpa, fp32, no Liger and no Triton LoRA kernels: see CPU_CHANGES.)

Cases (every spec is made for the H200: micro batch 4 x accumulation 1, the base spec's global batch of 4
sequences, where an H100 fits 2 x 2; the suffix -mbN sets micro batch N, accumulation 4 / N):
  probe                   `tunespec probe` of specs/llama3-8b-viggo-lora.yaml: plain causal batches (mb 4 x 2048)
  apply-<kernel>          `tunespec apply` of that spec (packed, Liger) with model.attn_implementation <kernel>:
                          sdpa, flex_attention, flash_attention_2, auto
  probe-1b-full,          the same with the Llama-3.2-1B shape (random weights built here by
  apply-auto-1b-full      build_random_model.py) fully fine-tuned
  naive-trl               `tunespec apply` of specs/llama3-8b-viggo-lora-naive.yaml: the seed recipe's naive TRL setup
                          (no packing, checkpointing, no Liger)
  axolotl                 Axolotl 0.19 (`python -m axolotl.cli.train`, installed from .whl-axolotl into its own
                          site folder) on the same model folder, rows, sequence length, LoRA, batch and optimizer
                          settings, with its recommended setup for this case: multipack sample packing, flex
                          attention (flash attention where flash-attn is installed), the Liger plugin, its
                          LoRA kernels; steady real tokens/s, loss and peak memory recorded by axolotl_meter.py
  axolotl-compile         the same with torch_compile (Axolotl's docs recommend it with flex attention)
  profile-packed          torch profiler over 2 micro steps (after 4) of the packed apply step (apply-auto's plan)
  profile-plain           the same over the probe's plain step; both write a Chrome trace (.json.gz) and a
                          table of the top kernels by device time (.txt)

Every apply case records tokens/s (the apply report's, and steady: steps 5-24 from step times and logged
non-padding token counts), tokens per optimizer step, peak allocated memory, first and last loss, the plan's
estimate, and MFU = steady tokens/s x the plan's training FLOPs per token / the datasheet's dense bf16 peak.
The summary checks the issue's targets: packed apply >= 95% of the probe's tokens/s, MFU >= 40%.
"""
import argparse
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
import run_all  # noqa: E402  (same folder: the driver of issue 4's runs, whose helpers this reuses)

BASE_SPEC = "llama3-8b-viggo-lora.yaml"
NAIVE_SPEC = "llama3-8b-viggo-lora-naive.yaml"  # the seed recipe's setup: no packing, checkpointing, no Liger
WORK = run_all.WORK
STATE = WORK / "packed-results.json"
KERNELS = ("sdpa", "flex_attention", "flash_attention_2", "auto")
PROFILE_WAIT, PROFILE_ACTIVE = 4, 2
TARGET_SHARE_OF_PROBE, TARGET_MFU = 0.95, 0.40
# seconds, from the H200 runs of 2026-12-01 (plan + apply 60-70 s, Axolotl 81-93 s, the naive setup 60 s)
EXPECTED_S = {"probe": 70, "naive-trl": 70, "axolotl": 100, "profile-packed": 120, "profile-plain": 90,
              **{f"apply-{kernel}": 80 for kernel in KERNELS}}
DRY_DATA = "pkg://tunespec/tunespec/cli/defaults/data/viggo_train.csv"
MICRO_BATCH, GLOBAL_BATCH = 4, 4
SMALL_MODEL = WORK / "llama-3.2-1b"


def derived_spec(name: str, changes: dict, dry: bool, base: str = BASE_SPEC) -> Path:
    """A spec extending `base` with `changes` (sections merged one level deep), written beside it (its relative
    data path stays valid); JSON is YAML. On the H200 the batch is sized to its memory: micro batch
    MICRO_BATCH x accumulation GLOBAL_BATCH / MICRO_BATCH (the base spec's 2 x 2 fits an H100)."""
    spec = run_all.SPECS / f"_pa-{name}.yaml"
    micro = changes.get("training", {}).get("micro_batch_size", MICRO_BATCH)
    text = {"extends": base, "name": f"pa-{name}".replace("_", "-"),
            "training": {"micro_batch_size": micro, "gradient_accumulation": max(1, GLOBAL_BATCH // micro)},
            "backend": {"hardware": "h200-141gb"}}
    for section, values in changes.items():
        text[section] = {**text.get(section, {}), **values}
    if dry:
        text["model"] = {**text.get("model", {}), "source": str(WORK / "tiny-llama"), "architecture": None}
        text.update(data={"train": {"path": DRY_DATA, "format": "csv", "limit": 64}, "max_seq_length": 256},
                    backend={"type": "local", "device": "cpu", "hardware": None})
        text["training"].update(max_steps=6, liger_kernels=False, precision="fp32")
    spec.write_text(json.dumps(text, indent=2) + "\n")
    return spec


def plan_of(name: str, changes: dict, dry: bool, base: str = BASE_SPEC) -> tuple:
    spec = derived_spec(name, changes, dry, base)
    plan_dir = WORK / "plans" / name
    shutil.rmtree(plan_dir, ignore_errors=True)
    try:
        code = run_all.tunespec("plan", str(spec), "-o", str(plan_dir), log=run_all.LOGS / f"{name}-plan.log",
                                timeout=120)
    finally:
        spec.unlink()
    return code, plan_dir


def case_changes(name: str) -> tuple:
    """(case name without its variant suffixes, spec changes): `-mbN` sets the micro batch (the global batch
    stays GLOBAL_BATCH sequences); `-compile` sets training.torch_compile, `-noliger` turns Liger off; `-1b-full`
    is the Llama-3.2-1B shape fully fine-tuned (build_case_model makes its random weights)."""
    changes = {"training": {}}
    found = re.search(r"-mb(\d+)$", name)
    if found:
        changes["training"]["micro_batch_size"] = int(found.group(1))
        name = name[:found.start()]
    if name.endswith("-compile"):
        changes["training"]["torch_compile"] = True
        name = name[:-len("-compile")]
    if name.endswith("-noliger"):
        changes["training"]["liger_kernels"] = False
        name = name[:-len("-noliger")]
    if name.endswith("-1b-full"):
        changes.update(model={"source": str(SMALL_MODEL), "architecture": "llama-3.2-1b"}, method={"type": "full"})
        name = name[:-len("-1b-full")]
    return name, changes


def build_case_model(changes: dict, dry: bool) -> None:
    """The random weights of a case's model other than the base spec's (device_setup.sh builds that one)."""
    if not dry and changes.get("model", {}).get("source") == str(SMALL_MODEL):
        subprocess.run([sys.executable, str(HERE / "build_random_model.py"), "llama-3.2-1b", str(SMALL_MODEL)],
                       check=True)


def replay_settings(plan: dict) -> dict:
    """The plan's settings as benchmarks/estimate_errors.make_plan takes them (its `replay` block)."""
    lora = plan["method"]["lora"]
    return {"arch": plan["model"]["architecture"]["name"], "method": plan["method"]["type"],
            "micro": plan["batch"]["micro_batch_size"], "accumulation": plan["batch"]["gradient_accumulation"],
            "seq": plan["batch"]["sequence_length"], "checkpointing": plan["trainer"]["gradient_checkpointing"],
            "liger": plan["trainer"]["use_liger_kernel"], "hardware": plan["devices"].get("hardware"),
            "attn": plan["model"]["attn_implementation"], "packing": plan["data"]["packing"],
            "tokens_per_example": plan["data"]["tokens_per_example"], "num_examples": plan["data"]["num_examples"],
            **({"cast_input": lora["cast_input_to_adapter_dtype"]} if lora else {})}


def mfu(plan: dict, tokens_per_s) -> float:
    speed, peak = plan["estimates"]["throughput"], plan["devices"].get("peak_tflops")
    if not tokens_per_s or not peak or not speed.get("flops_per_token"):
        return None
    return round(tokens_per_s * speed["flops_per_token"] / (peak * 1e12), 3)


def run_apply(name: str, timeout: float, dry: bool, base: str = BASE_SPEC) -> dict:
    """`tunespec apply` of the case's spec: apply-<kernel>[-1b-full][-mbN], or naive-trl (the naive spec)."""
    base_name, changes = case_changes(name)
    build_case_model(changes, dry)
    kernel = base_name[len("apply-"):] if base_name.startswith("apply-") else "auto"
    result = {"case": name, "kind": "apply", "attn_requested": kernel}
    changes["model"] = {**changes.get("model", {}), "attn_implementation": kernel}
    code, plan_dir = plan_of(name, changes, dry, base)
    if code != 0:
        return {**result, "exit_code": code, "failed": "plan (see the plan log: a kernel this machine lacks?)"}
    plan = json.loads((plan_dir / "plan.json").read_text())
    run_dir = WORK / "runs" / name
    shutil.rmtree(run_dir, ignore_errors=True)
    started = time.time()
    code = run_all.tunespec("apply", str(plan_dir), "--run-dir", str(run_dir), log=run_all.LOGS / f"{name}-apply.log",
                            timeout=timeout)
    result.update(exit_code=code, apply_wall_s=round(time.time() - started, 1), estimate=run_all.estimates_of(plan),
                  attn_implementation=plan["model"]["attn_implementation"], attn_reason=plan["model"]["attn_reason"],
                  trainer={k: plan["trainer"].get(k) for k in ("pad_to_multiple_of", "dataloader_num_workers",
                                                                "dataloader_pin_memory", "logging_nan_inf_filter")},
                  replay=replay_settings(plan))
    metrics_file = run_dir / "metrics.json"
    if code != 0 or not metrics_file.is_file():
        return {**result, "failed": "apply"}
    metrics = json.loads(metrics_file.read_text())
    steady = run_all.wall_clock_rate(run_dir)
    result["measured"] = {"tokens_per_s": metrics["tokens_per_s"], "peak_memory_gib": metrics["peak_memory_gib"],
                          "first_train_loss": (metrics["train_loss_history"] or [{}])[0].get("loss"),
                          "final_train_loss": metrics["final_train_loss"], "global_step": metrics["global_step"],
                          **steady, "steady_tokens_per_s": steady.get("wall_tokens_per_s_after_warmup")}
    result["mfu"] = mfu(plan, steady.get("wall_tokens_per_s_after_warmup") or metrics["tokens_per_s"])
    return result


def run_probe(name: str, timeout: float, dry: bool) -> dict:
    """`tunespec probe` of the case's spec; its plan gives the replay settings (estimated as the plain loop)."""
    changes = case_changes(name)[1]
    build_case_model(changes, dry)
    code, plan_dir = plan_of(name, changes, dry)
    if code != 0:
        return {"case": name, "kind": "probe", "exit_code": code, "failed": "plan"}
    plan = json.loads((plan_dir / "plan.json").read_text())
    spec = derived_spec(name, changes, dry)
    log = run_all.LOGS / f"{name}.txt"
    try:
        code = run_all.tunespec("probe", str(spec), "--steps", "8", log=log, timeout=timeout)
    finally:
        spec.unlink()
    text = log.read_text()

    def measured(row: str):
        found = re.search(rf"{row}\s*[│|]\s*([\d,.]+)", text)
        return float(found.group(1).replace(",", "")) if found else None

    return {"case": name, "kind": "probe", "exit_code": code, "output": text[-4000:],
            "tokens_per_s": measured("tokens/s"), "replay": replay_settings(plan),
            "measured": {"steady_tokens_per_s": measured("tokens/s"),
                         "peak_memory_gib": measured("peak memory allocated"),
                         "peak_reserved_gib": measured("peak memory reserved")}}


# ---- profiles ----------------------------------------------------------------------------------------

def profile_side(side: str, out: Path, dry: bool) -> int:
    """In this process: the packed apply of apply-auto's plan, or the probe's plain step, under the profiler."""
    import torch
    from torch.profiler import ProfilerActivity, profile, schedule

    from tunespec.runtime import probe, sft_trainer, train

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    trace = out / f"profile-{side}"

    def exported(profiler):
        with gzip.open(f"{trace}.json.gz", "wt") as handle:
            profiler.export_chrome_trace(f"{trace}.json")
            handle.write(Path(f"{trace}.json").read_text())
        Path(f"{trace}.json").unlink()
        sort = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
        Path(f"{trace}.txt").write_text(profiler.key_averages().table(sort_by=sort, row_limit=40))

    profiler = profile(activities=activities, schedule=schedule(wait=PROFILE_WAIT, warmup=1, active=PROFILE_ACTIVE),
                       on_trace_ready=exported, record_shapes=False, with_stack=False)

    def stepping(base):
        class Profiled(base):  # one profiler step per micro step
            def training_step(self, *args, **kwargs):
                loss = super().training_step(*args, **kwargs)
                profiler.step()
                return loss
        return Profiled

    code, plan_dir = plan_of(f"profile-{side}", {"model": {"attn_implementation": "auto"}}, dry)
    if code != 0:
        return code
    plan = json.loads((plan_dir / "plan.json").read_text())
    with profiler:
        if side == "packed":
            base = sft_trainer.sft_trainer_class()
            sft_trainer.sft_trainer_class = lambda: stepping(base)
            run_dir = WORK / "runs" / "profile-packed"
            shutil.rmtree(run_dir, ignore_errors=True)
            return train.main(["--plan", str(plan_dir / "plan.json"), "--run-dir", str(run_dir)])
        probe.Trainer = stepping(probe.Trainer)
        layers = plan["model"]["architecture"]["num_hidden_layers"]
        probe_plan = json.loads(json.dumps(plan))
        print(json.dumps(probe.measure(probe_plan, layers, steps=PROFILE_WAIT + 1 + PROFILE_ACTIVE + 1), default=str))
    return 0


def run_profile(side: str, out: Path, timeout: float, dry: bool) -> dict:
    log = run_all.LOGS / f"profile-{side}.log"
    command = [sys.executable, str(Path(__file__)), "--profile-side", side, "--out", str(out)] + (["--dry-cpu"] if dry else [])
    with log.open("w") as handle:
        code = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, timeout=timeout).returncode
    files = sorted(p.name for p in out.glob(f"profile-{side}.*"))
    return {"case": f"profile-{side}", "kind": "profile", "exit_code": code, "files": files,
            "top_kernels": (out / f"profile-{side}.txt").read_text()[:6000] if (out / f"profile-{side}.txt").is_file() else None}


# ---- Axolotl ---------------------------------------------------------------------------------------

AXOLOTL_WHEELS = ROOT / ".whl-axolotl"  # benchmarks/gpu/axolotl_wheels.py fills it; carried to the device
AXOLOTL_SITE = Path("/tmp/site-axolotl")
LIGER = {"plugins": ["axolotl.integrations.liger.LigerPlugin"], "liger_rope": True, "liger_rms_norm": True,
         "liger_glu_activation": True, "liger_fused_linear_cross_entropy": True}
# On a CPU (--dry-cpu): flex attention has no backward there, Liger's and Axolotl's LoRA kernels are Triton
# (GPU only), bf16 training needs a GPU; the rest of the configuration runs as on the device.
CPU_CHANGES = {"attn_implementation": "sdpa", "bf16": False, "tf32": False, "lora_mlp_kernel": False,
               "lora_qkv_kernel": False, "lora_o_kernel": False, "lora_embedding_kernel": False}


def axolotl_config(plan: dict, rows: Path, output: Path, compiled: bool, dry: bool) -> dict:
    """Axolotl's recommended setup for this case (docs/attention.qmd, the Liger plugin's README, the Llama-3
    examples: multipack sample packing padded to the sequence length, flash attention where flash-attn is
    installed, else flex attention with torch_compile as its docs recommend (`compiled`), the Liger plugin, LoRA
    kernels auto-enabled), with the same model folder, rows, sequence, LoRA, batch and optimizer settings as
    tunespec's plan. The meter plugin (axolotl_meter.py) records step times, real tokens and peak memory."""
    import importlib.util

    lora, trainer = plan["method"]["lora"], plan["trainer"]
    flash = importlib.util.find_spec("flash_attn") is not None
    config = {
        "base_model": plan["model"]["source"], "datasets": [{"path": str(rows), "type": "input_output"}],
        "sequence_len": plan["data"]["max_seq_length"], "sample_packing": True, "pad_to_sequence_len": True,
        "attn_implementation": "flash_attention_2" if flash else "flex_attention", "torch_compile": compiled,
        **LIGER, "plugins": LIGER["plugins"] + ["axolotl_meter.MeterPlugin"],
        "adapter": "lora", "lora_r": lora["r"], "lora_alpha": lora["alpha"], "lora_dropout": lora["dropout"],
        "lora_target_linear": True, "micro_batch_size": plan["batch"]["micro_batch_size"],
        "gradient_accumulation_steps": plan["batch"]["gradient_accumulation"], "max_steps": trainer["max_steps"],
        "learning_rate": trainer["learning_rate"], "lr_scheduler": trainer["lr_scheduler_type"],
        "optimizer": trainer["optim"], "bf16": True, "tf32": True, "gradient_checkpointing": False,
        "logging_steps": 1, "save_strategy": "no", "val_set_size": 0, "output_dir": str(output),
        "dataset_prepared_path": str(output / "prepared"),
    }
    if dry:
        config = {key: value for key, value in config.items() if key not in LIGER}
        config.update(CPU_CHANGES, plugins=["axolotl_meter.MeterPlugin"])
    return config


def axolotl_rows(plan: dict, target: Path) -> Path:
    """The plan's training rows as Axolotl input_output segments: the prompt unlabelled, the completion labelled
    (completion-only loss, as tunespec trains)."""
    from tunespec.runtime.data import examples

    with target.open("w") as handle:
        for example in examples(plan["data"], plan["data"]["train"]):
            handle.write(json.dumps({"segments": [{"label": False, "text": example["prompt"]},
                                                  {"label": True, "text": example["completion"]}]}) + "\n")
    return target


def axolotl_site(site: Path) -> Path:
    """Axolotl's own site folder: .whl-axolotl's wheels installed there without their pinned dependencies, once per
    machine (its trl, peft and datasets are Axolotl's pins, so it stays off tunespec's PYTHONPATH)."""
    if site == AXOLOTL_SITE and not (site / ".installed").is_file() and any(AXOLOTL_WHEELS.glob("*.whl")):
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--no-cache-dir", "--upgrade", "--target", str(site), *map(str, AXOLOTL_WHEELS.glob("*.whl"))],
                       check=True)
        (site / ".installed").touch()
    return site


def axolotl_measured(meter_file: Path) -> dict:
    """Steady real tokens/s over the steps after warm-up (as run_all.wall_clock_rate for tunespec's runs), losses
    and peak allocated memory, from the meter plugin's events."""
    events = [json.loads(line) for line in meter_file.read_text().splitlines() if line.strip()]
    steps = {e["step"]: e for e in events if e["event"] == "step"}
    losses = [e["loss"] for e in events if e["event"] == "log"]
    end = next((e for e in events if e["event"] == "end"), {})
    measured = {"first_train_loss": losses[0] if losses else None, "final_train_loss": losses[-1] if losses else None,
                "global_step": max(steps, default=0), "peak_memory_gib": end.get("peak_memory_gib"),
                "peak_reserved_gib": end.get("peak_reserved_gib")}
    warm, last = run_all.WARMUP_STEPS, max(steps, default=0)
    if warm in steps and last > warm:
        tokens, seconds = steps[last]["tokens"] - steps[warm]["tokens"], steps[last]["time"] - steps[warm]["time"]
        measured.update(wall_tokens_per_s_after_warmup=round(tokens / seconds, 1),
                        steady_tokens_per_s=round(tokens / seconds, 1), wall_window_steps=[warm + 1, last],
                        wall_window_tokens=tokens, wall_window_s=round(seconds, 3),
                        tokens_per_step_after_warmup=round(tokens / (last - warm), 1))
    return measured


def run_axolotl(name: str, site: Path, timeout: float, dry: bool) -> dict:
    result = {"case": name, "kind": "axolotl"}
    code, plan_dir = plan_of(f"{name}-plan", {"model": {"attn_implementation": "auto"}}, dry)
    if code != 0:
        return {**result, "exit_code": code, "failed": "plan"}
    plan = json.loads((plan_dir / "plan.json").read_text())
    output = WORK / "runs" / name
    shutil.rmtree(output, ignore_errors=True)
    output.mkdir(parents=True)
    config = axolotl_config(plan, axolotl_rows(plan, output / "rows.jsonl"), output, name.endswith("-compile"), dry)
    (output / "config.yaml").write_text(json.dumps(config, indent=2))  # JSON is YAML
    result.update(config=config, attn_implementation=config["attn_implementation"])
    site = axolotl_site(site)
    if not (site / "axolotl").is_dir():
        return {**result, "exit_code": None, "failed": f"axolotl is not installed in {site} (carry .whl-axolotl)"}
    # Axolotl's site first (its trl/peft/datasets pins), then this folder (the meter plugin), then the image's setup.
    path = os.pathsep.join([str(site), str(HERE)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    env = dict(os.environ, PYTHONPATH=path, AXOLOTL_DO_NOT_TRACK="1", WANDB_MODE="disabled", HF_HUB_OFFLINE="1")
    log = run_all.LOGS / f"{name}.log"
    started = time.time()
    with log.open("w") as handle:
        code = subprocess.run([sys.executable, "-m", "axolotl.cli.train", str(output / "config.yaml")], stdout=handle,
                              stderr=subprocess.STDOUT, timeout=timeout, env=env).returncode
    result.update(exit_code=code, wall_s=round(time.time() - started, 1))
    if code != 0 or not (output / "meter.jsonl").is_file():
        return {**result, "failed": "axolotl train (see its log)", "output": log.read_text()[-4000:]}
    result["measured"] = axolotl_measured(output / "meter.jsonl")
    result["mfu"] = mfu(plan, result["measured"].get("wall_tokens_per_s_after_warmup"))
    return result


# ---- the driver --------------------------------------------------------------------------------------

def probe_of(name: str) -> str:
    """The probe case of the same model, method and micro batch as case `name`."""
    return "probe" + "".join(re.findall(r"-1b-full|-mb\d+$", name))


def summary(state: dict) -> str:
    cases = state["cases"]
    lines = [f"{'case':<26} {'exit':>4} {'kernel':<18} {'tok/s steady':>12} {'tok/s apply':>11} {'MFU':>6} "
             f"{'peak GiB':>8} {'of probe':>8}"]
    for name, r in cases.items():
        m = r.get("measured") or {}
        steady = m.get("wall_tokens_per_s_after_warmup") or r.get("tokens_per_s")
        probe = (cases.get(probe_of(name)) or {}).get("tokens_per_s")
        share = f"{steady / probe:.0%}" if steady and probe and r["kind"] in ("apply", "axolotl") else ""
        lines.append(f"{name:<26} {str(r.get('exit_code')):>4} {str(r.get('attn_implementation') or ''):<18} "
                     f"{str(steady):>12} {str(m.get('tokens_per_s') or ''):>11} {str(r.get('mfu') or ''):>6} "
                     f"{str(m.get('peak_memory_gib') or ''):>8} {share:>8}")
    best = [r for name, r in cases.items() if r["kind"] == "apply" and r.get("mfu") and "-1b-full" not in name]
    probe = (cases.get("probe") or {}).get("tokens_per_s")
    if best and probe:
        top = max(best, key=lambda r: r["mfu"])
        steady = top["measured"].get("wall_tokens_per_s_after_warmup")
        lines.append(f"targets ({top['case']}): {steady / probe:.0%} of the probe (>= {TARGET_SHARE_OF_PROBE:.0%}), "
                     f"MFU {top['mfu']:.0%} (>= {TARGET_MFU:.0%})" if steady else "targets: no steady rate")
    return "\n".join(lines)


CASE_LABELS = {
    "probe": "`tunespec probe`: plain causal batches, micro batch 4",
    "apply-auto": "tunespec compiled: `tunespec apply`, packed, flex attention (plan's choice), Liger, micro batch 4",
    "apply-auto-compile": "the same with `training.torch_compile: true` (each decoder layer compiled)",
    "apply-auto-mb2": "the same at micro batch 2 x accumulation 2 (the H100's fit)",
    "apply-auto-noliger": "the same without Liger's kernels",
    "axolotl": "Axolotl 0.19: multipack, flex attention, Liger plugin, its LoRA kernels",
    "axolotl-compile": "Axolotl 0.19 as above with `torch_compile: true`",
    "naive-trl": "the seed recipe's naive TRL setup: no packing, checkpointing, no Liger, micro batch 4",
    "probe-1b-full": "Llama-3.2-1B shape, full fine-tune: `tunespec probe`",
    "apply-auto-1b-full": "Llama-3.2-1B shape, full fine-tune: `tunespec apply`, packed",
}


def markdown_table(state: dict) -> str:
    """The results file as the benchmark's table: real (non-padding) tokens/s at steady state, share of the probe
    at equal tokens per step, MFU, peak allocated memory, loss at the first and last step, the plan's estimate."""
    lines = ["| run | real tokens/s, steady | of the probe | MFU | peak GiB | loss, step 1 → 24 | the plan's estimate then |",
             "|---|---:|---:|---:|---:|---|---:|"]
    for name, label in CASE_LABELS.items():
        r = state["cases"].get(name)
        if not r or r.get("exit_code") != 0:
            continue
        m = r.get("measured") or {}
        steady = m.get("steady_tokens_per_s")
        probe = ((state["cases"].get(probe_of(name)) or {}).get("measured") or {}).get("steady_tokens_per_s")
        share = f"{steady / probe:.0%}" if steady and probe and r["kind"] != "probe" else ""
        loss = (f"{m['first_train_loss']:.2f} → {m['final_train_loss']:.2f}"
                if m.get("first_train_loss") is not None else "")
        estimate = (r.get("estimate") or {}).get("tokens_per_s")
        lines.append(f"| {label} | {steady:,.0f} | {share} | {r.get('mfu') or ''} | {m.get('peak_memory_gib')} | {loss} | "
                     f"{f'{estimate:,.0f}' if estimate else ''} |")
    return "\n".join(lines)


def build_dry_model() -> None:
    model = WORK / "tiny-llama"
    if not model.is_dir():
        sys.path.insert(0, str(ROOT))
        from tests.seed_models import save_tiny_model

        save_tiny_model(model, "llama", num_key_value_heads=1, num_hidden_layers=2)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("cases", nargs="*", default=["probe"] + [f"apply-{k}" for k in KERNELS] +
                        ["profile-packed", "profile-plain", "naive-trl", "axolotl"])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--deadline-s", type=float, default=540, help="start no case that would end after this")
    parser.add_argument("--dry-cpu", action="store_true", help="rehearse on a CPU with a tiny model and 6 steps")
    parser.add_argument("--profile-side", choices=("packed", "plain"), help=argparse.SUPPRESS)
    parser.add_argument("--table", type=Path, help="print a results file (results-h200-packed-*.json) as markdown")
    parser.add_argument("--axolotl-site", type=Path, default=AXOLOTL_SITE,
                        help="a folder with Axolotl installed (default: .whl-axolotl's wheels installed there)")
    args = parser.parse_args()
    if args.table:
        print(markdown_table(json.loads(args.table.read_text())))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    run_all.LOGS.mkdir(parents=True, exist_ok=True)
    if args.dry_cpu:
        build_dry_model()
    if args.profile_side:
        return profile_side(args.profile_side, args.out, args.dry_cpu)
    began = time.time()
    state = json.loads(STATE.read_text()) if STATE.is_file() else {"date": time.strftime("%Y-%m-%d"),
                                                                   **run_all.versions(), "cases": {}}

    def run_case(name: str, left: float) -> dict:
        if name.startswith("probe"):
            return run_probe(name, left, args.dry_cpu)
        if name.startswith("apply-"):
            return run_apply(name, left, args.dry_cpu)
        if name.startswith("profile-"):
            return run_profile(name[len("profile-"):], args.out, left, args.dry_cpu)
        if name == "naive-trl":
            return run_apply(name, left, args.dry_cpu, base=NAIVE_SPEC)
        return run_axolotl(name, args.axolotl_site, left, args.dry_cpu)

    # a variant takes about as long as its case; torch_compile adds its compilation
    expected = {}
    for name in args.cases:
        base_name, changes = case_changes(name)
        expected[name] = EXPECTED_S[base_name] + 40 * changes["training"].get("torch_compile", False)
    run_all.run_cases(args.cases, expected, run_case, state, STATE, args.out, args.deadline_s, began,
                      skip_done=False, kind_of=lambda name: name.split("-")[0])
    print(summary(state), flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
