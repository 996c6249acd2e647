"""Training placement (issue 16): metrics.json's `placement`, where from_pretrained's device_map put the
model, counted from a real placement (a tiny random Llama whose host-memory cap holds only part of it, the
rest offloaded to disk); a device_map plan places the layers over the plan's GPUs, not whatever is visible."""
import pytest
from transformers import AutoConfig, AutoModelForCausalLM

from tunespec.runtime.metrics import build_metrics, placement
from tunespec.runtime.model_loading import ModelLoadError, load_model

RUN = dict(log_history=[{"step": 1, "loss": 2.5}], global_step=1, max_steps=1, resumed_from_step=0,
           tokens_per_s=None, train_tokens=0, duration_s=1.0, outputs={})


def _tiny_llama(folder):
    config = AutoConfig.for_model("llama", hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                                  num_attention_heads=4, vocab_size=1000)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(folder)
    return sum(p.numel() * p.element_size() for p in model.parameters())


def test_a_model_placed_over_host_memory_and_disk_reports_the_modules_on_each(tmp_path):
    size = _tiny_llama(tmp_path / "model")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "model", device_map="auto",
                                                 max_memory={"cpu": size // 2}, offload_folder=tmp_path / "offload")
    report = placement(model)
    assert set(report) == {"cpu", "disk"}
    assert sum(report.values()) == len(model.hf_device_map)
    assert model.hf_device_map["model.embed_tokens"] == "cpu" and model.hf_device_map["lm_head"] == "disk"
    assert build_metrics(**RUN, placement=report)["placement"] == report


def test_a_model_loaded_without_a_device_map_reports_no_placement(tmp_path):
    _tiny_llama(tmp_path / "model")
    report = placement(AutoModelForCausalLM.from_pretrained(tmp_path / "model"))
    assert report is None
    assert "placement" not in build_metrics(**RUN, placement=report)


def test_a_device_map_plan_over_more_gpus_than_the_machine_has_is_one_clear_error():
    plan = {"model": {"source": "unused", "offline": True}, "method": {"type": "lora"},
            "parallel": {"strategy": "device_map", "pipeline_stages": 2, "settings": {"max_memory_fraction": 0.9}}}
    with pytest.raises(ModelLoadError, match=r"over 2 GPUs \(parallel.pipeline_stages\); this machine has 0"):
        load_model(plan, "unused")
