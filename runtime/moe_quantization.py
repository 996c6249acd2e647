"""QLoRA for the fused 3-D experts of transformers-5 MoE models (Mixtral): NF4 storage, LoRA on top.

bitsandbytes' 4-bit loading replaces nn.Linear modules only, so the fused expert parameters
(`experts.gate_up_proj` (E, 2I, H) and `experts.down_proj` (E, H, I), 97% of Mixtral's weights) would
stay 16-bit. `quantize_experts` swaps each such experts module for `Nf4Experts`: every expert is
quantized on its own with bitsandbytes' functional 4-bit API (blocks of 64, double quantization of
the block scales as the plan says) into a packed parameter of the plan's storage dtype (what FSDP
shards), and the forward multiplies through `bitsandbytes.matmul_4bit`, which dequantizes one
expert at a time (again in backward) so no 16-bit copy of a layer's experts stays resident.

LoRA reaches the experts through PEFT's `target_parameters` (`experts.gate_up_proj`,
`experts.down_proj`): `register_lora_modules` registers a subclass of PEFT's ParamWrapper whose
adapters have PEFT's own shapes and names, so the saved adapter loads and merges onto the plain
16-bit model with stock PEFT. Instead of materialising W + B@A for the whole expert stack as
ParamWrapper does, it adds each expert's low-rank product to that expert's output.
"""
from __future__ import annotations

import functools

import torch
from torch import nn

NF4_BLOCKSIZE = 64
EXPERT_PARAMETERS = ("gate_up_proj", "down_proj")
STORAGE_DTYPES = {"uint8": torch.uint8, "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
COMPUTE_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


class ExpertQuantizationError(RuntimeError):
    """The model's experts are of a layout this module cannot quantize."""


def is_fused_experts(module: nn.Module) -> bool:
    """A transformers-5 experts module holding every expert in 3-D gate_up_proj/down_proj parameters."""
    params = dict(module.named_parameters(recurse=False))
    return all(name in params and params[name].ndim == 3 for name in EXPERT_PARAMETERS)


def fused_experts_names(model: nn.Module) -> list:
    """Qualified names of the model's fused experts modules."""
    return [name for name, module in model.named_modules() if is_fused_experts(module)]


def _as_bits(tensor: torch.Tensor) -> torch.Tensor:
    # Floating quantization constants are kept as raw int32 bits: FSDP's mixed precision casts
    # floating buffers to bf16, which would corrupt them; integer buffers are only moved.
    return tensor.to(torch.float32).contiguous().view(torch.int32)


def _from_bits(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.view(torch.float32)


def loaded_weight(experts: nn.Module, name: str) -> torch.Tensor:
    """An expert parameter as loaded. A device_map that keeps the experts in host memory beside a GPU
    makes accelerate offload them: the parameter is left on the meta device and the tensor is kept in
    the module's hook (`weights_map`), from which it is read here."""
    weight = getattr(experts, name)
    hook = getattr(experts, "_hf_hook", None)
    for each in getattr(hook, "hooks", [hook]):  # a SequentialHook holds several
        offloaded = getattr(each, "weights_map", None)
        if weight.is_meta and offloaded is not None and name in offloaded:
            return offloaded[name]
    return weight


class Nf4Experts(nn.Module):
    """The experts of one MoE layer, each expert's matrices in NF4, computing in the compute dtype.

    `gate_up_proj` and `down_proj` are the packed 4-bit storage (E, packed elements of the storage
    dtype), frozen; `logical_shape(name)` is the (E, out, in) shape of the weights they hold.
    """

    def __init__(self, experts: nn.Module, quant: dict, device=None):
        super().__init__()
        if getattr(experts, "is_transposed", False) or getattr(experts, "has_bias", False) \
                or not getattr(experts, "has_gate", True):
            raise ExpertQuantizationError(f"{type(experts).__name__}: only gated, untransposed, bias-free "
                                          "fused experts (Mixtral's layout) are quantized")
        self.num_experts = experts.num_experts
        self.act_fn = experts.act_fn
        self.quant_type = quant.get("quant_type", "nf4")
        self.double_quant = bool(quant.get("double_quant", True))
        self.compute_dtype = COMPUTE_DTYPES[quant.get("compute_dtype", "bf16")]
        storage = STORAGE_DTYPES[quant.get("storage_dtype", "uint8")]
        self._shapes = {}
        for name in EXPERT_PARAMETERS:
            weight = loaded_weight(experts, name)
            self._shapes[name] = tuple(weight.shape)
            self._quantize(name, weight, storage, device or weight.device)

    def logical_shape(self, name: str) -> tuple:
        return self._shapes[name]

    def _quantize(self, name: str, weight: torch.Tensor, storage: torch.dtype, device) -> None:
        from bitsandbytes import functional as bnb_functional

        experts, out_features, in_features = weight.shape
        if weight.is_meta or torch.device(device).type == "meta":
            # A rank that loads no weights (FSDP's cpu_ram_efficient_loading) gets rank 0's by broadcast.
            self._register_empty(name, out_features * in_features, storage)
            return
        packed, absmax, nested, offsets = [], [], [], []
        for index in range(experts):
            expert = weight[index].to(device=device, dtype=self.compute_dtype)
            data, state = bnb_functional.quantize_4bit(expert, blocksize=NF4_BLOCKSIZE,
                                                       compress_statistics=self.double_quant,
                                                       quant_type=self.quant_type, quant_storage=storage)
            packed.append(data.view(-1))
            absmax.append(state.absmax)
            if self.double_quant:
                nested.append(state.state2.absmax)
                offsets.append(state.offset.reshape(()))
        self.register_parameter(name, nn.Parameter(torch.stack(packed), requires_grad=False))
        self.register_buffer(f"{name}_code", _as_bits(state.code), persistent=False)
        if self.double_quant:
            self.register_buffer(f"{name}_absmax", torch.stack(absmax), persistent=False)
            self.register_buffer(f"{name}_nested_absmax", _as_bits(torch.stack(nested)), persistent=False)
            self.register_buffer(f"{name}_offset", _as_bits(torch.stack(offsets)), persistent=False)
            self.register_buffer(f"{name}_nested_code", _as_bits(state.state2.code), persistent=False)
        else:
            self.register_buffer(f"{name}_absmax", _as_bits(torch.stack(absmax)), persistent=False)

    def _register_empty(self, name: str, numel: int, storage: torch.dtype) -> None:
        meta = torch.device("meta")
        per_storage = torch.finfo(storage).bits // 8 if storage.is_floating_point else 1
        blocks = -(-numel // NF4_BLOCKSIZE)
        self.register_parameter(name, nn.Parameter(
            torch.empty(self.num_experts, numel // 2 // per_storage, dtype=storage, device=meta), requires_grad=False))
        self.register_buffer(f"{name}_code", torch.empty(16, dtype=torch.int32, device=meta), persistent=False)
        if self.double_quant:
            self.register_buffer(f"{name}_absmax", torch.empty(self.num_experts, blocks, dtype=torch.uint8,
                                                               device=meta), persistent=False)
            self.register_buffer(f"{name}_nested_absmax", torch.empty(self.num_experts, -(-blocks // 256),
                                                                      dtype=torch.int32, device=meta), persistent=False)
            self.register_buffer(f"{name}_offset", torch.empty(self.num_experts, dtype=torch.int32, device=meta),
                                 persistent=False)
            self.register_buffer(f"{name}_nested_code", torch.empty(256, dtype=torch.int32, device=meta),
                                 persistent=False)
        else:
            self.register_buffer(f"{name}_absmax", torch.empty(self.num_experts, blocks, dtype=torch.int32,
                                                               device=meta), persistent=False)

    def _quant_state(self, name: str, index: int):
        from bitsandbytes.functional import QuantState

        _, out_features, in_features = self._shapes[name]
        state2, offset = None, None
        if self.double_quant:
            absmax = getattr(self, f"{name}_absmax")[index]
            offset = _from_bits(getattr(self, f"{name}_offset"))[index]
            state2 = QuantState(absmax=_from_bits(getattr(self, f"{name}_nested_absmax"))[index],
                                code=_from_bits(getattr(self, f"{name}_nested_code")), blocksize=256,
                                dtype=torch.float32)
        else:
            absmax = _from_bits(getattr(self, f"{name}_absmax"))[index]
        return QuantState(absmax=absmax, shape=torch.Size((out_features, in_features)),
                          code=_from_bits(getattr(self, f"{name}_code")), blocksize=NF4_BLOCKSIZE,
                          quant_type=self.quant_type, dtype=self.compute_dtype, offset=offset, state2=state2)

    def _project(self, name: str, index: int, inputs: torch.Tensor, adapters: list) -> torch.Tensor:
        import bitsandbytes as bnb

        packed = getattr(self, name)[index].view(torch.uint8)
        output = bnb.matmul_4bit(inputs.to(self.compute_dtype), packed.t(), quant_state=self._quant_state(name, index))
        for lora_a, lora_b, scaling in adapters:
            low_rank = inputs.to(lora_a.dtype) @ lora_a[index].t()
            output = output + (low_rank @ lora_b[index].t() * scaling).to(output.dtype)
        return output

    def forward(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor,
                expert_lora: dict | None = None) -> torch.Tensor:
        """transformers' eager expert loop, over the experts that received tokens."""
        expert_lora = expert_lora or {}
        final = torch.zeros_like(hidden_states)
        with torch.no_grad():
            expert_mask = torch.nn.functional.one_hot(top_k_index, num_classes=self.num_experts).permute(2, 1, 0)
            hit = torch.greater(expert_mask.sum(dim=(-1, -2)), 0).nonzero()
        for index in hit[:, 0].tolist():
            top_k_pos, token_idx = torch.where(expert_mask[index])
            current = hidden_states[token_idx]
            gate, up = self._project("gate_up_proj", index, current,
                                     expert_lora.get("gate_up_proj", [])).chunk(2, dim=-1)
            current = self._project("down_proj", index, self.act_fn(gate) * up, expert_lora.get("down_proj", []))
            current = current * top_k_weights[token_idx, top_k_pos, None]
            final.index_add_(0, token_idx, current.to(final.dtype))
        return final


def quantize_experts(model: nn.Module, quant: dict, device=None) -> int:
    """Replace every fused experts module of `model` by its NF4 form, on `device` (default: where the
    experts are). The 16-bit experts are released module by module. Returns how many were replaced."""
    names = fused_experts_names(model)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, Nf4Experts(getattr(parent, child), quant, device))
    return len(names)


@functools.lru_cache(maxsize=None)
def _param_wrapper_class():
    from peft.tuners.lora import layer

    # PEFT nests one wrapper per targeted parameter and recognises a wrapper by its class name.
    class ParamWrapper(layer.ParamWrapper):
        """PEFT's ParamWrapper over an Nf4Experts parameter: same adapter tensors, applied per expert."""

        def _get_in_out_features(self, module):
            experts, in_features, out_features = self.get_base_layer().logical_shape(self.parameter_name)
            self.num_experts, self._param_ndim = experts, 3
            return in_features, out_features

        def _move_adapter_to_device_of_base_layer(self, adapter_name, device=None):
            # The packed storage's dtype is not the adapters' dtype: move them, keep theirs.
            target = getattr(self.get_base_layer(), self.parameter_name).device
            for layer_name in self.adapter_layer_names:
                layer = getattr(self, layer_name, None)
                if isinstance(layer, nn.ModuleDict) and adapter_name in layer \
                        and not any(p.device.type == "meta" for p in layer[adapter_name].parameters()):
                    layer[adapter_name] = layer[adapter_name].to(target)

        def _expert_factors(self, adapter: str) -> tuple:
            """(A (E, r, in), B (E, out, r), scaling) of one adapter, views of PEFT's lora_A/lora_B."""
            weight_a = self.lora_A[adapter].weight
            weight_b = self.lora_B[adapter].weight
            lora_a = weight_a.reshape(self.num_experts, -1, weight_a.shape[-1])
            lora_b = weight_b.reshape(weight_b.shape[0], -1, self.num_experts).permute(2, 0, 1)
            return lora_a, lora_b, self.scaling[adapter]

        def merge(self, safe_merge=False, adapter_names=None):
            raise NotImplementedError("4-bit experts cannot take a merged adapter: merge onto the 16-bit model")

        def forward(self, x, *args, expert_lora=None, **kwargs):
            expert_lora = dict(expert_lora or {})
            if not self.disable_adapters:
                factors = [self._expert_factors(a) for a in self.active_adapters if a in self.lora_A]
                expert_lora[self.parameter_name] = expert_lora.get(self.parameter_name, []) + factors
            return self.base_layer(x, *args, expert_lora=expert_lora, **kwargs)

    return ParamWrapper


def register_lora_modules(lora_config) -> None:
    """Make PEFT wrap Nf4Experts parameters with this module's ParamWrapper (PEFT's custom-module hook)."""
    lora_config._register_custom_module({Nf4Experts: _param_wrapper_class()})
