"""The GPU proof of issue 13 on one lent H200, every case in one call. On the device, from the repository
root (wheels and tunespec as benchmarks/gpu/device_setup.sh sets them up; it also saves the random
Llama-3-8B the Llama cases load):

    source benchmarks/gpu/device_setup.sh
    python3 benchmarks/gpu/moe_qlora.py --out $OUT [CASE ...]

Cases (default: all, in this order; a case already in the state file /tmp/tunespec-gpu/moe_qlora.json
is skipped, so a second call finishes what a first one could not):
  mixtral32-nf4        Mixtral-8x7B's full 32-layer shape, random weights, QLoRA as seed 000 plans it
                       (benchmarks/gpu/specs/mixtral-8x7b-qlora-1gpu.yaml): attention in bitsandbytes
                       NF4, the fused experts in NF4 per expert (runtime/moe_quantization.py), LoRA on
                       attention and experts; built layer by layer, quantizing as it builds (the bf16
                       model does not fit the device's disk).
  mixtral32-bf16       the same shape with bf16 weights and plain LoRA on attention and experts (PEFT's
                       ParamWrapper): the path NF4 experts replace (mixtral-8x7b-lora-1gpu.yaml).
  mixtral2-load        the trainer's own loading path (runtime/model_loading.load_model) on a saved
                       2-layer Mixtral-8x7B shape: 16-bit experts in host memory, NF4 on the GPU.
  llama8b-qlora-minimal, llama8b-qlora-full
                       Llama-3-8B QLoRA through load_model, without and with PEFT's full k-bit
                       preparation (llama3-8b-viggo-qlora.yaml at micro batch 1 with checkpointing).

Every case: micro batch 1, sequence 2048, gradient checkpointing, torch AdamW, bf16 autocast; the model
and adapters as the trainer builds them (model_loading.lora_config from the plan); peak allocated and
reserved memory from the start of training, tokens/s as the median of the steps after warm-up; beside
them the plan's estimate. Results: OUT/moe_qlora.json (device, versions, date, cases).

`--tiny` runs mixtral32-nf4's code on a 2-layer toy Mixtral on this machine's CPU (a smoke test).
"""
import argparse
import dataclasses
import datetime
import gc
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
SPECS = Path(__file__).resolve().parent / "specs"
WORK = Path("/tmp/tunespec-gpu")
STATE = WORK / "moe_qlora.json"
LLAMA = WORK / "llama3-8b"
MIXTRAL_2_LAYERS = WORK / "mixtral-8x7b-L2"
WARMUP, MEASURED, SEQUENCE = 3, 6, 2048

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_all import versions  # noqa: E402

from tunespec.compiler.estimate import estimate  # noqa: E402
from tunespec.compiler.plan import build_plan  # noqa: E402
from tunespec.compiler.spec_loader import load_spec  # noqa: E402
from tunespec.runtime import model_loading, moe_quantization  # noqa: E402


def compile_plan(spec: str, layers: int | None = None, **quantization) -> dict:
    """The plan of the spec with `quantization` changed, for `layers` decoder layers when the model built
    has fewer, re-estimated."""
    loaded = load_spec(SPECS / spec)
    if quantization:
        method = loaded.spec.method
        method = method.model_copy(update={"quantization": method.quantization.model_copy(update=quantization)})
        loaded = dataclasses.replace(loaded, spec=loaded.spec.model_copy(update={"method": method}))
    plan = build_plan(loaded, cwd=ROOT)
    # This script runs a plain training loop, not the trainer: estimated as such (no TRL overhead).
    plan["launch"]["module"] = "benchmarks/gpu/moe_qlora.py"
    if layers:
        plan["model"]["architecture"]["num_hidden_layers"] = layers
        from tunespec.compiler import parameter_counts

        arch = plan["model"]["architecture"]
        plan["model"]["parameters"].update(parameter_counts.count_parameters(arch),
                                           trainable=parameter_counts.count_trainable(arch, plan["method"]))
    plan["estimates"] = estimate(plan)
    return plan


def mixtral_config(plan: dict, layers: int):
    from transformers import MixtralConfig

    arch = plan["model"]["architecture"]
    return MixtralConfig(vocab_size=arch["vocab_size"], hidden_size=arch["hidden_size"],
                         intermediate_size=arch["intermediate_size"], num_hidden_layers=layers,
                         num_attention_heads=arch["num_attention_heads"],
                         num_key_value_heads=arch["num_key_value_heads"], num_local_experts=arch["num_local_experts"],
                         num_experts_per_tok=arch["num_experts_per_tok"],
                         max_position_embeddings=arch["max_position_embeddings"], use_cache=False)


def _randomise(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for parameter in module.parameters():
            if parameter.ndim == 1:
                parameter.fill_(1.0)  # norms
            else:
                parameter.normal_(0.0, 0.02)


def _linear_4bit(linear: torch.nn.Linear, quant: dict, device):
    import bitsandbytes as bnb

    storage = moe_quantization.STORAGE_DTYPES[quant["storage_dtype"]]
    layer = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=False, compute_dtype=torch.bfloat16,
                              compress_statistics=quant["double_quant"], quant_type=quant["quant_type"],
                              quant_storage=storage, device="meta")
    layer.weight = bnb.nn.Params4bit(linear.weight.data, requires_grad=False, compress_statistics=quant["double_quant"],
                                     quant_type=quant["quant_type"], quant_storage=storage).to(device)
    return layer


def build_mixtral(plan: dict, layers: int, device) -> torch.nn.Module:
    """Mixtral's shape with random weights, one decoder layer at a time on `device`; under a 4-bit plan
    each layer's attention and experts are quantized before the next is built."""
    from transformers import AutoModelForCausalLM
    from transformers.models.mixtral.modeling_mixtral import MixtralDecoderLayer

    quant = plan["method"].get("quantization")
    config = mixtral_config(plan, layers)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, attn_implementation="sdpa")
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model.model.embed_tokens = torch.nn.Embedding(config.vocab_size, config.hidden_size)
            model.model.norm = type(model.model.norm)(config.hidden_size, config.rms_norm_eps)
            model.model.rotary_emb = type(model.model.rotary_emb)(config=config)
            model.lm_head = torch.nn.Linear(config.hidden_size, config.vocab_size, bias=False)
            _randomise(model.model.embed_tokens)
            _randomise(model.model.norm)
            _randomise(model.lm_head)
            for index in range(layers):
                layer = MixtralDecoderLayer(config, index)
                _randomise(layer)
                if quant:
                    for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
                        setattr(layer.self_attn, proj, _linear_4bit(getattr(layer.self_attn, proj), quant, device))
                    layer.mlp.experts = moe_quantization.Nf4Experts(layer.mlp.experts, quant, device)
                model.model.layers[index] = layer
                del layer
    finally:
        torch.set_default_dtype(default)
    if quant:
        model.is_loaded_in_4bit = True
    return model


def train_steps(model, plan: dict, device, steps: int) -> dict:
    """The trainer's adapters on `model`, `steps` optimizer steps of one random 2048-token sequence."""
    from peft import get_peft_model

    model.config.use_cache = False
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    model = get_peft_model(model, model_loading.lora_config(plan, model))
    model.train()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    vocab = model.config.vocab_size
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times, losses = [], []
    for _ in range(steps):
        tokens = torch.randint(0, vocab, (1, SEQUENCE if cuda else 64), device=device)
        started = time.perf_counter()
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
            loss = model(input_ids=tokens, labels=tokens).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
        losses.append(loss.item())
    measured = times[WARMUP:] if len(times) > WARMUP else times
    step_s = statistics.median(measured)
    result = {"trainable_params": trainable, "step_times_s": [round(t, 4) for t in times], "losses": losses,
              "tokens_per_s": round(tokens.numel() / step_s, 1)}
    if cuda:
        result.update(peak_allocated_bytes=torch.cuda.max_memory_allocated(),
                      peak_reserved_bytes=torch.cuda.max_memory_reserved())
    return result


def beside_estimate(result: dict, plan: dict) -> dict:
    memory, speed = plan["estimates"]["memory"], plan["estimates"]["throughput"]
    result.update(estimated_peak_allocated_bytes=memory["peak_allocated_bytes"],
                  estimated_total_gib=memory["total_gib"], estimated_tokens_per_s=speed["tokens_per_s_per_device"],
                  planned_trainable_params=plan["model"]["parameters"]["trainable"])
    if result.get("peak_allocated_bytes"):
        result["memory_error"] = round(memory["peak_allocated_bytes"] / result["peak_allocated_bytes"] - 1, 3)
    if result.get("tokens_per_s") and speed.get("tokens_per_s_per_device"):
        result["speed_error"] = round(speed["tokens_per_s_per_device"] / result["tokens_per_s"] - 1, 3)
    return result


def mixtral_built(spec: str, device="cuda", layers: int = 32) -> dict:
    plan = compile_plan(spec)
    started = time.time()
    model = build_mixtral(plan, layers, device)
    built = {"build_s": round(time.time() - started), "layers": layers}
    if torch.device(device).type == "cuda":
        built["allocated_after_build_bytes"] = torch.cuda.memory_allocated()
    return beside_estimate({**built, **train_steps(model, plan, device, WARMUP + MEASURED)}, plan)


def mixtral_loaded() -> dict:
    subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu/build_random_model.py"), "mixtral-8x7b",
                    str(MIXTRAL_2_LAYERS), "--layers", "2"], check=True)
    plan = compile_plan("mixtral-8x7b-qlora-1gpu.yaml", layers=2)
    torch.cuda.reset_peak_memory_stats()
    started = time.time()
    model = model_loading.load_model(plan, str(MIXTRAL_2_LAYERS))
    loaded = {"load_s": round(time.time() - started), "load_peak_allocated_bytes": torch.cuda.max_memory_allocated(),
              "nf4_expert_modules": sum(isinstance(m, moe_quantization.Nf4Experts) for m in model.modules()),
              "bf16_expert_bytes": 2 * 2 * 8 * 3 * 4096 * 14336}
    return beside_estimate({**loaded, **train_steps(model, plan, "cuda", WARMUP + MEASURED)}, plan)


def llama_loaded(preparation: str) -> dict:
    plan = compile_plan("llama3-8b-viggo-qlora.yaml", kbit_preparation=preparation)
    # the plain loop below: no Liger kernels (the spec's trainer runs them)
    plan["trainer"].update(gradient_checkpointing=True, use_liger_kernel=False)
    plan["batch"].update(micro_batch_size=1)
    plan["estimates"] = estimate(plan)
    model = model_loading.load_model(plan, str(LLAMA))
    return beside_estimate(train_steps(model, plan, "cuda", WARMUP + MEASURED), plan)


CASES = {
    "mixtral32-nf4": lambda: mixtral_built("mixtral-8x7b-qlora-1gpu.yaml"),
    "mixtral32-bf16": lambda: mixtral_built("mixtral-8x7b-lora-1gpu.yaml"),
    "mixtral2-load": mixtral_loaded,
    "llama8b-qlora-minimal": lambda: llama_loaded("minimal"),
    "llama8b-qlora-full": lambda: llama_loaded("full"),
}


def tiny() -> int:
    """mixtral32-nf4's building and training code on a toy shape, on the CPU."""
    plan = compile_plan("mixtral-8x7b-qlora-1gpu.yaml")
    arch = plan["model"]["architecture"]
    arch.update(vocab_size=256, hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
                head_dim=16, num_local_experts=4)
    model = build_mixtral(plan, 2, "cpu")
    print(json.dumps(train_steps(model, plan, "cpu", 4), indent=1))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("cases", nargs="*", metavar="CASE", help=", ".join(CASES))
    args = parser.parse_args()
    if args.tiny:
        return tiny()
    unknown = sorted(set(args.cases) - set(CASES))
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(CASES)}")
    WORK.mkdir(parents=True, exist_ok=True)
    state = json.loads(STATE.read_text()) if STATE.is_file() else {
        **versions(), "date": datetime.date.today().isoformat(), "cases": {}}
    for name in args.cases or list(CASES):
        if name in state["cases"]:
            continue
        print(f"== {name}", flush=True)
        try:
            state["cases"][name] = CASES[name]()
        except torch.OutOfMemoryError as error:
            state["cases"][name] = {"oom": True, "error": str(error)[:300]}
        print(json.dumps(state["cases"][name])[:1500], flush=True)
        gc.collect()
        torch.cuda.empty_cache()
        STATE.write_text(json.dumps(state, indent=1))
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "moe_qlora.json").write_text(json.dumps(state, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
