#!/usr/bin/env bash
# Set up the lent GPU machine for benchmarks/gpu/ (source it from the repository root there):
#
#   source benchmarks/gpu/device_setup.sh          # wheels, tunespec on PYTHONPATH, the Llama-3-8B-shaped model
#
# - Wheels from .whl/ (carried; see /work/shared/device/fetch-wheels.sh, plus pydantic, pydantic_core,
#   annotated-types, typing-inspection and gguf, which the image lacks) go to /tmp/site, once per machine.
# - tunespec itself comes as its wheel in .whl/, built here before the call from the commit to measure
#   (`python -m pip wheel --no-deps --no-build-isolation -w .whl .`), installed to /tmp/site-tunespec on
#   every call (the code changes between calls, the other wheels do not); `tunespec` below is
#   `python3 -m tunespec`. The benchmark scripts run from this tree.
# - The model: no hub there. Random bf16 weights of Llama-3-8B's config (.gpu/llama3-8b-skeleton, made
#   here by benchmarks/gpu/make_tokenizer.py with a byte-level BPE tokenizer trained on the ViGGO text)
#   are saved once to /tmp/tunespec-gpu/llama3-8b and loaded by the trainer like any local model.
# A warm machine keeps /tmp between calls, so a later call finds all of it in place.
set -e
ROOT=$PWD
if [ ! -f /tmp/site/.tunespec-wheels ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    $(ls .whl/*.whl | grep -v '/tunespec-')
  touch /tmp/site/.tunespec-wheels
fi
rm -rf /tmp/site-tunespec
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site-tunespec .whl/tunespec-*.whl
export PYTHONPATH=/tmp/site-tunespec:/tmp/site PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export TUNESPEC_CACHE=/tmp/tunespec-gpu/cache HF_HUB_OFFLINE=1
tunespec() { python3 -m tunespec "$@"; }
MODEL=/tmp/tunespec-gpu/llama3-8b
if [ ! -f "$MODEL/.complete" ]; then
  mkdir -p "$MODEL"
  python3 - "$ROOT/.gpu/llama3-8b-skeleton" "$MODEL" <<'PY'
import shutil, sys, time
from pathlib import Path
import torch
from transformers import AutoConfig, AutoModelForCausalLM
skeleton, target = Path(sys.argv[1]), Path(sys.argv[2])
started = time.time()
torch.manual_seed(0)
config = AutoConfig.from_pretrained(skeleton)
with torch.device("cuda"):
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
model.save_pretrained(target, max_shard_size="5GB")
for name in ("tokenizer.json", "tokenizer_config.json"):
    shutil.copy(skeleton / name, target / name)
params = sum(p.numel() for p in model.parameters())
print(f"built {target}: {params / 1e9:.2f} B parameters, random bf16 weights, {time.time() - started:.0f} s")
PY
  touch "$MODEL/.complete"
fi
set +e
