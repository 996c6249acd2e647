"""The merge and the answers to prompts (seed 000's merge job, sample prompts, `tunespec generate`) place
the model over the devices the plan's `inference` section names, with its memory caps: decided by the
compiler, read by the runtime. On the CPU, a cap smaller than a tiny model puts part of it in the
offload folder, and the merge and the answers still come out right."""
import json
import textwrap
from pathlib import Path

import pytest
import torch

from tunespec.compiler.plan import build_plan
from tunespec.compiler.spec_loader import load_spec
from tunespec.runtime import model_loading
from tunespec.runtime.generate import BaseAndTuned
from tunespec.runtime.merge import finish_outputs
from tunespec.runtime.run_layout import ADAPTER, MERGED, SAMPLES
from tunespec.schema.host import Host

from conftest import REPO
from seed_models import save_tiny_model, smollm2_tokenizer

HOST = Host(cores=2, capability="avx2", native_bf16=False, memory_gib=16.0, cpu_model="2-core AVX2 x86")


def test_the_plan_places_the_merge_over_the_gpus_and_host_memory_of_the_job(repo_cwd):
    seed_000 = build_plan(load_spec(Path("specs/mixtral-8x7b-viggo-qlora-fsdp.yaml")), host=HOST)["inference"]
    # ml.p4d.24xlarge: 8 A100 40GB (39.4 GiB reported) and 1152 GiB of host memory.
    assert seed_000 == {"device_map": "auto", "max_memory": {**{str(gpu): "35GiB" for gpu in range(8)}, "cpu": "921GiB"},
                        "offload_folder": "offload", "dtype": "bf16"}
    seed_002 = build_plan(load_spec(Path("specs/falcon-40b-samsum-qlora-g5.yaml")), host=HOST)["inference"]
    assert seed_002["max_memory"] == {"0": "19GiB", "1": "19GiB", "2": "19GiB", "3": "19GiB", "cpu": "153GiB"}
    cpu = build_plan(load_spec(REPO / "cli" / "defaults" / "smollm2-viggo-lora.yaml"), host=HOST)["inference"]
    assert cpu == {"device_map": "auto", "max_memory": {"cpu": "12GiB"}, "offload_folder": "offload", "dtype": "fp32"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple:
    """A plan of a tiny local Llama with a trained-looking adapter in its run folder."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("placement")
    base = save_tiny_model(root / "tiny-llama", "llama", num_hidden_layers=4, num_key_value_heads=1,
                           intermediate_size=4096)  # layers big enough to split over the caps
    torch.manual_seed(1)
    adapted = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                             LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    run_dir = root / "run"
    adapted.save_pretrained(run_dir / ADAPTER)
    smollm2_tokenizer().save_pretrained(run_dir / ADAPTER)  # as the trainer leaves it beside the adapter
    (root / "spec.yaml").write_text(textwrap.dedent(f"""\
        apiVersion: tunespec/v1
        name: tiny-placement
        extends: {REPO / "cli" / "defaults" / "smollm2-viggo-lora.yaml"}
        model: {{source: {base}, offline: true}}
        method: {{type: lora, lora: {{r: 4, alpha: 8, target_modules: [q_proj, v_proj]}}}}
        outputs: {{merged_model: true, sample_prompts: ["A sentence about a game."]}}
        """))
    plan = build_plan(load_spec(root / "spec.yaml"), host=HOST)  # paths outside the cwd are written absolute
    return plan, run_dir, adapted.merge_and_unload()


def capped(plan: dict, cap: str) -> dict:
    """The plan with a host memory cap that holds only part of the tiny model."""
    return dict(plan, inference=dict(plan["inference"], max_memory={"cpu": cap}))


def test_answers_place_the_model_within_the_plan_s_caps(tiny_run):
    plan, run_dir, _ = tiny_run
    with BaseAndTuned(capped(plan, "7MiB"), run_dir) as models:
        placed = models.model.hf_device_map
        assert set(placed.values()) == {"cpu", "disk"}, placed
        assert placed["base_model.model.model.embed_tokens"] == "cpu" and placed["base_model.model.lm_head"] == "disk"
        prompt = ["A sentence about a game."]
        base, tuned = models.answers(prompt, max_new_tokens=4)
    assert not (run_dir / "offload").exists()  # the offloaded weights go with their model
    with BaseAndTuned(plan, run_dir) as models:
        assert {parameter.device.type for parameter in models.model.parameters()} == {"cpu"}  # all of it fits
        assert models.answers(prompt, max_new_tokens=4) == (base, tuned)  # placement changes where, not what


def test_the_merge_runs_with_part_of_the_model_offloaded(tiny_run):
    from transformers import AutoModelForCausalLM

    plan, run_dir, expected = tiny_run
    written = finish_outputs(capped(plan, "7MiB"), run_dir)
    assert written == {"merged": MERGED, "samples": SAMPLES}
    merged = AutoModelForCausalLM.from_pretrained(run_dir / MERGED)
    for name, weight in expected.state_dict().items():
        assert torch.allclose(merged.state_dict()[name], weight, atol=1e-6), name
    assert json.loads((run_dir / SAMPLES).read_text())[0]["prompt"] == "A sentence about a game."
    assert not (run_dir / "offload").exists()


def test_a_plan_placing_the_model_over_gpus_this_machine_lacks_is_one_model_error(tiny_run):
    plan, run_dir, _ = tiny_run
    over_gpus = dict(plan, inference=dict(plan["inference"], max_memory={"0": "35GiB", "1": "35GiB", "cpu": "12GiB"}))
    with pytest.raises(model_loading.ModelLoadError,
                       match=rf"over 2 GPUs \(inference.max_memory\); this machine has {torch.cuda.device_count()}"):
        model_loading.inference_placement(over_gpus, run_dir)
