#!/usr/bin/env python3
"""Ground-truth training measurements for the tunespec estimator.

Runs real training steps of real model shapes (random weights) through the Hugging Face
`Trainer` -- the code path `tunespec.runtime.train` uses -- and records peak GPU memory and
throughput per case.  Output format: docs/design.md, "Measurements".

    python benchmarks/measure_training.py --out $OUT [--deadline-s 540] [--done FILE.json]
           [--only ID,ID,...] [--smoke] [--stop-on-error]

The driver groups the cases by (architecture, method, layers) and runs each group in its own
subprocess (one model build per group; the cases of a group reuse the model, with memory freed
between them).  Results are appended to $OUT/cases.jsonl as each case ends and merged into
$OUT/measurements.json after each group, so a timeout keeps what was measured.  Cases already in
--done (a measurements JSON from an earlier call) are skipped: the grid can be split over calls.

Needs a CUDA GPU, torch, transformers, peft, bitsandbytes (for QLoRA).  Not imported by tunespec.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

DATE = "2026-11-24"
QLORA_CACHE = Path("/tmp/tunespec-bench-weights")

# --------------------------------------------------------------------------- architectures
ARCHS = {
    # meta-llama/Meta-Llama-3-8B
    "Llama-3-8B": dict(
        cls="LlamaConfig", real_layers=32,
        fields=dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                    num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=128256,
                    tie_word_embeddings=False, max_position_embeddings=8192, rms_norm_eps=1e-5,
                    hidden_act="silu", bos_token_id=128000, eos_token_id=128001),
    ),
    # mistralai/Mistral-7B-v0.1 dims, vocab 32000 (sliding window off: seq <= 4096 here anyway)
    "Mistral-7B": dict(
        cls="MistralConfig", real_layers=32,
        fields=dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                    num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=32000,
                    tie_word_embeddings=False, max_position_embeddings=32768, rms_norm_eps=1e-5,
                    hidden_act="silu", sliding_window=None, bos_token_id=1, eos_token_id=2),
    ),
    # mistralai/Mixtral-8x7B-v0.1 dims, built with fewer layers (layers_built)
    "Mixtral-8x7B": dict(
        cls="MixtralConfig", real_layers=32,
        fields=dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                    num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=32000,
                    tie_word_embeddings=False, max_position_embeddings=32768, rms_norm_eps=1e-5,
                    hidden_act="silu", sliding_window=None, num_local_experts=8,
                    num_experts_per_tok=2, output_router_logits=False,
                    bos_token_id=1, eos_token_id=2),
    ),
}

# TSB_TINY=1 shrinks every shape (a CPU check of the script's logic, never for measurements)
if os.environ.get("TSB_TINY"):
    for _a in ARCHS.values():
        _a["fields"].update(hidden_size=64, intermediate_size=128, num_attention_heads=4,
                            num_key_value_heads=2, head_dim=16, vocab_size=1000)

LORA = dict(r=16, alpha=32, dropout=0.05, targets="all-linear")
# peft 0.21 resolves "all-linear" on a transformers-5 Mixtral to the fused 3-D expert parameters too
# (target_parameters, lora.ParamWrapper), and ParamWrapper raises "does not work with lora_dropout != 0":
# the MoE cases therefore use dropout 0.0 (recorded per case).
MOE_LORA_DROPOUT = 0.0
MOE_DROPOUT_NOTE = ("lora_dropout 0.05 raises ValueError with peft 0.21 on this MoE: 'all-linear' also targets the "
                    "fused expert parameters through lora.ParamWrapper, which needs lora_dropout == 0")


def lora_dropout(arch):
    return MOE_LORA_DROPOUT if arch == "Mixtral-8x7B" else LORA["dropout"]


def _c(arch, method, mb, seq, ckpt, layers=None, rep=1):
    layers = layers or ARCHS[arch]["real_layers"]
    short = {"Llama-3-8B": "llama3-8b", "Mistral-7B": "mistral-7b", "Mixtral-8x7B": "mixtral-8x7b"}[arch]
    lid = "" if layers == ARCHS[arch]["real_layers"] else f"-L{layers}"
    return dict(id=f"{short}{lid}-{method}-mb{mb}-s{seq}-{'gc' if ckpt else 'nogc'}" + (f"-r{rep}" if rep > 1 else ""),
                arch=arch, method=method, layers=layers, mb=mb, seq=seq, ckpt=ckpt, rep=rep)


def all_cases():
    cases = []
    L, M, X = "Llama-3-8B", "Mistral-7B", "Mixtral-8x7B"
    # ---- Mixtral, fewer layers (first: shares the saved weights with the smoke case)
    for mb, seq in [(1, 2048), (4, 2048)]:
        cases.append(_c(X, "qlora", mb, seq, True, layers=4))
    for mb, seq in [(1, 2048), (4, 2048)]:
        cases.append(_c(X, "qlora", mb, seq, False, layers=4))
    cases.append(_c(X, "qlora", 1, 2048, True, layers=8))
    for mb, seq in [(1, 2048), (4, 2048), (8, 4096)]:
        cases.append(_c(X, "lora", mb, seq, True, layers=4))
    for mb, seq in [(1, 2048), (4, 2048)]:
        cases.append(_c(X, "lora", mb, seq, False, layers=4))
    cases.append(_c(X, "lora", 1, 2048, True, layers=8))
    # ---- LoRA bf16
    for mb, seq in [(1, 512), (1, 1024), (1, 2048), (1, 4096), (2, 2048), (2, 4096),
                    (4, 1024), (4, 2048), (4, 4096), (8, 2048), (8, 4096)]:
        cases.append(_c(L, "lora", mb, seq, True))
    for mb, seq in [(1, 512), (1, 1024), (1, 2048), (1, 4096), (2, 2048), (4, 1024), (4, 2048),
                    (8, 1024), (8, 2048)]:
        cases.append(_c(L, "lora", mb, seq, False))
    for mb, seq in [(1, 512), (1, 2048), (2, 4096), (4, 2048), (8, 4096)]:
        cases.append(_c(M, "lora", mb, seq, True))
    for mb, seq in [(1, 2048), (2, 4096), (4, 1024)]:
        cases.append(_c(M, "lora", mb, seq, False))
    # ---- QLoRA
    for mb, seq in [(1, 512), (1, 2048), (1, 4096), (2, 4096), (4, 2048), (4, 4096), (8, 4096)]:
        cases.append(_c(L, "qlora", mb, seq, True))
    for mb, seq in [(1, 512), (1, 2048), (2, 4096), (4, 2048)]:
        cases.append(_c(L, "qlora", mb, seq, False))
    for mb, seq in [(1, 2048), (4, 2048), (8, 4096)]:
        cases.append(_c(M, "qlora", mb, seq, True))
    for mb, seq in [(1, 2048), (4, 1024)]:
        cases.append(_c(M, "qlora", mb, seq, False))
    # ---- full fine-tuning (pure bf16 weights + bf16 AdamW states), only near the 80 GB edge
    for mb, seq in [(1, 512), (1, 2048), (1, 4096), (2, 2048), (4, 2048)]:
        cases.append(_c(L, "full", mb, seq, True))
    for mb, seq in [(1, 512), (1, 2048), (1, 4096)]:
        cases.append(_c(L, "full", mb, seq, False))
    for mb, seq in [(1, 2048), (1, 4096), (2, 2048), (4, 4096)]:
        cases.append(_c(M, "full", mb, seq, True))
    for mb, seq in [(1, 2048)]:
        cases.append(_c(M, "full", mb, seq, False))
    # ---- repeats in a fresh process (run-to-run spread of the same case)
    for arch, method, mb, seq, ckpt in [(L, "lora", 1, 512, True), (L, "lora", 1, 2048, True),
                                        (L, "lora", 4, 2048, True), (L, "lora", 1, 2048, False),
                                        (M, "lora", 4, 2048, True)]:
        cases.append(_c(arch, method, mb, seq, ckpt, rep=2))
    ids = [c["id"] for c in cases]
    assert len(ids) == len(set(ids)), "duplicate case ids"
    return cases


SMOKE = ["llama3-8b-lora-mb1-s2048-gc", "llama3-8b-qlora-mb1-s2048-gc", "mixtral-8x7b-L4-qlora-mb1-s2048-gc"]


def n_steps(c):
    return 8 if c["mb"] * c["seq"] <= 8192 else 6


def warmup_steps(c):
    return 3 if n_steps(c) >= 8 else 2


def est_case_s(c):
    """Rough wall time of one case (for deadlines only)."""
    active = {"Llama-3-8B": 8.0e9, "Mistral-7B": 7.2e9, "Mixtral-8x7B": 0.45e9 * c["layers"] + 0.3e9}[c["arch"]]
    per_tok = (6 if c["method"] == "full" else 4) + (2 if c["ckpt"] else 0)
    return 10 + n_steps(c) * c["mb"] * c["seq"] * active * per_tok / 3.0e14


def est_group_setup_s(method, arch):
    return 60 if method == "qlora" else 25


# --------------------------------------------------------------------------- worker
class _Dev:
    """torch.cuda memory/timing calls; TSB_CPU=1 makes them no-ops (a CPU check of the logic)."""

    def __init__(self):
        import torch
        self.torch = torch
        self.cpu = bool(os.environ.get("TSB_CPU"))
        self.name = "cpu" if self.cpu else "cuda"

    def sync(self):
        if not self.cpu:
            self.torch.cuda.synchronize()

    def empty_cache(self):
        if not self.cpu:
            self.torch.cuda.empty_cache()

    def reset_peak(self):
        if not self.cpu:
            self.torch.cuda.reset_peak_memory_stats()

    def allocated(self):
        return 0 if self.cpu else self.torch.cuda.memory_allocated()

    def peak_allocated(self):
        return 0 if self.cpu else self.torch.cuda.max_memory_allocated()

    def peak_reserved(self):
        return 0 if self.cpu else self.torch.cuda.max_memory_reserved()


def build_config(arch, layers):
    import transformers
    spec = ARCHS[arch]
    fields = dict(spec["fields"], num_hidden_layers=layers)
    cfg = getattr(transformers, spec["cls"])(**fields)
    cfg._attn_implementation = "sdpa"
    return cfg, fields


def param_report(model):
    import torch
    by_dtype, n4_modules, q_elems, unq_elems, expert = {}, 0, 0, 0, {}
    for name, p in model.named_parameters():
        cls = p.__class__.__name__
        key = "nf4(packed uint8)" if cls == "Params4bit" else str(p.dtype).replace("torch.", "")
        by_dtype[key] = by_dtype.get(key, 0) + p.numel() * p.element_size()
        if cls == "Params4bit":
            qs = getattr(p, "quant_state", None)
            q_elems += int(torch.Size(qs.shape).numel()) if qs is not None else p.numel() * 2
        else:
            unq_elems += p.numel()
        if (p.dim() == 3 or ".experts." in name) and "lora_" not in name:
            d = expert.setdefault(str(p.dtype).replace("torch.", "") if cls != "Params4bit" else "nf4", [0, 0])
            d[0] += 1
            d[1] += p.numel()
    for m in model.modules():  # bitsandbytes' own Linear4bit (not peft's lora.Linear4bit wrapper)
        if m.__class__.__name__ == "Linear4bit" and m.__class__.__module__.startswith("bitsandbytes"):
            n4_modules += 1
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    lora_modules = sorted({n.split(".")[-1] for n, m in model.named_modules()
                           if hasattr(m, "lora_A") and hasattr(m, "base_layer")})
    return dict(param_bytes_by_dtype=by_dtype, linear4bit_modules=n4_modules,
                quantized_weight_elements=q_elems, unquantized_param_elements=unq_elems,
                expert_params_by_dtype={k: {"tensors": v[0], "elements": v[1]} for k, v in expert.items()},
                trainable_params=trainable, lora_wrapped_module_names=lora_modules)


def worker(cases_path, results_path, deadline):
    import torch
    from transformers import AutoModelForCausalLM, Trainer, TrainerCallback, TrainingArguments

    dev = _Dev()
    cases = json.loads(Path(cases_path).read_text())
    g = cases[0]
    arch, method, layers = g["arch"], g["method"], g["layers"]
    cfg, fields = build_config(arch, layers)
    t_build = time.time()
    quant_before_prepare = None

    def emit(rec):
        with open(results_path, "a") as f:
            f.write(json.dumps(rec) + "\n")

    if method in ("full", "lora"):
        with torch.device(dev.name):
            model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16, attn_implementation="sdpa")
        if method == "lora":
            from peft import LoraConfig, get_peft_model
            model = get_peft_model(model, LoraConfig(
                r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=lora_dropout(arch),
                target_modules=LORA["targets"], task_type="CAUSAL_LM"))
    else:
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
        from transformers import BitsAndBytesConfig
        save_layers = max(layers, 8) if arch == "Mixtral-8x7B" else layers
        wdir = QLORA_CACHE / f"{arch}-L{save_layers}"
        if not (wdir / "DONE").exists():
            # keep at most one saved model on the 64 GB disk
            if QLORA_CACHE.exists():
                subprocess.run(["rm", "-rf", str(QLORA_CACHE)], check=False)
            scfg, _ = build_config(arch, save_layers)
            with torch.device("cuda"):
                m = AutoModelForCausalLM.from_config(scfg, dtype=torch.bfloat16, attn_implementation="sdpa")
            m.save_pretrained(wdir, max_shard_size="5GB")
            (wdir / "DONE").write_text("ok")
            del m
            gc.collect()
            dev.empty_cache()
        t_saved = time.time()
        bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                 bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.bfloat16)
        # the config passed decides layers_built (a Mixtral saved with 8 layers loads its first 4)
        model = AutoModelForCausalLM.from_pretrained(
            wdir, config=cfg, quantization_config=bnb, dtype=torch.bfloat16,
            device_map={"": 0}, attn_implementation="sdpa")
        quant_before_prepare = param_report(model)
        quant_before_prepare["allocated_bytes"] = dev.allocated()
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        model = get_peft_model(model, LoraConfig(
            r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=lora_dropout(arch),
            target_modules=LORA["targets"], task_type="CAUSAL_LM"))
        print(f"[worker] qlora weights ready: save {t_saved - t_build:.0f}s, load {time.time() - t_saved:.0f}s",
              flush=True)
    model.train()
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    report = param_report(model)
    total_params = sum((p.quant_state.shape.numel() if p.__class__.__name__ == "Params4bit"
                        and getattr(p, "quant_state", None) is not None else p.numel())
                       for p in model.parameters())
    build_s = time.time() - t_build
    print(f"[worker] {arch} {method} L{layers} built in {build_s:.0f}s; "
          f"allocated {dev.allocated() / 2**30:.2f} GiB; "
          f"experts impl {getattr(base.config, '_experts_implementation', None)}", flush=True)

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times = []

        def on_step_begin(self, args, state, control, **kw):
            dev.sync()
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            dev.sync()
            self.times.append(time.perf_counter() - self.t0)

    class RandomTokens(torch.utils.data.Dataset):
        def __init__(self, n, seq, vocab):
            self.n, self.seq, self.vocab = n, seq, vocab

        def __len__(self):
            return self.n

        def __getitem__(self, i):
            gen = torch.Generator().manual_seed(1234 + i)
            ids = torch.randint(0, self.vocab, (self.seq,), generator=gen)
            return {"input_ids": ids, "labels": ids.clone()}

    oomed = []  # (ckpt, mb, seq) of cases that ran out of memory
    for c in cases:
        rec = dict(case_meta(c, fields, cfg), total_params=total_params, params=report)
        if quant_before_prepare is not None:
            rec["params_after_load_before_prepare"] = quant_before_prepare
        rec["experts_implementation"] = getattr(base.config, "_experts_implementation", None)
        rec["group_build_s"] = round(build_s, 1)
        if any(k == c["ckpt"] and mb <= c["mb"] and seq <= c["seq"] for k, mb, seq in oomed):
            rec.update(oom=True, oom_inferred=True,
                       note="not run: a case of this group with the same checkpointing and no larger "
                            "micro batch or sequence ran out of memory")
            emit(rec)
            continue
        if time.time() + est_case_s(c) > deadline:
            print(f"[worker] deadline: skip {c['id']}", flush=True)
            continue
        steps, warm = n_steps(c), warmup_steps(c)
        model.zero_grad(set_to_none=True)
        if not c["ckpt"] and getattr(base, "is_gradient_checkpointing", False):
            base.gradient_checkpointing_disable()
        gc.collect()
        dev.empty_cache()
        timer = StepTimer()
        args = TrainingArguments(
            output_dir="/tmp/tunespec-bench-out", per_device_train_batch_size=c["mb"],
            gradient_accumulation_steps=1, max_steps=steps,
            learning_rate=2e-5 if method == "full" else 1e-4, lr_scheduler_type="constant",
            warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, optim="adamw_torch",
            bf16=True, gradient_checkpointing=c["ckpt"], logging_steps=steps, report_to="none",
            save_strategy="no", disable_tqdm=True, dataloader_num_workers=0,
            remove_unused_columns=False, seed=0, use_cpu=dev.cpu)
        ds = RandomTokens(c["mb"] * steps, c["seq"], cfg.vocab_size)
        trainer = None
        t0 = time.time()
        try:
            trainer = Trainer(model=model, args=args, train_dataset=ds, callbacks=[timer])
            model.train()
            dev.sync()
            rec["model_allocated_bytes"] = dev.allocated()
            dev.reset_peak()
            out = trainer.train()
            dev.sync()
            rec["peak_allocated_bytes"] = dev.peak_allocated()
            rec["peak_reserved_bytes"] = dev.peak_reserved()
            rec["gradient_checkpointing_active"] = bool(getattr(base, "is_gradient_checkpointing", None))
            timed = timer.times[warm:]
            st = statistics.median(timed)
            rec.update(oom=False, step_times_s=[round(t, 4) for t in timer.times], steps=steps,
                       warmup_steps=warm, step_time_s=round(st, 4),
                       step_time_min_s=round(min(timed), 4), step_time_max_s=round(max(timed), 4),
                       tokens_per_s=round(c["mb"] * c["seq"] / st, 1),
                       train_loss=float(out.training_loss))
        except torch.OutOfMemoryError as e:
            rec.update(oom=True, error=str(e).split("\n")[0][:300],
                       peak_allocated_bytes=dev.peak_allocated(),
                       peak_reserved_bytes=dev.peak_reserved(),
                       steps_completed=len(timer.times))
            e.__traceback__ = None
            oomed.append((c["ckpt"], c["mb"], c["seq"]))
        except Exception as e:  # noqa: BLE001 - recorded, the driver decides
            import traceback
            rec.update(oom=False, error=f"{type(e).__name__}: {e}"[:2000],
                       traceback=traceback.format_exc()[-3000:])
        rec["case_wall_s"] = round(time.time() - t0, 1)
        emit(rec)
        print(f"[worker] {c['id']}: oom={rec.get('oom')} step={rec.get('step_time_s')} "
              f"peak={(rec.get('peak_allocated_bytes') or 0) / 2**30:.2f} GiB "
              f"wall={rec['case_wall_s']}s err={rec.get('error', '')[:200]}", flush=True)
        if trainer is not None:
            trainer.optimizer = None
            trainer.lr_scheduler = None
            trainer.accelerator.free_memory()
        del trainer
        model.zero_grad(set_to_none=True)
        gc.collect()
        dev.empty_cache()


def case_meta(c, fields, cfg):
    return dict(
        id=c["id"], arch_name=c["arch"], config=dict(fields, model_type=cfg.model_type,
                                                     architectures=[ARCHS[c["arch"]]["cls"].replace("Config", "ForCausalLM")]),
        layers_built=c["layers"], layers_real=ARCHS[c["arch"]]["real_layers"], method=c["method"],
        lora_r=LORA["r"] if c["method"] != "full" else None,
        lora_alpha=LORA["alpha"] if c["method"] != "full" else None,
        lora_dropout=lora_dropout(c["arch"]) if c["method"] != "full" else None,
        lora_dropout_note=MOE_DROPOUT_NOTE if c["method"] != "full" and c["arch"] == "Mixtral-8x7B" else None,
        lora_targets=LORA["targets"] if c["method"] != "full" else None,
        quantization=(dict(bits=4, quant_type="nf4", double_quant=True, compute_dtype="bfloat16")
                      if c["method"] == "qlora" else None),
        micro_batch=c["mb"], seq_len=c["seq"], gradient_checkpointing=c["ckpt"],
        optimizer="adamw_torch", precision="bf16 (model weights bf16, Trainer bf16=True)",
        optimizer_state_dtype="bfloat16" if c["method"] == "full" else "float32",
        attn_implementation="sdpa", packing=True, date=DATE, repeat=c.get("rep", 1))


# --------------------------------------------------------------------------- driver
def env_info():
    import torch
    import transformers
    v = {"torch": torch.__version__, "transformers": transformers.__version__, "cuda": torch.version.cuda}
    for mod in ("peft", "bitsandbytes", "accelerate"):
        try:
            v[mod] = __import__(mod).__version__
        except Exception as e:  # noqa: BLE001
            v[mod] = f"unavailable: {type(e).__name__}"
    if os.environ.get("TSB_CPU"):
        return dict(device="cpu (logic check only)", gpu_memory_bytes=0, driver=None, sm_count=0, versions=v)
    props = torch.cuda.get_device_properties(0)
    try:
        drv = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30).stdout.strip()
    except Exception:  # noqa: BLE001
        drv = None
    return dict(device=torch.cuda.get_device_name(0), gpu_memory_bytes=props.total_memory,
                driver=drv, sm_count=props.multi_processor_count, versions=v)


def fmt_table(cases):
    lines = [f"{'id':44s} {'oom':>4s} {'alloc GiB':>9s} {'resv GiB':>8s} {'step s':>7s} {'tok/s':>8s}"]
    for r in cases:
        a = r.get("peak_allocated_bytes")
        rv = r.get("peak_reserved_bytes")
        lines.append(f"{r['id']:44s} {('inf' if r.get('oom_inferred') else 'OOM') if r.get('oom') else '':>4s} "
                     f"{(a / 2**30 if a else 0):9.2f} {(rv / 2**30 if rv else 0):8.2f} "
                     f"{(r.get('step_time_s') or 0):7.3f} {(r.get('tokens_per_s') or 0):8.0f}"
                     + (f"  ERR {r['error'][:60]}" if r.get("error") and not r.get("oom") else ""))
    return "\n".join(lines)


def driver(a):
    start = time.time()
    deadline = start + a.deadline_s
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    env = env_info()
    env["date"] = DATE
    print(json.dumps(env), flush=True)
    cases = all_cases()
    if a.only:
        keep = set(a.only.split(","))
        cases = [c for c in cases if c["id"] in keep]
    done = set()
    if a.done and Path(a.done).exists():
        prev = json.loads(Path(a.done).read_text())
        done = {r["id"] for r in prev.get("cases", []) if not r.get("error") or r.get("oom")}
    cases = [c for c in cases if c["id"] not in done]
    # group, keeping first-appearance order; inside a group: checkpointing on first, ascending tokens
    groups = {}
    for c in cases:
        groups.setdefault((c["arch"], c["method"], c["layers"]), []).append(c)
    order = list(groups.items())
    results_path = out / "cases.jsonl"
    if a.smoke:
        # smoke: one case of each smoke group first, in SMOKE order (fail fast), then the rest
        byid = {c["id"]: k for k, v in order for c in v}
        plan = [(byid[i], [c for c in groups[byid[i]] if c["id"] == i]) for i in SMOKE if i in byid]
        plan += [(k, [c for c in v if c["id"] not in SMOKE]) for k, v in order]
        plan = [(k, v) for k, v in plan if v]
    else:
        plan = order
    print(f"[driver] {sum(len(v) for _, v in plan)} cases to run in {len(plan)} groups; "
          f"{len(done)} already done", flush=True)
    for key, gcases in plan:
        gcases = sorted(gcases, key=lambda c: (not c["ckpt"], c["mb"] * c["seq"], c["mb"]))
        now = time.time()
        need = est_group_setup_s(key[1], key[0]) + est_case_s(gcases[0])
        if now + need > deadline:
            print(f"[driver] deadline: skip group {key}", flush=True)
            continue
        cpath = out / "group_cases.json"
        cpath.write_text(json.dumps(gcases))
        print(f"[driver] group {key}: {len(gcases)} cases, {deadline - now:.0f}s left", flush=True)
        try:
            p = subprocess.run([sys.executable, __file__, "--worker", str(cpath), str(results_path),
                                str(deadline)], timeout=max(30, deadline + 20 - now))
            if p.returncode != 0:
                print(f"[driver] worker exit {p.returncode}", flush=True)
        except subprocess.TimeoutExpired:
            print("[driver] worker killed at the deadline", flush=True)
        merged = merge(env, results_path)
        (out / "measurements.json").write_text(json.dumps(merged, indent=1) + "\n")
        errs = [r for r in merged["cases"] if r.get("error") and not r.get("oom")]
        if errs and a.stop_on_error:
            print("[driver] stop on error:", errs[0]["id"], errs[0]["error"][:500], flush=True)
            print(errs[0].get("traceback", ""), flush=True)
            break
    merged = merge(env, results_path)
    (out / "measurements.json").write_text(json.dumps(merged, indent=1) + "\n")
    print(f"[driver] done in {time.time() - start:.0f}s", flush=True)
    print(fmt_table(merged["cases"]), flush=True)


def merge(env, results_path):
    recs = []
    if Path(results_path).exists():
        for line in Path(results_path).read_text().splitlines():
            if line.strip():
                recs.append(json.loads(line))
    return dict(env, cases=recs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", nargs=3, metavar=("CASES", "RESULTS", "DEADLINE"))
    ap.add_argument("--out", default=os.environ.get("OUT", "bench-out"))
    ap.add_argument("--deadline-s", type=float, default=540)
    ap.add_argument("--done", help="measurements JSON whose cases are skipped")
    ap.add_argument("--only", help="comma-separated case ids")
    ap.add_argument("--smoke", action="store_true", help="run the smoke cases first")
    ap.add_argument("--stop-on-error", action="store_true")
    ap.add_argument("--list", action="store_true", help="list the cases with time estimates")
    a = ap.parse_args()
    if a.list:
        tot = 0
        for c in all_cases():
            tot += est_case_s(c)
            print(f"{c['id']:44s} {est_case_s(c):6.0f}s")
        print(f"{len(all_cases())} cases, about {tot:.0f}s of steps")
        return
    if a.worker:
        worker(a.worker[0], a.worker[1], float(a.worker[2]))
    else:
        driver(a)


if __name__ == "__main__":
    main()
