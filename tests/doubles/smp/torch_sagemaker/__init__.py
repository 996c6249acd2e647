"""Recording double of SMP v2's `torch.sagemaker` (init, transform, state), as SMP's reference documents them.

transform() does what SMP's does to the module tree: each decoder layer becomes a
`torch.sagemaker.tensor_parallel.transformer.TransformerLayer` (here a pass-through around the original
layer); parameters on `meta` stay there. No real expert or tensor parallelism happens."""
import types

import torch.distributed as dist

from .recorder import record
from .tensor_parallel.transformer import TransformerLayer

state = types.SimpleNamespace(initialized=False)


def init(config=None) -> None:
    record("init", config=config, backend=dist.get_backend(), world_size=dist.get_world_size())
    state.initialized = True
    state.rank, state.world_size = dist.get_rank(), dist.get_world_size()
    for key, value in (config or {}).items():
        setattr(state, key, value)


def is_initialized() -> bool:
    return state.initialized


def transform(model, device=None, dtype=None, config=None, load_state_dict_from_rank0=False, cp_comm_type="p2p"):
    if not state.initialized:
        raise RuntimeError("torch.sagemaker.init() must be called before transform()")
    on_meta = any(p.is_meta for p in model.parameters())
    record("transform", model=type(model).__name__, config=getattr(config, "arguments", config),
           load_state_dict_from_rank0=load_state_dict_from_rank0, parameters_on_meta=on_meta)
    layers = model.model.layers
    for index, layer in enumerate(layers):
        layers[index] = TransformerLayer(layer)
    return model
