#!/usr/bin/env python3
"""Replays the measured training steps (benchmarks/measurements/*.json) through the estimator and
prints estimated against measured peak memory and tokens/s, case by case.

    python benchmarks/estimate_errors.py [MEASUREMENTS.json ...] [--markdown]

tests/test_estimate_replay.py runs the same replay and fails past the bounds below. `make_plan`
builds the plan sections the estimator reads (docs/design.md) without a spec file.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

from tunespec.compiler import architecture, lora_targets, parameter_counts
from tunespec.compiler.estimate import estimate
from tunespec.compiler.layout import DISTRIBUTION, LayoutChoices, devices_of_hardware, lay_out
from tunespec.schema import contract

MEASUREMENTS = pathlib.Path(__file__).parent / "measurements"
GPU_RESULTS = pathlib.Path(__file__).parent / "gpu"
# The training loop a measurement ran, as the plan's launch names it.
RUNNERS = {"trainer": contract.TRAINER_MODULE, "plain": contract.PROBE_MODULE}
MEMORY_BOUND = 0.10
SPEED_BOUND = 0.20
# Issue 15: the estimate within 15% of every `tunespec apply` / `probe` run and plain loop measured on the GPU machine.
GPU_RUN_SPEED_BOUND = 0.15


def make_plan(arch, method: str = "lora", *, r: int = 16, targets="all-linear", dropout: float = 0.05,
              include_experts: bool = False, micro: int = 1, seq: int = 2048, accumulation: int = 1,
              checkpointing: bool = False, hardware: str = "h100-80gb", nodes: int = 1,
              strategy: str = "none", sharding: str = "full_shard", tensor_parallel: int = 1,
              expert_parallel: int = 1, optim: str = "adamw_torch", attn: str = "sdpa", liger: bool = False,
              num_examples: int | None = None, tokens_per_example: int | None = None, epochs: float = 1.0,
              max_steps: int | None = None, packing: bool = True, kbit_preparation: str = "minimal",
              gpus: int | None = None, runner: str = "plain", cast_input: bool = True) -> dict:
    """A plan dict with the sections estimate() reads, laid out by compiler/layout.py as a plan is. `gpus`: the
    local machine's GPU count (a local hardware name is one GPU type); `runner`: the training loop
    measured, tunespec's trainer (`tunespec apply`) or a plain loop (measure_training.py, the probe); `cast_input`:
    PEFT's cast of the adapters' input to fp32, which every run before plan.method.lora.cast_input_to_adapter_dtype
    (2026-12-01) made."""
    arch = architecture.resolve_architecture(arch, None, pathlib.Path(".")) if isinstance(arch, str) else arch
    lora = None
    if method != "full":
        lora = {"r": r, "alpha": 2 * r, "dropout": dropout, "bias": "none", "include_experts": include_experts,
                "use_dora": method == "dora", "cast_input_to_adapter_dtype": cast_input, "target_modules": lora_targets.resolve_target_modules(arch, targets)}
    quant = ({"bits": 4, "quant_type": "nf4", "double_quant": True, "compute_dtype": "bf16",
              "storage_dtype": "uint8", "kbit_preparation": kbit_preparation} if method == "qlora" else None)
    method_section = {"type": method, "lora": lora, "quantization": quant}

    data = {"max_seq_length": seq, "packing": packing, "format": {"type": "chat"}, "num_examples": num_examples,
            "tokens_per_example": tokens_per_example, "eval_fraction": None}
    distribution = DISTRIBUTION.validate_python(
        {"strategy": strategy, **({"sharding": sharding} if strategy == "fsdp" else {}),
         **({"tensor_parallel_degree": tensor_parallel} if strategy in ("smp", "neuron") else {}),
         **({"expert_parallel_degree": expert_parallel} if strategy == "smp" else {})})
    choices = LayoutChoices(distribution=distribution, micro_batch_size=micro, gradient_accumulation=accumulation,
                            precision="bf16", allow_emulated_bf16=False, epochs=None if max_steps else epochs,
                            max_steps=max_steps, kbit_preparation=kbit_preparation if method == "qlora" else None)
    layout = lay_out(devices_of_hardware(hardware, per_node=gpus, nodes=nodes), choices, data)
    return {
        "model": {"architecture": arch, "attn_implementation": attn,
                  "parameters": {**parameter_counts.count_parameters(arch),
                                 "trainable": parameter_counts.count_trainable(arch, method_section)}},
        "method": method_section,
        "data": data,
        **layout,
        "trainer": {"optim": optim, "gradient_checkpointing": checkpointing, "use_liger_kernel": liger,
                    "max_steps": max_steps or -1, "num_train_epochs": epochs},
        "launch": {"module": RUNNERS[runner]},
    }


def plan_from_case(case: dict, hardware: str) -> dict | None:
    """The plan of one measured case: its model shape (with the layers it was built with) and setup;
    None for a case of a path tunespec no longer runs."""
    config = dict(case["config"], num_hidden_layers=case["layers_built"])
    arch = architecture.normalise_config(config)
    arch["name"] = case["arch_name"]
    if case["method"] == "qlora" and arch.get("num_local_experts") and not case.get("experts_nf4"):
        # Measured with bitsandbytes alone, which left the fused experts bf16 (then fp32 after the k-bit
        # preparation); tunespec now stores them in NF4 (runtime/moe_quantization.py).
        return None
    # PEFT 0.21 given the string "all-linear" on a transformers-5 MoE also wraps the router and the
    # fused experts (lora.ParamWrapper): that is include_experts, with the trainable count measured.
    include_experts = bool(arch.get("num_local_experts")) and case.get("lora_targets") == "all-linear"
    plan = make_plan(arch, case["method"], r=case.get("lora_r") or 16, dropout=case.get("lora_dropout") or 0.0,
                     include_experts=include_experts, micro=case["micro_batch"], seq=case["seq_len"],
                     checkpointing=case["gradient_checkpointing"], hardware=hardware,
                     optim=case.get("optimizer", "adamw_torch"), attn=case.get("attn_implementation", "sdpa"),
                     # measure_training.py runs PEFT's prepare_model_for_kbit_training unless told not to
                     kbit_preparation=case.get("kbit_preparation", "full"))
    plan["model"]["parameters"]["trainable"] = case["params"]["trainable_params"]
    return plan


def hardware_of(measurements: dict) -> str:
    device = measurements["device"].lower()
    for name, needle in (("h200-141gb", "h200"), ("h100-80gb", "h100"), ("a100-80gb", "a100-sxm4-80"),
                         ("a100-40gb", "a100"), ("l40s-48gb", "l40s"), ("a10g-24gb", "a10g"), ("l4-24gb", "l4")):
        if needle in device:
            return name
    raise ValueError(f"no hardware catalog entry for measured device {measurements['device']!r}")


def compared(case_id: str, result: dict, peak_bytes: float, tokens_per_s: float,
             reserved_bytes: float | None = None) -> dict:
    """One row of the table: the estimate `result` against a measured peak (and reserved) memory and tokens/s."""
    memory, speed = result["memory"], result["throughput"]
    row = {
        "id": case_id,
        "measured_peak_gib": peak_bytes / 2 ** 30,
        "estimated_peak_gib": memory["peak_allocated_bytes"] / 2 ** 30,
        "memory_error": memory["peak_allocated_bytes"] / peak_bytes - 1,
        "measured_tokens_per_s": tokens_per_s,
        "estimated_tokens_per_s": speed["tokens_per_s_total"],
        "speed_error": speed["tokens_per_s_total"] / tokens_per_s - 1,
    }
    if reserved_bytes is not None:
        row["reserved_error"] = memory["peak_reserved_bytes"] / reserved_bytes - 1
    return row


def replay(paths=None) -> list:
    """One row per measured case that ran (no OOM, no error): estimated vs measured."""
    rows = []
    for path in paths or sorted(MEASUREMENTS.glob("*.json")):
        measurements = json.loads(pathlib.Path(path).read_text())
        hardware = hardware_of(measurements)
        for case in measurements["cases"]:
            plan = plan_from_case(case, hardware)
            if plan is None or case.get("oom") or case.get("error") or not case.get("tokens_per_s"):
                continue
            rows.append(dict(compared(case["id"], estimate(plan), case["peak_allocated_bytes"], case["tokens_per_s"],
                                      case["peak_reserved_bytes"]), source=pathlib.Path(path).name))
    return rows


def apply_rows(paths=None) -> list:
    """One row per run measured on the GPU machine by the `tunespec` drivers (benchmarks/gpu/results-*.json, the
    cases with a `replay` block: the settings of the plan that ran): the estimate of that plan against the run's
    steady tokens/s and its largest per-device peak allocated memory. `tunespec apply` runs are estimated as the
    trainer path, `tunespec probe` runs (kind `probe`) as the plain loop the probe runs. Unpacked rows are padded
    to the longest of their batch: the memory estimate is for the longest batch the plan allows (max_seq_length),
    a bound the run's shorter batches stay under (`memory_is_bound`)."""
    rows = []
    for path in paths or sorted(GPU_RESULTS.glob("results-*.json")):
        results = json.loads(pathlib.Path(path).read_text())
        for name, case in results["cases"].items():
            settings = case.get("replay")
            if not settings or case.get("exit_code") != 0:
                continue
            measured = case["measured"]
            peak_gib = max(measured.get("peak_memory_gib_per_rank") or [measured["peak_memory_gib"]])
            runner = "plain" if case.get("kind") == "probe" else "trainer"
            row = compared(f"{pathlib.Path(path).stem}:{name}", estimate(make_plan(runner=runner, **settings)),
                           peak_gib * 2 ** 30, measured["steady_tokens_per_s"])
            rows.append(dict(row, memory_is_bound=settings.get("packing") is False))
    return rows


def plain_loop_rows(paths=None) -> list:
    """One row per plain-loop case measured on the GPU machine by the issue scripts
    (benchmarks/gpu/moe-qlora-*.json): the estimate of the case's settings against its measurement."""
    rows = []
    for path in paths or sorted(GPU_RESULTS.glob("moe-qlora-*.json")):
        results = json.loads(pathlib.Path(path).read_text())
        for name, case in results["cases"].items():
            if "replay" not in case or not case.get("tokens_per_s"):
                continue
            rows.append(compared(f"{pathlib.Path(path).stem}:{name}", estimate(make_plan(runner="plain", **case["replay"])),
                                 case["peak_allocated_bytes"], case["tokens_per_s"], case["peak_reserved_bytes"]))
    return rows


def oom_rows(paths=None) -> list:
    """Measured out-of-memory cases with the estimator's verdict for them."""
    rows = []
    for path in paths or sorted(MEASUREMENTS.glob("*.json")):
        measurements = json.loads(pathlib.Path(path).read_text())
        hardware = hardware_of(measurements)
        for case in measurements["cases"]:
            plan = plan_from_case(case, hardware)
            if case.get("oom") and plan is not None:
                memory = estimate(plan)["memory"]
                rows.append({"id": case["id"], "estimated_total_gib": memory["total_gib"],
                             "verdict": memory["verdict"], "inferred": bool(case.get("oom_inferred"))})
    return rows


def memory_holds(row: dict) -> bool:
    """Within MEMORY_BOUND of the measured peak; a bound (unpacked rows) at or above it."""
    if row.get("memory_is_bound"):
        return row["memory_error"] >= 0
    return abs(row["memory_error"]) <= MEMORY_BOUND


def table(rows: list, ooms: list) -> str:
    lines = ["| case | peak GiB measured | estimated | error | reserved error | tokens/s measured | estimated | error |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        reserved = f"{row['reserved_error']:+.1%}" if "reserved_error" in row else "-"
        bound = " (bound)" if row.get("memory_is_bound") else ""
        lines.append(f"| {row['id']} | {row['measured_peak_gib']:.2f} | {row['estimated_peak_gib']:.2f}{bound} | "
                     f"{row['memory_error']:+.1%} | {reserved} | {row['measured_tokens_per_s']:.0f} | "
                     f"{row['estimated_tokens_per_s']:.0f} | {row['speed_error']:+.1%} |")
    if rows:
        mem = [abs(r["memory_error"]) for r in rows if not r.get("memory_is_bound")]
        spd = [abs(r["speed_error"]) for r in rows]
        within = sum(1 for r in rows if memory_holds(r) and abs(r["speed_error"]) <= SPEED_BOUND)
        lines.append("")
        lines.append(f"{len(rows)} cases; memory |error| mean {sum(mem) / len(mem):.1%}, max {max(mem):.1%} "
                     f"(bounds apart); "
                     f"tokens/s |error| mean {sum(spd) / len(spd):.1%}, max {max(spd):.1%}; "
                     f"{within} within ±{MEMORY_BOUND:.0%} memory and ±{SPEED_BOUND:.0%} tokens/s")
    if ooms:
        lines += ["", "| measured out of memory | estimated total GiB | verdict |", "|---|---:|---|"]
        for row in ooms:
            note = " (inferred)" if row["inferred"] else ""
            lines.append(f"| {row['id']}{note} | {row['estimated_total_gib']:.1f} | {row['verdict']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=pathlib.Path)
    args = parser.parse_args(argv)
    rows = replay(args.paths or None)
    print(table(rows, oom_rows(args.paths or None)))
    if not args.paths:
        print("\n`tunespec apply` runs on the GPU machine (steady tokens/s, largest per-device peak):\n")
        print(table(apply_rows(), []))
        print("\nPlain training loops on the GPU machine (issue scripts, benchmarks/gpu/moe-qlora-*.json):\n")
        print(table(plain_loop_rows(), []))
    return 0


if __name__ == "__main__":
    sys.exit(main())
