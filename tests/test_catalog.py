"""The model and hardware catalogs: exact parameter counts, LoRA arithmetic, lookups that help."""
import json
import pathlib

import pytest

from tunespec.compiler import architecture, catalog, instances, lora_targets, parameter_counts
from tunespec.compiler.errors import SpecError

HERE = pathlib.Path(".")


def arch(name):
    return architecture.resolve_architecture(name, None, HERE)


@pytest.mark.parametrize(
    "source, total",
    [
        ("meta-llama/Meta-Llama-3-8B", 8_030_261_248),
        ("meta-llama/Llama-3.1-8B-Instruct", 8_030_261_248),
        ("mistralai/Mistral-7B-v0.1", 7_241_732_096),
        ("mistralai/Mixtral-8x7B-Instruct-v0.1", 46_702_792_704),
        ("meta-llama/Llama-2-7b-hf", 6_738_415_616),
        ("meta-llama/Llama-2-13b-hf", 13_015_864_320),
        ("meta-llama/Llama-2-70b-hf", 68_976_648_192),
        ("meta-llama/Meta-Llama-3-70B", 70_553_706_496),
        ("Qwen/Qwen2.5-0.5B", 494_032_768),
        ("Qwen/Qwen2.5-7B-Instruct", 7_615_616_512),
        ("Qwen/Qwen2.5-72B", 72_706_203_648),
        ("HuggingFaceTB/SmolLM2-135M", 134_515_008),
        ("meta-llama/Llama-3.2-1B", 1_235_814_400),
        ("tiiuae/falcon-7b", 6_921_720_704),
        # Tied lm_head: the Falcon-40B seed's own printout counts the 532,676,608-parameter embedding once.
        ("tiiuae/falcon-40b", 41_303_293_952),
    ],
)
def test_exact_totals(source, total):
    assert parameter_counts.count_parameters(arch(source))["total"] == total


def test_mixtral_active_parameters():
    counts = parameter_counts.count_parameters(arch("mixtral-8x7b"))
    assert counts["active_per_token"] == 12_879_925_248  # "about 12.9B active"
    assert counts["embedding"] == 32000 * 4096


def test_falcon_40b_seed_trainable_count():
    method = {"type": "qlora", "lora": {"r": 8, "target_modules": [
        "query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"]}}
    assert parameter_counts.count_trainable(arch("falcon-40b"), method) == 55_541_760


@pytest.mark.parametrize(
    "name, method, trainable",
    [
        ("llama-3-8b", {"type": "lora", "lora": {"r": 16, "target_modules": "all-linear"}}, 41_943_040),
        ("qwen2.5-7b", {"type": "lora", "lora": {"r": 16, "target_modules": "all-linear"}}, 40_370_176),
        ("llama-2-7b", {"type": "lora", "lora": {"r": 8, "target_modules": ["q_proj", "v_proj"]}}, 4_194_304),
        # DoRA adds one magnitude per output feature of every adapted module.
        ("llama-2-7b", {"type": "dora", "lora": {"r": 8, "target_modules": ["q_proj", "v_proj"]}},
         4_194_304 + 32 * 2 * 4096),
        ("llama-2-7b", {"type": "full", "lora": None}, 6_738_415_616),
        # Mixtral's all-linear is attention and the fused experts (PEFT's ParamWrapper adapters: r*E*(in+out)
        # per 3-D parameter), as it was when the experts were linear modules; the router stays frozen ...
        ("mixtral-8x7b", {"type": "lora", "lora": {"r": 16, "target_modules": "all-linear"}},
         32 * 16 * (2 * (4096 + 4096) + 2 * (4096 + 1024)) + 32 * 16 * 8 * ((4096 + 2 * 14336) + (14336 + 4096))),
        # ... and include_experts: false leaves the experts out (the seed-000 plan of transformers 5 days).
        ("mixtral-8x7b", {"type": "lora", "lora": {"r": 16, "target_modules": "all-linear", "include_experts": False}},
         32 * 16 * (2 * (4096 + 4096) + 2 * (4096 + 1024))),
        # a list names the experts it adapts
        ("mixtral-8x7b", {"type": "lora", "lora": {"r": 16, "target_modules": ["q_proj", "experts.down_proj"]}},
         32 * 16 * (4096 + 4096) + 32 * 16 * 8 * (14336 + 4096)),
        # DoRA cannot adapt fused parameters: all-linear then means attention only
        ("mixtral-8x7b", {"type": "dora", "lora": {"r": 16, "target_modules": ["q_proj"]}},
         32 * (16 * (4096 + 4096) + 4096)),
        # Qwen2 has q/k/v biases: `bias: all` unfreezes them.
        ("qwen2.5-0.5b", {"type": "lora", "lora": {"r": 8, "target_modules": ["q_proj"], "bias": "all"}},
         24 * (8 * (896 + 896) + (896 + 2 * 128))),
    ],
)
def test_trainable_counts(name, method, trainable):
    assert parameter_counts.count_trainable(arch(name), method) == trainable


def test_all_linear_excludes_lm_head_but_lm_head_can_be_named():
    llama = arch("llama-3-8b")
    assert "lm_head" not in lora_targets.resolve_target_modules(llama, "all-linear")
    assert lora_targets.resolve_target_modules(llama, ["model.layers.0.self_attn.q_proj", "lm_head"]) == ["q_proj", "lm_head"]


def test_unknown_target_module_suggests():
    with pytest.raises(SpecError) as err:
        lora_targets.resolve_target_modules(arch("falcon-40b"), ["query_key_values"])
    assert err.value.path == ("method", "lora", "target_modules")
    assert "query_key_value" in err.value.hint


def test_mixtral_transformers4_expert_names_point_to_the_fused_experts():
    with pytest.raises(SpecError) as err:
        lora_targets.resolve_target_modules(arch("mixtral-8x7b"), ["q_proj", "w1"])
    assert "`experts`" in err.value.hint and "w1 and w3 in experts.gate_up_proj" in err.value.hint


def test_trainable_counts_by_module_group():
    groups = parameter_counts.trainable_by_group(arch("mixtral-8x7b"), {"type": "qlora", "lora": {"r": 16}})
    assert set(groups) == {"attention", "experts"}
    assert groups["attention"] == 13_631_488 and groups["experts"] == 209_715_200


def test_include_experts_false_conflicts_with_named_experts():
    lora = {"target_modules": ["q_proj", "experts"], "include_experts": False}
    with pytest.raises(SpecError) as err:
        lora_targets.resolve_target_parameters(arch("mixtral-8x7b"), lora, "lora")
    assert err.value.path == ("method", "lora", "include_experts")


def test_dora_on_experts_refused():
    method = {"type": "dora", "lora": {"r": 8, "target_modules": "all-linear", "include_experts": True}}
    with pytest.raises(SpecError) as err:
        parameter_counts.count_trainable(arch("mixtral-8x7b"), method)
    assert err.value.path == ("method", "lora", "include_experts")


def test_unknown_architecture_suggests():
    with pytest.raises(SpecError) as err:
        architecture.resolve_architecture("x", "lama-3-8b", HERE)
    assert err.value.path == ("model", "architecture")
    assert "llama-3-8b" in err.value.hint


def test_unknown_hub_id_suggests():
    with pytest.raises(SpecError) as err:
        architecture.resolve_architecture("mistralai/Mixtral-8x7B-v0.2", None, HERE)
    assert err.value.path == ("model", "source")
    assert "mistralai/Mixtral-8x7B-v0.1" in err.value.hint


def test_architecture_by_name_wins_over_source():
    assert arch("llama-3-8b")["name"] == "llama-3-8b"
    resolved = architecture.resolve_architecture("s3://bucket/weights", "qwen2.5-7b", HERE)
    assert resolved["name"] == "qwen2.5-7b" and resolved["qkv_bias"] is True


def test_s3_source_without_architecture_refused():
    with pytest.raises(SpecError) as err:
        architecture.resolve_architecture("s3://bucket/weights", None, HERE)
    assert err.value.path == ("model", "architecture")


def test_local_config_json(tmp_path):
    # Falcon-40B's config.json as published (old key names): same count as the catalog entry.
    config = {"model_type": "falcon", "hidden_size": 8192, "n_layer": 60, "n_head": 128, "n_head_kv": 8,
              "new_decoder_architecture": True, "parallel_attn": True, "bias": False, "vocab_size": 65024}
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(json.dumps(config))
    local = architecture.resolve_architecture("./model", None, tmp_path)
    assert parameter_counts.count_parameters(local)["total"] == parameter_counts.count_parameters(arch("falcon-40b"))["total"]
    by_path = architecture.resolve_architecture("s3://x/y", "model/config.json", tmp_path)
    assert by_path["num_key_value_heads"] == 8


def test_local_llama_config_matches_catalog(tmp_path):
    config = {"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
              "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152, "tie_word_embeddings": True}
    (tmp_path / "config.json").write_text(json.dumps(config))
    local = architecture.resolve_architecture(".", None, tmp_path)
    assert parameter_counts.count_parameters(local)["total"] == 134_515_008


def test_unsupported_model_type(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "vocab_size": 50257}))
    with pytest.raises(SpecError):
        architecture.resolve_architecture(".", None, tmp_path)


def test_every_catalog_entry_resolves_and_counts():
    for name in catalog.load_models():
        counts = parameter_counts.count_parameters(arch(name))
        assert counts["total"] >= counts["active_per_token"] > counts["embedding"] > 0


def test_instances():
    p4d = instances.lookup_instance("ml.p4d.24xlarge")
    assert (p4d["accelerators_per_instance"], p4d["kind"], p4d["peak_bf16_tflops"]) == (8, "cuda", 312)
    assert p4d["memory_gib"] < 40 and p4d["price_date"]
    assert instances.lookup_instance("p4d.24xlarge")["market"] == "ec2"
    assert instances.lookup_instance("ml.g5.12xlarge")["accelerators_per_instance"] == 4
    assert instances.lookup_instance("ml.p3.2xlarge")["supports_bf16"] is False
    trn = instances.lookup_instance("ml.trn1.32xlarge")
    assert (trn["kind"], trn["accelerators_per_instance"], trn["neuron_cores"], trn["memory_gib"]) == (
        "trainium", 16, 2, 32)
    assert instances.lookup_instance("h100-80gb")["market"] == "local"


def test_p4d_8xlarge_does_not_exist():
    assert "ml.p4d.8xlarge" not in instances.instance_names()
    with pytest.raises(SpecError) as err:
        instances.lookup_instance("ml.p4d.8xlarge", path=("backend", "instance_type"))
    assert err.value.path == ("backend", "instance_type")
    assert "ml.p4d.24xlarge" in err.value.hint
