"""The modules and fused MoE expert parameters LoRA adapts, resolved against an architecture and checked."""
from typing import Optional

from .catalog import did_you_mean
from .errors import SpecError, SpecPath

ALL_LINEAR = "all-linear"
LM_HEAD = "lm_head"
# Names a spec may give to an MoE model's fused experts in target_modules, and the parameters they mean.
_EXPERT_ALIASES = {"experts": ("experts.gate_up_proj", "experts.down_proj"),
                   "experts.gate_up_proj": ("experts.gate_up_proj",), "gate_up_proj": ("experts.gate_up_proj",),
                   "experts.down_proj": ("experts.down_proj",), "down_proj": ("experts.down_proj",)}
_TRANSFORMERS4_EXPERT_NAMES = ("w1", "w2", "w3")


def _expert_alias(arch: dict, name: str) -> Optional[tuple]:
    """The fused expert parameters `name` means on this architecture, or None."""
    if not arch.get("expert_parameters"):
        return None
    key = name[name.index("experts"):] if "experts" in name else name.rsplit(".", 1)[-1]
    return _EXPERT_ALIASES.get(key)


def resolve_target_modules(arch: dict, target_modules, path: SpecPath = ("method", "lora", "target_modules")) -> list:
    """Linear module names LoRA adapts. `all-linear` is every linear layer of the decoder layers (PEFT
    leaves out the output layer); named modules must exist in the architecture (`lm_head` may be named).
    Names of an MoE model's fused experts are left to `resolve_target_parameters`."""
    known = list(arch["linear_modules"])
    if target_modules == ALL_LINEAR:
        return known
    resolved = []
    for name in target_modules:
        short = name.rsplit(".", 1)[-1]
        if short in known or short == LM_HEAD:
            resolved.append(short)
            continue
        if _expert_alias(arch, name):
            continue
        hint = did_you_mean(short, known + [LM_HEAD] + (["experts"] if arch.get("expert_parameters") else []))
        if arch.get("expert_parameters") and short in _TRANSFORMERS4_EXPERT_NAMES + ("gate_proj", "up_proj"):
            hint = ("in transformers 5 the MoE experts are fused parameters (w1 and w3 in experts.gate_up_proj, "
                    "w2 in experts.down_proj): name `experts` (or `experts.gate_up_proj` / `experts.down_proj`)")
        elif arch.get("expert_parameters") and short == arch.get("router"):
            hint = "the MoE router is not adapted (a LoRA on it destabilises routing); name `experts` for the experts"
        raise SpecError(
            f"`{name}` is not a linear module of {arch['name']} (it has {', '.join(known)}"
            + (", and the fused `experts`" if arch.get("expert_parameters") else "") + ")",
            path=path,
            hint=hint,
        )
    return list(dict.fromkeys(resolved))


def resolve_target_parameters(arch: dict, lora: dict, method_type: str) -> list:
    """The fused MoE expert parameters LoRA adapts through PEFT's `target_parameters`.

    `include_experts` unset follows `target_modules`: `all-linear` means attention and experts (the
    router excluded), as it did when Mixtral's experts were linear modules; a list adapts the
    experts it names. DoRA cannot adapt fused parameters: unset, it leaves them out; set, it is refused.
    """
    expert_parameters = list(arch.get("expert_parameters") or [])
    include = lora.get("include_experts")
    target_modules = lora.get("target_modules", ALL_LINEAR)
    if target_modules == ALL_LINEAR:
        named = list(expert_parameters)
    else:
        named = [p for name in target_modules for p in (_expert_alias(arch, name) or ())]
    path = ("method", "lora", "include_experts")
    if include and not expert_parameters:
        raise SpecError(f"{arch['name']} has no MoE experts to adapt", path, hint="remove `include_experts`")
    if include is False and named and target_modules != ALL_LINEAR:
        raise SpecError("`include_experts: false` but target_modules names the experts", path,
                        hint="remove `include_experts`, or the expert names from target_modules")
    dora = method_type == "dora" or lora.get("use_dora", False)
    if include and dora:
        raise SpecError("PEFT's DoRA cannot adapt fused MoE expert parameters", path,
                        hint="use `type: lora` or set `include_experts: false`")
    if include is False or dora:
        return []
    chosen = expert_parameters if include else named
    return [p for p in expert_parameters if p in chosen]
