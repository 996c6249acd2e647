"""`model.init: random`: pre-training from scratch as seed 001 does (`AutoModelForCausalLM.from_config`):
the source's config with fresh weights, in the plan and honoured by the trainer's model loading."""
import textwrap
from pathlib import Path

import pytest
import torch

from tunespec.compiler.errors import SpecError
from tunespec.compiler.plan import build_plan
from tunespec.compiler.spec_loader import load_spec
from tunespec.runtime import model_loading

from conftest import REPO
from seed_models import save_tiny_model

DEFAULT_SPEC = REPO / "cli" / "defaults" / "smollm2-viggo-lora.yaml"


def plan_for(root: Path, model: Path, init: str, method: str = "{type: full}") -> dict:
    (root / f"{init}.yaml").write_text(textwrap.dedent(f"""\
        apiVersion: tunespec/v1
        name: tiny-{init}
        extends: {DEFAULT_SPEC}
        model: {{source: {model}, offline: true, init: {init}}}
        method: {method}
        """))
    return build_plan(load_spec(root / f"{init}.yaml"))


def test_random_init_keeps_the_shape_and_draws_new_weights_from_the_plan_s_seed(tmp_path):
    from transformers import AutoModelForCausalLM

    folder = save_tiny_model(tmp_path / "tiny-llama", "llama", num_key_value_heads=1)
    saved = AutoModelForCausalLM.from_pretrained(folder).state_dict()
    random_plan = plan_for(tmp_path, folder, "random")
    assert random_plan["model"]["init"] == "random"
    fresh = model_loading.load_model(random_plan, str(folder))
    assert fresh.config.hidden_size == 16 and set(fresh.state_dict()) == set(saved)
    drawn = [name for name, weight in fresh.state_dict().items()
             if weight.std() > 0 and not torch.equal(weight, saved[name])]
    assert "model.embed_tokens.weight" in drawn and "model.layers.0.self_attn.q_proj.weight" in drawn
    again = model_loading.load_model(random_plan, str(folder))  # another rank, or a resumed run
    assert all(torch.equal(weight, again.state_dict()[name]) for name, weight in fresh.state_dict().items())
    pretrained = model_loading.load_model(plan_for(tmp_path, folder, "pretrained"), str(folder))
    assert all(torch.equal(weight, saved[name]) for name, weight in pretrained.state_dict().items())


def test_random_init_is_refused_where_nothing_would_train_it_or_the_loader_cannot_draw_it(tmp_path, repo_cwd):
    folder = save_tiny_model(tmp_path / "tiny-llama", "llama", num_key_value_heads=1)
    with pytest.raises(SpecError, match="frozen weights, which would stay random") as refused:
        plan_for(tmp_path, folder, "random", method="{type: lora}")
    assert refused.value.field_name() == "model.init"
    (tmp_path / "smp.yaml").write_text(textwrap.dedent(f"""\
        apiVersion: tunespec/v1
        name: smp-random
        extends: {REPO / "specs" / "mixtral-8x7b-sst2-smp-expert-parallel.yaml"}
        model: {{init: random}}
        """))
    assert build_plan(load_spec(tmp_path / "smp.yaml"))["model"]["init"] == "random"


def test_smp_rank_0_draws_the_random_weights_that_smp_gives_every_rank(tmp_path):
    """Seed 001 pre-trains from scratch under SMP: rank 0 draws the weights from the plan's seed (the other
    ranks start on meta or from the config and receive rank 0's through SMP's load_state_dict_from_rank0)."""
    import torch.distributed as dist

    from tunespec.runtime import smp

    folder = save_tiny_model(tmp_path / "tiny-llama", "llama", num_key_value_heads=1)
    plan = plan_for(tmp_path, folder, "random")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        drawn = smp._base_model(plan, str(folder), on_meta=False)
    finally:
        dist.destroy_process_group()
    reference = model_loading.load_model(plan, str(folder))
    assert all(torch.equal(weight.float(), reference.state_dict()[name].float())
               for name, weight in drawn.state_dict().items())
    saved = model_loading.AutoModelForCausalLM.from_pretrained(folder).state_dict()
    assert not torch.equal(drawn.state_dict()["model.embed_tokens.weight"].float(),
                           saved["model.embed_tokens.weight"].float())
