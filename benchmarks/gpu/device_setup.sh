#!/usr/bin/env bash
# Set up the lent GPU machine for benchmarks/gpu/ (source it from the repository root there):
#
#   source benchmarks/gpu/device_setup.sh          # wheels, tunespec on PYTHONPATH, the Llama-3-8B-shaped model
#
# - Wheels from .whl/ (carried; see /work/shared/device/fetch-wheels.sh, plus pydantic, pydantic_core,
#   annotated-types, typing-inspection and gguf, which the image lacks) go to /tmp/site, once per machine.
# - tunespec installs as one package from three top-level folders (pyproject's package-dir), so a
#   symlink tree /tmp/pkg/tunespec/{cli,defaults,__init__.py,schema,compiler,runtime} stands in for
#   `pip install -e .`; `tunespec` below is `python3 -m tunespec.cli.main`.
# - The model: no hub there. Random bf16 weights of Llama-3-8B's config (.gpu/llama3-8b-skeleton, made
#   here by benchmarks/gpu/make_tokenizer.py with a byte-level BPE tokenizer trained on the ViGGO text)
#   are saved once to /tmp/tunespec-gpu/llama3-8b and loaded by the trainer like any local model.
# A warm machine keeps /tmp between calls, so a later call finds all of it in place.
set -e
ROOT=$PWD
if [ ! -f /tmp/site/.tunespec-wheels ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  touch /tmp/site/.tunespec-wheels
fi
rm -rf /tmp/pkg && mkdir -p /tmp/pkg/tunespec
for entry in "$ROOT"/tunespec/*; do ln -s "$entry" /tmp/pkg/tunespec/; done
for sub in schema compiler runtime; do ln -s "$ROOT/$sub" "/tmp/pkg/tunespec/$sub"; done
# PYTHONSAFEPATH: `python -m` must not put the cwd (the repo root, whose tunespec/ lacks the subpackages) first.
export PYTHONPATH=/tmp/pkg:/tmp/site PYTHONSAFEPATH=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export TUNESPEC_CACHE=/tmp/tunespec-gpu/cache HF_HUB_OFFLINE=1
tunespec() { python3 -m tunespec.cli.main "$@"; }
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
