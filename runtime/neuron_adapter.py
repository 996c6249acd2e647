"""The LoRA adapter that optimum-neuron's consolidation writes, loaded into a PeftModel under the names the
model holds (the merge job of a Trainium run, seed 003).

The consolidated tensors carry PEFT's saved names, without the adapter's own: optimum-neuron takes it out
when it saves the shards (0.1.0's NeuronPeftModel.save_pretrained: `n.replace(f".{adapter_name}", "")`;
`remove_adapter_name` in later versions). A PeftModel holds `...q_proj.lora_A.default.weight`, so the name
goes back in before the weights are loaded, as the recipe's merge_lora_weights.py does
(`replace('weight', 'default.weight')` on the LoRA tensors, the others dropped). Unlike a lenient load,
every LoRA weight of the model must receive a tensor and every LoRA tensor must find its weight: a merge
that silently kept an initial (zero) lora_B would save the base model as the tuned one.
"""
import json
import re
from pathlib import Path

WEIGHTS_FILE = "adapter_model.safetensors"
# split_torch_state_dict_into_shards' index beside sharded weights (the consolidation's SAFE_WEIGHTS_INDEX_NAME).
INDEX_FILE = "model.safetensors.index.json"
LORA_TENSOR = re.compile(r"(?P<module>.+\.lora_[AB])\.(?P<parameter>weight|bias)")


class NeuronAdapterError(ValueError):
    """The consolidated adapter does not fit the model it is merged into."""


def read_consolidated(adapter_dir: Path) -> dict:
    """The consolidated tensors: one safetensors file, or the shards its index names."""
    from safetensors.torch import load_file

    index = adapter_dir / INDEX_FILE
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = [WEIGHTS_FILE]
    tensors = {}
    for name in files:
        tensors.update(load_file(str(adapter_dir / name)))
    return tensors


def in_model_names(tensors: dict, adapter_name: str) -> dict:
    """The LoRA tensors under the PeftModel's names (`lora_A.weight` → `lora_A.<adapter>.weight`)."""
    renamed = {}
    for name, tensor in tensors.items():
        match = LORA_TENSOR.fullmatch(name)
        if match:
            renamed[f"{match['module']}.{adapter_name}.{match['parameter']}"] = tensor
        elif "lora_" in name:
            raise NeuronAdapterError(f"`{name}` is a LoRA tensor of no form PEFT loads (…lora_A/lora_B.weight/bias)")
    return renamed


def load_consolidated_adapter(peft_model, adapter_dir: Path, adapter_name: str = "default") -> int:
    """Put the consolidated adapter into the model's LoRA weights; returns how many tensors were loaded."""
    renamed = in_model_names(read_consolidated(adapter_dir), adapter_name)
    expected = {name for name, _ in peft_model.named_parameters()
                if LORA_TENSOR.fullmatch(name.replace(f".{adapter_name}.", ".", 1))}
    missing, unexpected = sorted(expected - renamed.keys()), sorted(renamed.keys() - expected)
    if missing or unexpected:
        raise NeuronAdapterError(
            f"the consolidated adapter in {adapter_dir} does not fit the model: "
            f"{len(missing)} LoRA weights get no tensor (e.g. {missing[:2]}), "
            f"{len(unexpected)} tensors have no weight (e.g. {unexpected[:2]})")
    peft_model.load_state_dict(renamed, strict=False)
    return len(renamed)
