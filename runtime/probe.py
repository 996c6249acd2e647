"""`tunespec probe`: a few real training steps of the plan's model shape, with random weights, on this
machine, measured against the estimate for the same single device.

The model is built from the plan's architecture (fewer layers when the whole model does not fit
here, said in the report); the steps run through the Hugging Face Trainer on random token ids of the
plan's sequence length, as the estimator's ground-truth measurements do (benchmarks/measurements/).
"""
import gc
import resource
import statistics
import tempfile
import time

import torch
from transformers import AutoConfig, AutoModelForCausalLM, Trainer, TrainerCallback, TrainingArguments

from ..schema.trainer_arguments import trainer_arguments
from . import model_loading

# torch's device name → the hardware catalog's local GPU entry.
GPU_KEYS = [("H200", None, "h200-141gb"), ("H100", None, "h100-80gb"), ("A100", 60, "a100-80gb"),
            ("A100", 0, "a100-40gb"), ("A10G", None, "a10g-24gb"), ("L40S", None, "l40s-48gb"),
            ("L4", None, "l4-24gb"), ("T4", None, "t4-16gb")]


def local_hardware() -> str:
    """Catalog name of this machine's first GPU, or `cpu`."""
    if not torch.cuda.is_available():
        return "cpu"
    properties = torch.cuda.get_device_properties(0)
    gib = properties.total_memory / 2**30
    for marker, min_gib, key in GPU_KEYS:
        if marker in properties.name and (min_gib is None or gib >= min_gib):
            return key
    raise model_loading.ModelLoadError(f"{properties.name} is not in tunespec's hardware catalog")


# The catalog speaks Llama's field names; these model types call the same fields otherwise.
CONFIG_FIELD_NAMES = {"falcon": {"num_key_value_heads": "num_kv_heads", "intermediate_size": "ffn_hidden_size"}}


def _settable(config_class: type, name: str) -> bool:
    """Whether a config field can be given (FalconConfig.head_dim is a read-only property, derived)."""
    attribute = getattr(config_class, name, None)
    return not (isinstance(attribute, property) and attribute.fset is None)


def hf_config(architecture: dict, layers: int):
    """A transformers config of the architecture's shape, built by its own constructor so that derived
    fields (Qwen2's layer_types, one per layer) follow the layer count; fields it has not are left out."""
    model_type = architecture["model_type"]
    defaults = AutoConfig.for_model(model_type)
    names = CONFIG_FIELD_NAMES.get(model_type, {})
    fields = {}
    for key, value in architecture.items():
        name = names.get(key, key)
        if key != "model_type" and value is not None and hasattr(defaults, name) and _settable(type(defaults), name):
            fields[name] = value
    return AutoConfig.for_model(model_type, **dict(fields, num_hidden_layers=layers, use_cache=False))


class _StepTimer(TrainerCallback):
    def __init__(self, cuda: bool):
        self.cuda, self.times, self.started = cuda, [], 0.0

    def _sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def on_step_begin(self, args, state, control, **kwargs):
        self._sync()
        self.started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self._sync()
        self.times.append(time.perf_counter() - self.started)


class _RandomTokens(torch.utils.data.Dataset):
    def __init__(self, count: int, length: int, vocab: int):
        self.count, self.length, self.vocab = count, length, vocab

    def __len__(self):
        return self.count

    def __getitem__(self, index):
        ids = torch.randint(0, self.vocab, (self.length,), generator=torch.Generator().manual_seed(index))
        return {"input_ids": ids, "labels": ids.clone()}


def _build_model(plan: dict, layers: int, cuda: bool, scratch: str):
    config = hf_config(plan["model"]["architecture"], layers)
    dtype = model_loading.weights_dtype(plan) if cuda else torch.float32
    if plan["method"].get("quantization"):
        # bitsandbytes quantizes while loading: save random weights once, load them the trainer's way.
        with torch.device("cuda"):
            AutoModelForCausalLM.from_config(config, dtype=dtype).save_pretrained(scratch)
        model_loading.free_accelerator_memory()
        model = model_loading.load_model(plan, scratch)
    else:
        with torch.device("cuda" if cuda else "cpu"):
            model = AutoModelForCausalLM.from_config(
                config, dtype=dtype, attn_implementation=plan["model"].get("attn_implementation") or "sdpa")
    lora = model_loading.lora_config(plan, model)
    if lora is not None:
        from peft import get_peft_model

        model = get_peft_model(model, lora)
        if cuda:  # on a CPU the probe trains fp32 without autocast: PEFT's cast is a no-op there
            model_loading.set_adapter_input_cast(model, plan["method"]["lora"])
    model.train()
    return model


def measure(plan: dict, layers: int, steps: int = 8, warmup: int = 3) -> dict:
    """Run `steps` training steps of the plan's per-device work; median step time after warm-up."""
    cuda = torch.cuda.is_available()
    trainer_plan, batch = trainer_arguments(plan), plan["batch"]
    length = batch["sequence_length"]
    with tempfile.TemporaryDirectory(prefix="tunespec-probe-") as scratch:
        model = _build_model(plan, layers, cuda, scratch)
        timer = _StepTimer(cuda)
        args = TrainingArguments(
            output_dir=scratch, max_steps=steps, per_device_train_batch_size=batch["micro_batch_size"],
            gradient_accumulation_steps=1, gradient_checkpointing=trainer_plan["gradient_checkpointing"],
            bf16=cuda and trainer_plan["bf16"], fp16=cuda and trainer_plan["fp16"], optim=trainer_plan["optim"],
            learning_rate=trainer_plan["learning_rate"], report_to="none", save_strategy="no",
            logging_strategy="no", use_cpu=not cuda, disable_tqdm=True, dataloader_num_workers=0,
            # The estimate counts Liger's chunked loss (no full logits) when the plan asks for its kernels.
            use_liger_kernel=cuda and bool(trainer_plan.get("use_liger_kernel")))
        data = _RandomTokens(steps * batch["micro_batch_size"], length, plan["model"]["architecture"]["vocab_size"])
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        Trainer(model=model, args=args, train_dataset=data, callbacks=[timer]).train()
        step_s = statistics.median(timer.times[warmup:] or timer.times)
        measured = {"layers": layers, "steps": steps, "step_time_s": step_s,
                    "tokens_per_s": batch["micro_batch_size"] * length / step_s}
        if cuda:
            measured.update(peak_allocated_bytes=torch.cuda.max_memory_allocated(),
                            peak_reserved_bytes=torch.cuda.max_memory_reserved(),
                            device=torch.cuda.get_device_name(0))
        else:
            measured.update(peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, device="cpu")
        del model
        gc.collect()
        return measured
