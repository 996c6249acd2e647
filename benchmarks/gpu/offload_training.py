"""Whether LoRA trains a model whose layers accelerate offloaded to host memory: issue 16's "placed over GPU
and CPU memory". tunespec refuses such a device_map plan (compiler/rules.py, device_map_weights_fit_share)
because on the CPU, with layers offloaded to disk, PEFT leaves their adapters on the meta device and the
first backward fails; this runs the same on the GPU machine, outside tunespec:

    python3 benchmarks/gpu/offload_training.py /tmp/tunespec-gpu/llama3-8b 8GiB

The model loads with device_map "auto" and max_memory {GPU 0: the cap, cpu: 100GiB}; LoRA on every linear
layer; 3 Trainer steps on random tokens. Prints the placement (modules per device) as one JSON line, then
the losses as another, or ends with the error's traceback.
"""
import json
import sys
import tempfile

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

from tunespec.runtime.metrics import placement

STEPS, BATCH, LENGTH = 3, 2, 512


class RandomTokens(torch.utils.data.Dataset):
    def __init__(self, vocab: int):
        self.vocab = vocab

    def __len__(self):
        return STEPS * BATCH

    def __getitem__(self, index):
        ids = torch.randint(0, self.vocab, (LENGTH,), generator=torch.Generator().manual_seed(index))
        return {"input_ids": ids, "labels": ids.clone()}


def main(model_path: str, gpu_cap: str) -> int:
    with tempfile.TemporaryDirectory(prefix="offload-training-") as scratch:
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.bfloat16, device_map="auto",
                                                     max_memory={0: gpu_cap, "cpu": "100GiB"},
                                                     offload_folder=f"{scratch}/offload")
        print(json.dumps({"placement": placement(model), "gpu_cap": gpu_cap}), flush=True)
        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear",
                                                 task_type="CAUSAL_LM"))
        args = TrainingArguments(output_dir=scratch, max_steps=STEPS, per_device_train_batch_size=BATCH, bf16=True,
                                 learning_rate=2e-4, logging_steps=1, save_strategy="no", report_to="none")
        trainer = Trainer(model=model, args=args, train_dataset=RandomTokens(model.config.vocab_size))
        trainer.train()
        losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
        print(json.dumps({"losses": losses, "peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:3]))
