"""Cross-field rules: combinations the schema alone cannot refuse, found before anything is queued.

Each rule takes the validated spec and the plan built so far, raises SpecError for a spec that
cannot run, and returns warnings (dicts with `code` and `message`) for one that runs badly.
compiler/checks.py groups them by concern and walks them all.
"""
import json
from typing import List, Tuple

from ..schema import Spec
from ..schema.neuron_sft_config import OPTIMUM_NEURON_VERSION, unaccepted
from ..schema.trainer_arguments import trainer_arguments
from . import catalog, instances
from .data_sources import CHARS_PER_TOKEN
from .errors import SpecError, SpecPath, raise_together
from .precision import emulated_bf16

BNB_OPTIMIZERS = ("adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit")
GATED_PREFIXES = ("meta-llama/", "mistralai/", "google/gemma")


def warning(code: str, message: str, path: SpecPath = ()) -> dict:
    """A warning; one about a field names it (`path`), and the plan locates it in the spec file."""
    return {"code": code, "message": message, **({"path": path} if path else {})}


def method_settings_match_type(spec: Spec, plan: dict) -> List[dict]:
    method = spec.method
    if method.type == "full" and method.lora is not None:
        raise SpecError("`lora` settings are given but the method is `full`", ("method", "lora"),
                        hint="use `type: lora` (or qlora/dora), or remove the `lora` block")
    if method.quantization is not None and method.type != "qlora":
        raise SpecError(f"quantized weights need `type: qlora`, not `{method.type}`", ("method", "quantization"),
                        hint="set `method.type: qlora`, or remove the `quantization` block")
    return []


def lora_dropout(dropout, target_parameters: list) -> float:
    """The adapters' dropout: as given, else 0.05; PEFT adapts fused MoE expert parameters only without
    (experts_adapted_without_dropout refuses a dropout given with them)."""
    if not target_parameters:
        return 0.05 if dropout is None else dropout
    return 0.0


def experts_adapted_without_dropout(spec: Spec, plan: dict) -> List[dict]:
    lora = plan["method"]["lora"]
    dropout = spec.method.lora.dropout if spec.method.lora else None
    if lora and lora["target_parameters"] and dropout:
        raise SpecError(f"PEFT adapts the fused MoE experts ({', '.join(lora['target_parameters'])}) without "
                        f"dropout; dropout is {dropout}", ("method", "lora", "dropout"),
                        hint="set `dropout: 0` (or leave it out), or leave the experts out with "
                             "`include_experts: false`")
    return []


def compile_fits_model(spec: Spec, plan: dict) -> List[dict]:
    """QLoRA of a mixture of experts runs its NF4 experts one at a time (runtime/moe_quantization.py): how many
    tokens each expert gets changes every step, shapes torch.compile would recompile for or break the graph on."""
    if spec.training.torch_compile and plan["method"]["type"] == "qlora" \
            and plan["model"]["architecture"].get("num_local_experts"):
        raise SpecError("torch_compile is not planned with 4-bit experts: their per-expert loop has a different "
                        "shape every step", ("training", "torch_compile"), hint="set `torch_compile: false`")
    return []


def check_accelerator_matches(accelerator: str, hw: dict, name: str) -> None:
    if (accelerator == "trainium") != (hw["kind"] == "trainium"):
        raise SpecError(f"`accelerator: {accelerator}` does not match {name}, which has "
                        f"{hw.get('accelerator_name') or hw['accelerator']}",
                        ("backend", "accelerator"),
                        hint=f"set `accelerator: {'trainium' if hw['kind'] == 'trainium' else 'gpu'}`")


def bitsandbytes_needs_cuda(spec: Spec, plan: dict) -> List[dict]:
    kind = plan["devices"]["kind"]
    if kind == "cuda":
        return []
    where = "Trainium" if kind == "trainium" else "a CPU"
    refusals = []
    if spec.method.type == "qlora":
        refusals.append(SpecError(f"QLoRA's 4-bit weights (bitsandbytes) need CUDA GPUs; this plan runs on {where}",
                                  ("method", "type"), hint="use `type: lora` here, or run on a GPU instance"))
    if spec.training.optimizer in BNB_OPTIMIZERS:
        refusals.append(SpecError(f"the `{spec.training.optimizer}` optimizer comes from bitsandbytes and needs "
                                  f"CUDA GPUs; this plan runs on {where}", ("training", "optimizer"),
                                  hint="use `adamw_torch`"))
    raise_together(refusals)
    return []


def precision_fits_hardware(spec: Spec, plan: dict) -> List[dict]:
    devices, precision = plan["devices"], plan["precision"]["resolved"]
    if devices["kind"] == "cpu":
        refusals = []
        if precision in ("fp16", "fp8"):
            refusals.append(SpecError(f"`{precision}` training is not available on a CPU", ("training", "precision"),
                                      hint="use `auto` (bf16 where the CPU has it, else fp32) on a CPU"))
        if spec.training.liger_kernels:
            refusals.append(SpecError("Liger kernels are Triton/CUDA kernels; this plan runs on a CPU",
                                      ("training", "liger_kernels"), hint="set `liger_kernels: false`"))
        if spec.model.attn_implementation == "flash_attention_2":
            refusals.append(SpecError("flash_attention_2 needs CUDA GPUs", ("model", "attn_implementation"),
                                      hint="use `sdpa`"))
        if spec.training.torch_compile:
            refusals.append(SpecError("torch_compile is planned for CUDA GPUs (Triton kernels); this plan runs on a "
                                      "CPU", ("training", "torch_compile"), hint="set `torch_compile: false`"))
        if spec.model.attn_implementation == "flex_attention":
            refusals.append(SpecError("flex attention has no backward pass on a CPU (torch raises NotImplementedError)",
                                      ("model", "attn_implementation"), hint="use `sdpa` (or `auto`)"))
        raise_together(refusals)
        if emulated_bf16(plan) and not plan["precision"]["allow_emulated_bf16"]:
            return [warning("bf16-emulated-on-cpu",
                            f"this CPU ({devices['cpu']['capability']}) has no native bf16: bf16 training is "
                            "emulated, many times slower than fp32, and `tunespec apply` refuses it; use "
                            "`precision: auto` or `fp32`, or set `training.allow_emulated_bf16: true` to insist",
                            ("training", "precision"))]
        return []
    hw_name = devices.get("hardware", "")
    hw = instances.lookup_instance(hw_name, ("backend",))
    gpu = f"{hw.get('accelerator_name') or hw['accelerator']} ({hw_name})"
    if precision == "bf16" and not hw.get("supports_bf16", True):
        raise SpecError(f"{gpu} has no bfloat16 support", ("training", "precision"),
                        hint="use `fp16` on this hardware, or a newer instance (A10G, A100, H100)")
    if precision == "fp8" and not hw.get("supports_fp8", False):
        raise SpecError(f"{gpu} has no FP8 tensor cores", ("training", "precision"),
                        hint="use `bf16`, or H100/H200 instances (ml.p5.48xlarge)")
    if spec.method.type == "qlora" and spec.method.quantization and precision in ("bf16", "fp16"):
        compute = spec.method.quantization.compute_dtype
        if compute != precision:
            return [warning("qlora-compute-dtype",
                            f"4-bit compute dtype {compute} differs from training precision {precision}")]
    return []


def fsdp_rules(spec: Spec, plan: dict) -> List[dict]:
    dist = spec.distribution
    if dist.strategy not in ("fsdp", "ddp"):
        return []
    out, refusals = [], []
    if plan["devices"]["kind"] == "trainium":
        refusals.append(SpecError(f"{dist.strategy} is for GPUs; Trainium runs use `strategy: neuron`",
                                  ("distribution", "strategy"), hint="set `distribution.strategy: neuron`"))
    if plan["parallel"]["world_size"] == 1:
        out.append(warning("single-process-distribution",
                           f"`{dist.strategy}` over a single process shards and synchronises nothing"))
    quant = spec.method.quantization
    if dist.strategy == "fsdp" and spec.method.type == "qlora":
        storage = quant.storage_dtype if quant else "uint8"
        compute = quant.compute_dtype if quant else "bf16"
        if storage != compute:
            refusals.append(SpecError(
                f"FSDP shards QLoRA's packed 4-bit weights only when their storage dtype equals the compute "
                f"dtype; storage is {storage}, compute is {compute}",
                ("method", "quantization", "storage_dtype"),
                hint=f"set `storage_dtype: {compute}`",
            ))
        if (quant is None or quant.bits == 4) and plan["model"]["architecture"].get("num_local_experts"):
            if dist.cpu_ram_efficient_loading:
                # Seen on 2 x H200: the other ranks' NF4 experts and their adapters stay on the meta device,
                # which FSDP refuses at the first step (runtime/moe_quantization.py builds them on load).
                refusals.append(SpecError("FSDP cannot load NF4 MoE experts on rank 0 only: the other ranks' "
                                          "experts stay on the meta device",
                                          ("distribution", "cpu_ram_efficient_loading"),
                                          hint="set `cpu_ram_efficient_loading: false` (every rank loads and "
                                               "quantizes; the plan counts that load-time peak)"))
    raise_together(refusals)
    return out


def kbit_preparation_fits_sharding(spec: Spec, plan: dict) -> List[dict]:
    quant = spec.method.quantization
    if spec.method.type == "qlora" and quant and quant.kbit_preparation == "full" \
            and spec.distribution.strategy in ("fsdp", "smp"):
        raise SpecError(f"the full k-bit preparation makes unquantized weights fp32 and the rest 4-bit; "
                        f"{spec.distribution.strategy} shards need one dtype",
                        ("method", "quantization", "kbit_preparation"), hint="use `kbit_preparation: minimal`")
    return []


def smp_runs_on_sagemaker(spec: Spec, plan: dict) -> List[dict]:
    if spec.distribution.strategy == "smp" and spec.backend.type != "sagemaker":
        raise SpecError("SMP v2 (torch.sagemaker) runs only in SageMaker training jobs",
                        ("distribution", "strategy"), hint="use `backend.type: sagemaker`, or `strategy: fsdp`")
    return []


def smp_rules(spec: Spec, plan: dict) -> List[dict]:
    dist = spec.distribution
    if dist.strategy != "smp" or spec.backend.type != "sagemaker":
        return []
    world = plan["parallel"]["world_size"]
    experts = plan["model"]["architecture"].get("num_local_experts") or 0
    ep, hsd = dist.expert_parallel_degree, dist.hybrid_shard_degree
    refusals = []
    if ep > 1:
        if not experts:
            refusals.append(SpecError(f"expert parallelism needs a mixture-of-experts model; "
                                      f"{plan['model']['architecture']['name']} has no experts",
                                      ("distribution", "expert_parallel_degree"),
                                      hint="set `expert_parallel_degree: 1`"))
        elif experts % ep:
            refusals.append(SpecError(f"expert_parallel_degree {ep} does not divide the model's {experts} experts",
                                      ("distribution", "expert_parallel_degree"),
                                      hint=f"use a divisor of {experts}: " + ", ".join(
                                          str(d) for d in range(1, experts + 1) if experts % d == 0 and world % d == 0)))
        elif world % ep:
            fits = [str(d) for d in range(1, experts + 1) if experts % d == 0 and world % d == 0]
            refusals.append(SpecError(f"expert_parallel_degree {ep} does not divide the world size {world}",
                                      ("distribution", "expert_parallel_degree"),
                                      hint=f"use one of {', '.join(fits)} (divides both the {experts} experts and "
                                           f"the world size), or more devices"))
    # The hybrid shard degree is checked against a valid expert parallel degree only.
    if hsd and not refusals and hsd * ep > world:
        refusals.append(SpecError(f"hybrid_shard_degree × expert_parallel_degree = {hsd} × {ep} = {hsd * ep} exceeds "
                                  f"the world size {world}", ("distribution", "hybrid_shard_degree"),
                                  hint=f"use hybrid_shard_degree ≤ {world // ep}"))
    elif hsd and not refusals and (world // ep) % hsd:
        refusals.append(SpecError(f"hybrid_shard_degree {hsd} does not divide world size / expert_parallel_degree = "
                                  f"{world // ep}", ("distribution", "hybrid_shard_degree"),
                                  hint="use a divisor of " + str(world // ep)))
    if world % dist.tensor_parallel_degree:
        refusals.append(SpecError(f"tensor_parallel_degree {dist.tensor_parallel_degree} does not divide the world "
                                  f"size {world}", ("distribution", "tensor_parallel_degree")))
    if spec.method.type != "full":
        # SMP v2 documents fine-tuning of whole models only (delayed parameter initialisation), no PEFT path;
        # runtime/smp.py hands the Trainer a model already transformed and FSDP-wrapped, where adapters
        # added afterwards would be neither sharded nor SMP's own tensor/expert-parallel layers.
        refusals.append(SpecError(f"SMP v2 trains whole models: `method.type: {spec.method.type}` adapters cannot be "
                                  "added to the model torch.sagemaker.transform and FSDP have already wrapped",
                                  ("method", "type"),
                                  hint="use `method.type: full` with `strategy: smp`, or `strategy: fsdp` for "
                                       "adapters"))
    if spec.training.torch_compile:
        # runtime/smp.py hands the Trainer SMP's transformed, FSDP-wrapped model; accelerate's compile of its
        # decoder layers is not a path SMP v2 documents
        refusals.append(SpecError("torch_compile is not planned with SMP: SMP v2 transforms and wraps the model "
                                  "itself", ("training", "torch_compile"), hint="set `torch_compile: false`"))
    raise_together(refusals)
    return []


def neuron_rules(spec: Spec, plan: dict) -> List[dict]:
    dist, devices = spec.distribution, plan["devices"]
    on_trainium = devices["kind"] == "trainium"
    if dist.strategy == "neuron" and not on_trainium:
        raise SpecError(f"`strategy: neuron` needs Trainium instances; this plan runs on {devices['accelerator']}",
                        ("distribution", "strategy"), hint="use an ml.trn1 instance, or `strategy: fsdp` on GPUs")
    if on_trainium and dist.strategy != "neuron":
        raise SpecError("Trainium runs need `distribution.strategy: neuron`", ("distribution", "strategy"),
                        hint="set `strategy: neuron` with a tensor_parallel_degree")
    if not on_trainium:
        return []
    cores = devices["per_node"]
    tp = dist.tensor_parallel_degree * dist.pipeline_parallel_degree
    refusals = []
    if cores % tp:
        divisors = [d for d in (1, 2, 4, 8, 16, 32) if cores % d == 0]
        refusals.append(SpecError(f"tensor_parallel_degree × pipeline_parallel_degree = {tp} does not divide the "
                                  f"{cores} NeuronCores of a node", ("distribution", "tensor_parallel_degree"),
                                  hint="use one of " + ", ".join(map(str, divisors))))
    elif dist.tensor_parallel_degree > 1 and (plan["model"]["architecture"]["num_attention_heads"] %
                                              dist.tensor_parallel_degree):
        refusals.append(SpecError(f"tensor_parallel_degree {dist.tensor_parallel_degree} does not divide the model's "
                                  f"attention heads", ("distribution", "tensor_parallel_degree")))
    if spec.model.attn_implementation in ("flash_attention_2", "flex_attention"):
        refusals.append(SpecError(f"{spec.model.attn_implementation} is a CUDA kernel",
                                  ("model", "attn_implementation"), hint="use `sdpa`"))
    raise_together(refusals)
    return []


# The spec field behind a trainer argument NeuronSFTConfig may lack, and how to do without it.
NEURON_TRAINER_ARGUMENT_FIELDS = {
    "completion_only_loss": (("data", "completion_only_loss"),
                             "set `completion_only_loss: false`: the loss on the whole text, as seed 003 trains"),
}


def neuron_sft_config_takes_the_trainer_arguments(spec: Spec, plan: dict) -> List[dict]:
    """Every trainer argument reaches NeuronSFTConfig (schema/neuron_sft_config.py), or the plan is refused."""
    if plan["parallel"]["strategy"] != "neuron" or plan["devices"]["kind"] != "trainium":
        return []
    refusals, arguments = [], trainer_arguments(plan)
    for key in unaccepted(arguments):
        path, hint = NEURON_TRAINER_ARGUMENT_FIELDS.get(key, (("distribution", "strategy"), "train on GPUs"))
        refusals.append(SpecError(f"optimum-neuron {OPTIMUM_NEURON_VERSION}'s NeuronSFTConfig (seed 003's Trainium "
                                  f"trainer) has no `{key}`: the plan's `{key}: {json.dumps(arguments[key])}` would not "
                                  "reach the trainer", path, hint=hint))
    raise_together(refusals)
    return []


def random_init_rules(spec: Spec, plan: dict) -> List[dict]:
    if spec.model.init != "random":
        return []
    if spec.method.type != "full":
        raise SpecError(f"random initialisation pre-trains every weight; `{spec.method.type}` trains adapters on "
                        "frozen weights, which would stay random", ("model", "init"),
                        hint="use `method.type: full`, or `init: pretrained`")
    if spec.distribution.strategy == "device_map":
        # device_map's placement loads the pretrained weights (from_pretrained with max_memory).
        raise SpecError("`strategy: device_map` starts from the pretrained weights: its model loading has no "
                        "random initialisation", ("model", "init"),
                        hint="use `strategy: fsdp`, `ddp` or `smp`, or `init: pretrained`")
    return []


def device_map_rules(spec: Spec, plan: dict) -> List[dict]:
    if spec.distribution.strategy != "device_map":
        return []
    if plan["devices"]["kind"] != "cuda":
        raise SpecError("`device_map` places layers over CUDA GPUs; this plan has none",
                        ("distribution", "strategy"), hint="use `strategy: none` on a CPU")
    if spec.backend.type != "local":
        return [warning("device-map-remote", "device_map runs one process; the other GPUs wait on each layer")]
    return [warning("device-map-sequential",
                    "device_map pipelines layers without overlap: only one GPU computes at a time")]


def single_process_gpus(spec: Spec, plan: dict) -> List[dict]:
    devices = plan["devices"]
    if spec.distribution.strategy == "none" and devices["kind"] == "cuda" and devices["world_size"] > 1:
        return [warning("idle-gpus", f"`strategy: none` uses 1 of the {devices['world_size']} GPUs; "
                                     "use ddp or fsdp to use them all")]
    return []


def sequence_fits_model(spec: Spec, plan: dict) -> List[dict]:
    limit = plan["model"]["architecture"].get("max_position_embeddings")
    if limit and spec.data.max_seq_length > limit:
        raise SpecError(f"max_seq_length {spec.data.max_seq_length} exceeds the model's context of {limit} tokens",
                        ("data", "max_seq_length"), hint=f"use at most {limit}")
    return []


def evaluation_has_data(spec: Spec, plan: dict) -> List[dict]:
    data = spec.data
    if data.eval is not None and data.eval_fraction is not None:
        raise SpecError("give either `eval` or `eval_fraction`, not both", ("data", "eval_fraction"))
    if spec.training.eval_every_steps and data.eval is None and data.eval_fraction is None:
        raise SpecError("`eval_every_steps` is set but there is no evaluation data", ("training", "eval_every_steps"),
                        hint="add `data.eval` or `data.eval_fraction`")
    return []


def gated_model_needs_token(spec: Spec, plan: dict) -> List[dict]:
    if plan["model"]["source_kind"] == "hub" and spec.model.source.startswith(GATED_PREFIXES) \
            and spec.secrets.hf_token is None and not spec.model.offline:
        return [warning("gated-model-token", f"{spec.model.source} is gated on the Hugging Face hub; "
                                             "add `secrets.hf_token` (an env var or a Secrets Manager ARN)")]
    return []


def ampere_or_newer(hw: dict) -> bool:
    """TF32 and flash-attention 2 need NVIDIA Ampere (sm_80) or newer; so do bf16 tensor cores,
    which the catalog records (V100 and T4, the older GPUs in it, have none)."""
    return hw["kind"] == "cuda" and bool(hw.get("supports_bf16"))


def kernels_fit_hardware(spec: Spec, plan: dict) -> List[dict]:
    """TF32, flash-attention 2 and Liger exist only on some accelerators."""
    devices = plan["devices"]
    if devices["kind"] == "cpu":
        if spec.training.tf32:
            raise SpecError("TF32 is a mode of NVIDIA Ampere (or newer) tensor cores; this plan runs on a CPU",
                            ("training", "tf32"), hint="set `tf32: false`")
        return []
    hw = instances.lookup_instance(devices["hardware"], ("backend",))
    name = f"{hw.get('accelerator_name') or hw['accelerator']} ({devices['hardware']})"
    refusals = []
    if devices["kind"] == "trainium":
        if spec.training.liger_kernels:
            refusals.append(SpecError(f"Liger kernels are Triton/CUDA kernels; {name} runs Neuron",
                                      ("training", "liger_kernels"), hint="set `liger_kernels: false`"))
        if spec.training.tf32:
            refusals.append(SpecError(f"TF32 is a mode of NVIDIA tensor cores; {name} has none", ("training", "tf32"),
                                      hint="set `tf32: false`"))
        if spec.training.torch_compile:
            refusals.append(SpecError(f"torch_compile is for CUDA GPUs; {name} compiles its graphs with the Neuron "
                                      "compiler (distribution.compile_steps)", ("training", "torch_compile"),
                                      hint="set `torch_compile: false`"))
    elif not ampere_or_newer(hw):
        if spec.training.tf32:
            refusals.append(SpecError(f"{name} has no TF32 (it needs an Ampere or newer GPU)", ("training", "tf32"),
                                      hint="set `tf32: false`, or use A10G/A100/H100 instances"))
        if spec.model.attn_implementation == "flash_attention_2":
            refusals.append(SpecError(f"flash-attention 2 needs an Ampere or newer GPU; {name} is older",
                                      ("model", "attn_implementation"), hint="use `sdpa`"))
    raise_together(refusals)
    return []


def gpus_within_hardware(spec: Spec, plan: dict) -> List[dict]:
    backend = spec.backend
    if backend.type != "local" or not backend.gpus or not backend.hardware:
        return []
    if backend.hardware in catalog.load_hardware()["local"]:
        return []  # a GPU type (h200-141gb), not a machine: `gpus` says how many this machine has
    available = instances.lookup_instance(backend.hardware, ("backend", "hardware"))["accelerators_per_instance"]
    if backend.gpus > available:
        raise SpecError(f"`gpus: {backend.gpus}` but {backend.hardware} has {available}", ("backend", "gpus"),
                        hint=f"use at most {available}, or name the hardware this runs on")
    return []


def smp_tensor_parallel_divides_heads(spec: Spec, plan: dict) -> List[dict]:
    dist, arch = spec.distribution, plan["model"]["architecture"]
    if dist.strategy != "smp" or dist.tensor_parallel_degree == 1:
        return []
    tp = dist.tensor_parallel_degree
    world = plan["parallel"]["world_size"]
    for key, what in (("num_attention_heads", "attention heads"), ("num_key_value_heads", "key/value heads")):
        heads = arch.get(key)
        if heads and heads % tp:
            raise SpecError(f"tensor_parallel_degree {tp} does not divide the model's {heads} {what}",
                            ("distribution", "tensor_parallel_degree"),
                            hint="use one of " + ", ".join(str(d) for d in range(1, heads + 1)
                                                           if heads % d == 0 and world % d == 0))
    return []


def lora_rank_fits_model(spec: Spec, plan: dict) -> List[dict]:
    lora, hidden = plan["method"]["lora"], plan["model"]["architecture"]["hidden_size"]
    if lora and lora["r"] > hidden:
        raise SpecError(f"LoRA rank {lora['r']} exceeds the model's hidden size {hidden}: the adapters cannot "
                        "have more rank than the weights they adapt", ("method", "lora", "r"),
                        hint="ranks of 8 to 64 are usual")
    return []


def sagemaker_tags_allowed(spec: Spec, plan: dict) -> List[dict]:
    if spec.backend.type != "sagemaker":
        return []
    for key in spec.backend.tags:
        if key.lower().startswith("aws:"):
            raise SpecError("tag keys starting with `aws:` are reserved for AWS", ("backend", "tags", key),
                            hint="rename the tag (e.g. without the `aws:` prefix)")
    return []


def rows_fit_sequence(spec: Spec, plan: dict) -> List[dict]:
    """Every local row longer than max_seq_length: each is cut, completions (and the loss) lost."""
    data = plan["data"]
    if data["format"]["type"] == "text" or "truncates-every-row" in spec.accept_risks:
        return []
    shortest = (data["train"].get("stats") or {}).get("min_chars")
    # Characters per token vary with the text; half the usual ratio makes the lower bound safe.
    if shortest and shortest / (2 * CHARS_PER_TOKEN) > data["max_seq_length"]:
        raise SpecError(f"the shortest row of the train data is about {shortest / CHARS_PER_TOKEN:,.0f} tokens "
                        f"({shortest:,} characters); max_seq_length {data['max_seq_length']} truncates every row",
                        ("data", "max_seq_length"),
                        hint="raise max_seq_length, or add `accept_risks: [truncates-every-row]` to train on "
                             "truncated rows")
    return []


def device_map_weights_fit_share(plan: dict) -> None:
    """device_map places the weights within max_memory_fraction of each GPU (runtime/model_loading.py);
    accelerate would offload what is left to host memory or disk, where PEFT cannot train the layers
    (their adapters stay on the meta device). Refused: no accepted risk makes it run."""
    if plan["parallel"]["strategy"] != "device_map":
        return
    fraction = plan["parallel"]["settings"]["max_memory_fraction"]
    share = fraction * plan["devices"]["memory_gib"]
    weights = plan["estimates"]["memory"]["breakdown_gib"]["weights"]
    if weights <= share:
        return
    raise SpecError(f"device_map: the weights per GPU ({weights} GiB) exceed the {share:.1f} GiB that "
                    f"max_memory_fraction {fraction} leaves of each {plan['devices']['accelerator']}; the rest "
                    "would be offloaded to host memory or disk, where the adapters cannot train",
                    ("distribution", "max_memory_fraction"),
                    hint="raise `max_memory_fraction`, place the layers over more GPUs, or quantize (`type: qlora`)")


def check_estimates(spec: Spec, plan: dict, accepted: Tuple[str, ...]) -> None:
    """Refuse a plan whose memory estimate exceeds the device, unless the risk is accepted (then the
    estimate's `does-not-fit` warning stays in the plan), and a device_map whose weights exceed the GPUs'
    share."""
    device_map_weights_fit_share(plan)
    memory = plan["estimates"]["memory"]
    if memory["verdict"] != "does-not-fit" or "does-not-fit" in accepted:
        return
    fixes = [s["message"] for s in plan["estimates"].get("suggestions") or [] if s.get("verdict") in ("fits", "tight")]
    where = ("backend", "hardware") if spec.backend.type == "local" else ("backend", "instance_type")
    raise SpecError(f"does not fit: the estimated peak is {memory['total_gib']} GiB per device, the "
                    f"{plan['devices']['accelerator']} has {memory['capacity_gib']} GiB", where,
                    hint=(f"{fixes[0]}; or " if fixes else "") + "add `accept_risks: [does-not-fit]` to run it anyway")
