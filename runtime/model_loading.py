"""The plan's model: where its weights are, loading it for training or inference, and its adapter config.

Sources: a hub id, a local folder, a GGUF file, or `pkg://DIST/PATH` (a file of an installed package).
A GGUF model is dequantized into a plain trainable Hugging Face folder once and cached.
"""
import gc
import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Optional

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

from ..schema.package_files import PackageFileError, is_package_uri, package_file
from .progress import CONVERTING

logger = logging.getLogger("tunespec.train")

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


class ModelLoadError(RuntimeError):
    """The plan's model cannot be found or loaded as asked (message says what to change)."""


def cache_root() -> Path:
    return Path(os.environ.get("TUNESPEC_CACHE") or Path.home() / ".cache" / "tunespec")


def _local_source(model_plan: dict) -> str:
    """The plan's source as a hub id or an existing local path."""
    source = model_plan["source"]
    if model_plan["source_kind"] == "s3" or source.startswith("s3://"):
        raise ModelLoadError(f"{source}: S3 model sources are downloaded by the SageMaker/Slurm backends; "
                             "for a local run, download the model and point model.source at the folder")
    if is_package_uri(source):
        try:
            return str(package_file(source))
        except PackageFileError as error:
            raise ModelLoadError(str(error)) from None
    if model_plan["source_kind"] in ("local", "gguf"):
        path = Path(source).expanduser()
        if not path.exists():
            raise ModelLoadError(f"{source}: no such file or folder")
        return str(path)
    return source


def _gguf_cache_dir(gguf: Path) -> Path:
    stat = gguf.stat()
    key = f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|transformers {transformers.__version__}"
    return cache_root() / "models" / hashlib.sha256(key.encode()).hexdigest()[:16]


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantize a GGUF file into a plain model folder (weights, config, tokenizer)."""
    logger.info("converting %s into a trainable model (once) at %s", gguf.name, target)
    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    # A GGUF-loaded model is marked quantized and refuses training and saving: rebuild a plain one.
    config = loaded.config
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    # GGUF tokenizer metadata can disagree with the model's config (SmolLM2: eos <|im_start|> vs
    # <|im_end|>); the config is what generation stops on, so the tokenizer follows it.
    if isinstance(config.eos_token_id, int) and tokenizer.eos_token_id != config.eos_token_id:
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(config.eos_token_id)
    if tokenizer.pad_token is None:
        pad_id = config.pad_token_id if isinstance(config.pad_token_id, int) else config.eos_token_id
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(pad_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    try:
        staging.rename(target)
    except OSError:
        # Another process (a torchrun rank) finished the same conversion first.
        shutil.rmtree(staging)


def model_path(model_plan: dict, on_convert: Optional[Callable[[str], None]] = None) -> str:
    """A hub id or local folder that from_pretrained can load (GGUF files converted and cached).
    `on_convert(phase)` is told before a conversion starts: it takes a while, once."""
    source = _local_source(model_plan)
    if not source.endswith(".gguf"):
        return source
    gguf = Path(source)
    cached = _gguf_cache_dir(gguf)
    if not (cached / "config.json").is_file():
        if on_convert:
            on_convert(CONVERTING)
        _convert_gguf(gguf, cached)
    return str(cached)


def hub_options(model_plan: dict) -> dict:
    return {"revision": model_plan.get("revision"), "trust_remote_code": model_plan.get("trust_remote_code", False),
            "local_files_only": bool(model_plan.get("offline"))}


def load_tokenizer(path: str, model_plan: dict):
    tokenizer = AutoTokenizer.from_pretrained(path, **hub_options(model_plan))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def precision(plan: dict) -> str:
    return plan["precision"]["resolved"]


def weights_dtype(plan: dict) -> torch.dtype:
    # Weights load in the training precision (adapters still train in fp32): a bf16 full fine-tune
    # keeps bf16 weights and AdamW states, as the estimator's measurements do. fp16 cannot hold
    # master weights (the gradient scaler refuses fp16 gradients), so a full fp16 run loads fp32.
    if plan["method"]["type"] == "full" and precision(plan) == "fp16":
        return torch.float32
    return DTYPES[precision(plan)]


def _quantizes_experts(plan: dict) -> bool:
    """Whether the plan's MoE experts are stored in 4 bits (runtime/moe_quantization.py)."""
    quant = plan["method"].get("quantization") or {}
    return quant.get("bits") == 4 and bool(plan["model"]["architecture"].get("num_local_experts"))


def _quantization_config(plan: dict):
    quant = plan["method"].get("quantization")
    if not quant:
        return None
    if not torch.cuda.is_available():
        raise ModelLoadError("QLoRA quantizes with bitsandbytes, which needs a CUDA GPU; "
                             "this machine has none (use method lora on CPU)")
    from transformers import BitsAndBytesConfig

    storage = torch.uint8 if quant["storage_dtype"] == "uint8" else DTYPES[quant["storage_dtype"]]
    if quant["bits"] == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    # The 16-bit experts are loaded into host memory (see _device_map), which bitsandbytes accepts
    # only with this flag; nothing of them is an nn.Linear, so nothing is kept unquantized by it.
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant["quant_type"],
                              bnb_4bit_use_double_quant=quant["double_quant"],
                              bnb_4bit_compute_dtype=DTYPES[quant["compute_dtype"]],
                              bnb_4bit_quant_storage=storage,
                              llm_int8_enable_fp32_cpu_offload=_quantizes_experts(plan))


def experts_in_host_memory(path: str, model_plan: dict, gpu: int) -> dict:
    """A device_map keeping the model's fused experts in host memory and everything else on `gpu`."""
    from transformers import AutoConfig

    from .moe_quantization import fused_experts_names

    config = AutoConfig.from_pretrained(path, **hub_options(model_plan))
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config, trust_remote_code=model_plan.get("trust_remote_code", False))
    return host_experts_device_map(skeleton, fused_experts_names(skeleton), gpu)


def host_experts_device_map(model, experts: list, gpu: int) -> dict:
    """Every module that holds no experts is named on `gpu` at the coarsest level, the experts on "cpu".

    No entry for the whole model (""): accelerate's dispatch first moves every tensor under a GPU entry
    onto that GPU, host-memory modules included, and offloads those only afterwards; under "" that put
    all of Mixtral's 16-bit experts (84 GiB) on the GPU while loading (seen on an H200)."""
    def holds_experts(prefix: str) -> bool:
        return any(name == prefix or name.startswith(prefix + ".") for name in experts) if prefix else bool(experts)

    device_map = {}

    def place(prefix: str, module) -> None:
        if prefix in experts:
            device_map[prefix] = "cpu"
        elif not holds_experts(prefix):
            device_map[prefix] = gpu
        else:
            own = [name for name, _ in module.named_parameters(recurse=False)] + \
                  [name for name, _ in module.named_buffers(recurse=False)]
            device_map.update({f"{prefix}.{name}" if prefix else name: gpu for name in own})
            for name, child in module.named_children():
                place(f"{prefix}.{name}" if prefix else name, child)

    place("", model)
    return device_map


def _device_map(plan: dict, quantized: bool, path: str):
    parallel = plan.get("parallel") or {}
    if parallel.get("strategy") == "device_map":
        # Seed 002's naive pipeline: the layers spread over the plan's GPUs, all in this one process.
        stages = parallel["pipeline_stages"]
        if stages > torch.cuda.device_count():
            raise ModelLoadError(f"the plan places the layers over {stages} GPUs (parallel.pipeline_stages); "
                                 f"this machine has {torch.cuda.device_count()}")
        fraction = parallel["settings"]["max_memory_fraction"]
        gib = {i: f"{int(torch.cuda.get_device_properties(i).total_memory * fraction / 2**30)}GiB"
               for i in range(stages)}
        return "auto", gib
    if _quantizes_experts(plan):
        # bitsandbytes places the linear layers on this process's GPU; the 16-bit experts wait in
        # host memory and reach the GPU one expert at a time, as NF4 (load_model).
        return experts_in_host_memory(path, plan["model"], int(os.environ.get("LOCAL_RANK", "0"))), None
    if quantized and parallel.get("strategy") != "fsdp":
        # bitsandbytes weights are placed at load time: on this process's own GPU.
        return {"": int(os.environ.get("LOCAL_RANK", "0"))}, None
    return None, None


def _quantize_experts(model, plan: dict, in_place: bool) -> None:
    """NF4 experts: where device_map "auto" placed their layer (`in_place`), or on this process's GPU
    from host memory; then every weight is there and the load-time dispatch hooks (which moved
    activations to the host for the experts) go."""
    from accelerate.hooks import remove_hook_from_module

    from .moe_quantization import quantize_experts

    quant = plan["method"]["quantization"]
    if in_place:
        count = quantize_experts(model, quant)
    else:
        device = int(os.environ.get("LOCAL_RANK", "0"))
        count = quantize_experts(model, quant, torch.device("cuda", device))
        remove_hook_from_module(model, recurse=True)
        model.hf_device_map = {"": device}
    logger.info("quantized the experts of %d MoE layers to NF4", count)


def randomly_initialised(plan: dict, path: str, options: dict):
    """Pre-training from scratch (`model.init: random`): the source's config, fresh weights drawn from the
    plan's seed, so every rank starts from the same ones."""
    from transformers import AutoConfig, set_seed

    config = AutoConfig.from_pretrained(path, **hub_options(plan["model"]))
    set_seed(plan["trainer"]["seed"])
    return AutoModelForCausalLM.from_config(config, dtype=options["dtype"],
                                            attn_implementation=options["attn_implementation"],
                                            trust_remote_code=plan["model"]["trust_remote_code"])


def load_model(plan: dict, path: str):
    """The base model for training, in the plan's dtype, quantized for QLoRA."""
    model_plan = plan["model"]
    quantization = _quantization_config(plan)
    device_map, max_memory = _device_map(plan, quantization is not None, path)
    options = dict(hub_options(model_plan), dtype=weights_dtype(plan),
                   attn_implementation=model_plan.get("attn_implementation") or "sdpa")
    if quantization is not None:
        options["quantization_config"] = quantization
    if device_map is not None:
        options["device_map"] = device_map
    if max_memory is not None:
        options["max_memory"] = max_memory
    if model_plan["init"] == "random":
        model = randomly_initialised(plan, path, options)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, **options)
    model.config.use_cache = False  # the KV cache only costs memory while training
    if _quantizes_experts(plan):
        _quantize_experts(model, plan, in_place=device_map == "auto")
    if plan["precision"]["kbit_upcast"]:
        # The QLoRA paper's recipe, when the plan asks for it: norms, embeddings and every other
        # unquantized weight in fp32 (the rules refuse it under FSDP/SMP, whose shards need one dtype).
        # By default the weights keep the training dtype: the model's norms and loss compute in fp32.
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return model


def inference_placement(plan: dict, run_dir: Path) -> dict:
    """from_pretrained's placement options for the merge and the answers to prompts, as the plan's
    `inference` section places the model (also given to PEFT, which places the adapted model again)."""
    inference = plan["inference"]
    max_memory = inference["max_memory"]
    if max_memory is not None:
        max_memory = {int(device) if device.isdigit() else device: cap for device, cap in max_memory.items()}
        gpus = sorted(device for device in max_memory if isinstance(device, int))
        if gpus and gpus[-1] >= torch.cuda.device_count():
            raise ModelLoadError(f"the plan places the model over {len(gpus)} GPUs (inference.max_memory); "
                                 f"this machine has {torch.cuda.device_count()}")
    return {"device_map": inference["device_map"], "max_memory": max_memory,
            "offload_folder": str(run_dir / inference["offload_folder"])}


def remove_offloaded(placement: dict) -> None:
    """The offload folder's weights, once their model is gone (the run folder is the job's output)."""
    shutil.rmtree(placement["offload_folder"], ignore_errors=True)


def load_for_inference(plan: dict, path: str, placement: dict, dtype: Optional[torch.dtype] = None):
    """A model for generation or merging, placed as `placement` (inference_placement) says, in the
    plan's inference dtype unless `dtype` says otherwise."""
    dtype = dtype or DTYPES[plan["inference"]["dtype"]]
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **placement, **hub_options(plan["model"]))
    return model.eval()


def free_accelerator_memory() -> None:
    """Give the memory of models just dropped back to the devices (the next model needs it)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def input_device(model) -> torch.device:
    """Where a model takes its inputs: a placed model on its first GPU (accelerate's hooks move the
    activations on from there; the CPU when it has none), else where its weights are."""
    placed = list((getattr(model, "hf_device_map", None) or {}).values())
    if not placed:
        return model.device
    gpus = [device for device in placed if device not in ("cpu", "disk")]
    if not gpus:
        return torch.device("cpu")
    return torch.device("cuda", gpus[0]) if isinstance(gpus[0], int) else torch.device(gpus[0])


def set_adapter_input_cast(model, lora: dict) -> None:
    """Apply the plan's lora.cast_input_to_adapter_dtype to every PEFT layer of the model (PEFT's switch, the one
    its disable_input_dtype_casting helper flips)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            module.cast_input_dtype_enabled = lora["cast_input_to_adapter_dtype"]


def lora_config(plan: dict, model):
    """peft LoraConfig of the plan's method, or None for full fine-tuning."""
    lora = plan["method"].get("lora")
    if plan["method"]["type"] == "full" or not lora:
        return None
    from peft import LoraConfig

    from .moe_quantization import Nf4Experts, fused_experts_names, register_lora_modules

    options = {}
    if lora.get("target_parameters"):
        if not fused_experts_names(model) and not any(isinstance(m, Nf4Experts) for m in model.modules()):
            raise ModelLoadError("the plan adapts MoE experts but this model has no fused expert weights")
        options["target_parameters"] = lora["target_parameters"]
    config = LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                        target_modules=lora["target_modules"], bias=lora["bias"],
                        use_dora=bool(lora.get("use_dora")) or plan["method"]["type"] == "dora",
                        task_type="CAUSAL_LM", **options)
    register_lora_modules(config)
    return config
