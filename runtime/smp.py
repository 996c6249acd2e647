"""SageMaker model parallelism v2 (`torch.sagemaker`) for `distribution.strategy: smp`, the way SMP's
documentation and seed 001's train.py use it:

    process group (SMDDP's `smddp` backend when asked) → torch.sagemaker.init(config)
    → model (delayed parameter initialisation: only rank 0 holds real weights, the others stay on `meta`)
    → torch.sagemaker.transform(model, config=MoEConfig(...), load_state_dict_from_rank0=True)
    → FSDP over the transformed layers (SMP applies the hybrid shard degree to the FSDP groups)
    → activation checkpointing of those layers, activation offloading when planned.

Everything comes from plan.parallel.settings and plan.trainer. `torch.sagemaker` and `smdistributed`
exist only in SageMaker's SMP training images, so this module is imported only for `strategy: smp`.
"""
import logging
from contextlib import nullcontext

import torch
import torch.distributed as dist

from . import model_loading

logger = logging.getLogger("tunespec.train")

SMDDP_BACKEND = "smddp"
# The layer class SMP's own implementation builds (its tensor/expert parallel transformer layer).
SMP_LAYER = "torch.sagemaker.tensor_parallel.transformer.TransformerLayer"


def init_config(plan: dict) -> dict:
    """The SMP configuration given to torch.sagemaker.init: the job's `mp_parameters` plus the seed."""
    settings = plan["parallel"]["settings"]
    return {
        "activation_loading_horizon": settings["activation_loading_horizon"],
        "expert_parallel_degree": settings["expert_parallel_degree"],
        "hybrid_shard_degree": settings["hybrid_shard_degree"],
        "random_seed": plan["trainer"]["seed"],
        "sm_activation_offloading": settings["activation_offloading"],
        "tensor_parallel_degree": settings["tensor_parallel_degree"],
    }


def start(plan: dict) -> None:
    """The process group and SMP, before anything else (Hugging Face's Trainer) starts distributed work."""
    if plan["parallel"]["settings"]["smddp"]:
        # Importing it registers the `smddp` process-group backend (AllGather tuned for AWS networks).
        import smdistributed.dataparallel.torch.torch_smddp  # noqa: F401
        backend = SMDDP_BACKEND
    else:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    if torch.cuda.is_available():
        torch.cuda.set_device(dist.get_rank() % torch.cuda.device_count())
    import torch.sagemaker as tsm

    tsm.init(init_config(plan))
    logger.info("SMP initialised: %s over %d processes (%s backend)", init_config(plan), dist.get_world_size(), backend)


def moe_config(plan: dict):
    """SMP's MoEConfig from plan.parallel.settings.moe (None for a dense model: SMP's own layers then)."""
    moe = plan["parallel"]["settings"].get("moe")
    if not moe:
        return None
    from torch.sagemaker.moe.moe_config import MoEConfig

    return MoEConfig(smp_moe=moe["use_smp_implementation"], random_seed=plan["trainer"]["seed"],
                     moe_load_balancing=moe["load_balancing"], global_token_shuffle=moe["global_token_shuffle"],
                     moe_all_to_all_dispatcher=moe["all_to_all_dispatcher"])


def _base_model(plan: dict, path: str, on_meta: bool):
    """Rank 0 loads the pretrained weights (or, pre-training, draws fresh ones from the plan's seed); with
    delayed initialisation the others build the shape on meta. SMP then gives every rank rank 0's weights."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    hub = model_loading.hub_options(plan["model"])
    # FSDP's mixed precision keeps fp32 master weights and computes in the plan's precision (SMP asserts fp32).
    options = dict(dtype=torch.float32, attn_implementation=plan["model"].get("attn_implementation") or "sdpa")
    if not on_meta and dist.get_rank() == 0:
        if plan["model"]["init"] == "random":
            return model_loading.randomly_initialised(plan, path, options)
        return AutoModelForCausalLM.from_pretrained(path, **hub, **options)
    with init_empty_weights() if on_meta else nullcontext():
        return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path, **hub), **options)


def _layer_classes(model) -> set:
    """The transformer layer classes to shard and checkpoint: SMP's layer when transform built its own,
    else the Hugging Face decoder layers (`_no_split_modules`)."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    found = set()
    for module in model.modules():
        qualified = f"{type(module).__module__}.{type(module).__qualname__}"
        if qualified == SMP_LAYER or type(module).__name__ in names:
            found.add(type(module))
    if any(f"{cls.__module__}.{cls.__qualname__}" == SMP_LAYER for cls in found):
        found = {cls for cls in found if f"{cls.__module__}.{cls.__qualname__}" == SMP_LAYER}
    return found


def load_model(plan: dict, path: str):
    """The plan's model transformed by SMP and wrapped in FSDP, checkpointed and offloaded as planned."""
    import functools

    import torch.sagemaker as tsm
    from accelerate import init_empty_weights
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (CheckpointImpl,
                                                                             apply_activation_checkpointing,
                                                                             checkpoint_wrapper, offload_wrapper)
    from torch.distributed.fsdp import FullyShardedDataParallel, MixedPrecision
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy
    from torch.sagemaker.delayed_param import DelayedParamIniter

    settings = plan["parallel"]["settings"]
    delayed = settings["delayed_param_init"] and dist.get_rank() != 0
    model = _base_model(plan, path, on_meta=delayed)
    model.config.use_cache = False
    with init_empty_weights() if delayed else nullcontext():
        model = tsm.transform(model, config=moe_config(plan), load_state_dict_from_rank0=True)
    initer = DelayedParamIniter(model) if delayed else None
    layers = _layer_classes(model)
    compute = model_loading.DTYPES[model_loading.precision(plan)]
    precision = None if compute == torch.float32 else MixedPrecision(param_dtype=compute, reduce_dtype=compute,
                                                                     buffer_dtype=torch.float32)
    options = {"sync_module_states": torch.cuda.is_available()}
    if not torch.cuda.is_available():
        _sync_on_cpu(model, initer)
    elif initer is not None:
        options["param_init_fn"] = initer.get_param_init_fn()
        if getattr(model.config, "tie_word_embeddings", False):
            options["post_param_init_fn"] = initer.get_post_param_init_fn()
    # No sharding_strategy: SMP sets HYBRID_SHARD over `hybrid_shard_degree` devices from its init config.
    model = FullyShardedDataParallel(
        model, auto_wrap_policy=functools.partial(transformer_auto_wrap_policy, transformer_layer_cls=layers),
        mixed_precision=precision, device_id=_device(),
        use_orig_params=True, **options)
    names = ", ".join(sorted(cls.__name__ for cls in layers))
    wrappers = []
    if plan["trainer"].get("gradient_checkpointing"):
        wrappers.append(functools.partial(checkpoint_wrapper, checkpoint_impl=CheckpointImpl.NO_REENTRANT))
        logger.info("SMP: activation checkpointing of every %s", names)
    if settings["activation_offloading"]:
        # Around each layer (outside its checkpoint, so the inputs it keeps go to host memory), not around
        # the whole model as seed 001 does: the Trainer must still see the FSDP module at the top.
        wrappers.append(offload_wrapper)
        logger.info("SMP: activation offloading, loading horizon %d", settings["activation_loading_horizon"])
    if wrappers:
        apply_activation_checkpointing(model, check_fn=lambda module: isinstance(module, tuple(layers)),
                                       checkpoint_wrapper_fn=lambda layer: functools.reduce(
                                           lambda wrapped, wrap: wrap(wrapped), wrappers, layer))
    logger.info("SMP: FSDP over %s layers, hybrid shard degree %d, expert parallel degree %d, delayed init %s",
                names, settings["hybrid_shard_degree"], settings["expert_parallel_degree"],
                settings["delayed_param_init"])
    return model


def _sync_on_cpu(model, initer) -> None:
    """PyTorch's FSDP syncs module states only between GPUs: on the CPU (gloo) the delayed parameters are
    materialised module by module as FSDP would, then rank 0's weights are broadcast before wrapping."""
    if initer is not None:
        materialise = initer.get_param_init_fn()
        for module in model.modules():
            if any(t.is_meta for t in [*module.parameters(recurse=False), *module.buffers(recurse=False)]):
                materialise(module)
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            dist.broadcast(tensor, src=0)


def _device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def trainer_settings() -> dict:
    """What the Trainer must know of a model this module has already wrapped: it is FSDP (so no DDP goes
    around it) and its checkpointing is applied (so the Trainer does not add its own)."""
    return {"fsdp": "full_shard", "fsdp_config": {"use_orig_params": True}, "gradient_checkpointing": False}
