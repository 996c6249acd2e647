"""Validated spec → plan: plain data that every renderer and backend reads, and nothing else does."""
from pathlib import Path
from typing import Optional, Tuple

from ..schema.contract import NEURON_TRAINER_MODULE, TRAINER_MODULE, VERSION, digest, model_source_kind
from ..schema.host import Host, detect_host
from ..schema.method import LoraSpec, QuantizationSpec
from . import architecture, attention, budget, data_sources, instances, lora_targets, parameter_counts, rules, trainer_speed
from .checks import Findings
from .errors import SpecError, all_of
from .inference_placement import inference_section
from .layout import LayoutChoices, batch, devices_of_backend, place
from .spec_loader import LoadedSpec

PLAN_FORMAT = "tunespec-plan/v1"


def _model_section(loaded: LoadedSpec, cwd: Path) -> dict:
    spec = loaded.spec.model
    base_dir = loaded.path.parent
    arch = architecture.resolve_architecture(spec.source, spec.architecture, base_dir)
    kind = model_source_kind(spec.source)
    source = data_sources.resolve_path(spec.source, base_dir, cwd) if kind in ("local", "gguf") else spec.source
    return {
        "source": source,
        "source_kind": kind,
        "revision": spec.revision,
        "init": spec.init,
        "trust_remote_code": spec.trust_remote_code,
        "offline": spec.offline,
        "architecture": arch,
    }


def _method_section(loaded: LoadedSpec, arch: dict) -> dict:
    method = loaded.spec.method
    lora = None
    if method.lora is not None or method.type != "full":
        spec_lora = method.lora or LoraSpec()
        target_parameters, target_modules = all_of(
            lambda: lora_targets.resolve_target_parameters(arch, spec_lora.model_dump(), method.type),
            lambda: lora_targets.resolve_target_modules(arch, spec_lora.target_modules))
        lora = {
            "r": spec_lora.r,
            "alpha": spec_lora.alpha,
            "dropout": rules.lora_dropout(spec_lora.dropout, target_parameters),
            "target_modules": target_modules,
            "target_parameters": target_parameters,
            "include_experts": bool(target_parameters),
            "bias": spec_lora.bias,
            "use_dora": method.type == "dora",
        }
    quant = None
    if method.type == "qlora":
        quant = (method.quantization or QuantizationSpec()).model_dump()
    return {"type": method.type, "lora": lora, "quantization": quant}


def _data_section(loaded: LoadedSpec, cwd: Path) -> dict:
    data = loaded.spec.data
    base_dir = loaded.path.parent
    # The templates first: reading the files' rows formats them.
    data_sources.validate_templates(data)
    train, evaluation = all_of(
        lambda: data_sources.describe_source(data.train, ("data", "train"), data, base_dir, cwd),
        lambda: data_sources.describe_source(data.eval, ("data", "eval"), data, base_dir, cwd) if data.eval else None)
    rows = data.num_examples or (train.get("stats") or {}).get("rows")
    return {
        "train": train,
        "eval": evaluation,
        "eval_fraction": data.eval_fraction,
        "format": data.format.model_dump(),
        "max_seq_length": data.max_seq_length,
        "packing": data.packing,
        "completion_only_loss": data.completion_only_loss and data.format.type != "text",
        "num_examples": rows,
        "tokens_per_example": data_sources.tokens_per_example(data, train),
    }


def _trainer_section(loaded: LoadedSpec, data: dict, attn_implementation: str, row_tokens: Optional[int]) -> dict:
    """The trainer's own settings; the layout's batch and precision and the data's packing join them as the
    trainer names them in schema/trainer_arguments.py."""
    t = loaded.spec.training
    tracking = loaded.spec.tracking
    report_to = [name for name, on in (("tensorboard", tracking.tensorboard), ("wandb", tracking.wandb),
                                       ("mlflow", tracking.mlflow)) if on]
    has_eval = data["eval"] is not None or data["eval_fraction"] is not None
    trainer = {
        "num_train_epochs": t.epochs if t.epochs else 1.0,
        "max_steps": t.max_steps or -1,
        "learning_rate": t.learning_rate,
        "lr_scheduler_type": t.lr_scheduler,
        "warmup_ratio": t.warmup_ratio,
        "weight_decay": t.weight_decay,
        "max_grad_norm": t.max_grad_norm,
        "optim": t.optimizer,
        "adam_beta1": t.adam_beta1,
        "adam_beta2": t.adam_beta2,
        "tf32": t.tf32,
        "gradient_checkpointing": t.gradient_checkpointing,
        "use_liger_kernel": t.liger_kernels,
        "torch_compile": t.torch_compile,
        "seed": t.seed,
        "save_strategy": "steps" if t.checkpoint_every_steps else "epoch",
        "save_steps": t.checkpoint_every_steps,
        "save_total_limit": t.checkpoints_to_keep,
        "eval_strategy": ("steps" if t.eval_every_steps else "epoch") if has_eval else "no",
        "eval_steps": t.eval_every_steps,
        "logging_steps": t.logging_every_steps,
        "report_to": report_to,
        "pad_to_multiple_of": attention.flex_pad_to_multiple_of(attn_implementation, data, row_tokens),
        "fsdp": "",
        "fsdp_config": None,
    }
    dist = loaded.spec.distribution
    if dist.strategy == "fsdp":
        words = [dist.sharding] + (["auto_wrap"] if dist.auto_wrap else []) + (["offload"] if dist.offload_params else [])
        trainer["fsdp"] = " ".join(words)
        trainer["fsdp_config"] = {
            "backward_prefetch": dist.backward_prefetch if dist.backward_prefetch != "none" else None,
            "forward_prefetch": dist.forward_prefetch,
            "use_orig_params": dist.use_orig_params,
            "cpu_ram_efficient_loading": dist.cpu_ram_efficient_loading,
            "activation_checkpointing": False,
        }
    return trainer


def _cpus_per_node(loaded: LoadedSpec, devices: dict, host: Host) -> Optional[int]:
    """CPUs of a node the trainer runs on: this machine's for the local backend, else the catalog's."""
    if loaded.spec.backend.type == "local":
        return host.cores
    return instances.lookup_instance(devices["hardware"], ("backend",))["vcpus"] if devices.get("hardware") else None


def _launch_section(parallel: dict, devices: dict) -> dict:
    if parallel["strategy"] == "neuron":
        launcher = "neuron"
    elif parallel["processes_per_node"] > 1 or devices["nodes"] > 1 or parallel["strategy"] == "fsdp":
        # FSDP needs a process group even over one process (the Trainer refuses it otherwise).
        launcher = "torchrun"
    else:
        launcher = "python"
    return {"launcher": launcher, "nnodes": devices["nodes"], "processes_per_node": parallel["processes_per_node"],
            "module": NEURON_TRAINER_MODULE if launcher == "neuron" else TRAINER_MODULE}


def _compile_backend(loaded: LoadedSpec, plan: dict) -> dict:
    backend = loaded.spec.backend
    if backend.type == "sagemaker":
        from .backend_sagemaker import compile_sagemaker

        return compile_sagemaker(plan, backend.model_dump())
    if backend.type == "hyperpod-slurm":
        from .backend_slurm import compile_slurm

        return compile_slurm(plan, backend.model_dump())
    from .backend_local import compile_local

    return compile_local(plan, backend.model_dump())


def build_plan(loaded: LoadedSpec, cwd: Optional[Path] = None, enforce_budget: bool = True,
               host: Optional[Host] = None, accept_risks: Tuple[str, ...] = ()) -> dict:
    """Compile a loaded spec into the plan. Raises SpecError (with its position) for specs that cannot run.

    `cwd` and `host` are where the plan is made: local paths are written relative to `cwd`, and a
    local CPU plan is made for `host` (default: this machine).

    `enforce_budget=False` returns a plan over its budget (`diff` shows by how much) instead of refusing it;
    `accept_risks` adds to the spec's own `accept_risks` (`probe` and `plan --tune` start from plans
    that may not fit)."""
    cwd = cwd or Path.cwd()
    try:
        plan = _build(loaded, cwd, host or detect_host())
        rules.check_estimates(loaded.spec, plan, tuple(loaded.spec.accept_risks) + accept_risks)
        over_budget = budget.refusal(plan["estimates"].get("budget")) if enforce_budget else None
        if over_budget:
            raise over_budget
        return plan
    except SpecError as error:
        raise loaded.locate(error) from None


def _located(loaded: LoadedSpec, warning: dict) -> dict:
    """A warning about a field, with the field's name and its file:line:column in the spec."""
    if "path" not in warning:
        return warning
    where = loaded.locate(SpecError(warning["message"], warning.pop("path")))
    return dict(warning, field=where.field_name(),
                location=f"{where.file}:{where.line}:{where.column}" if where.line is not None else where.file)


def _build(loaded: LoadedSpec, cwd: Path, host: Host) -> dict:
    spec = loaded.spec
    # The budget and the accepted risks guard the plan but are not part of the run: changing them keeps
    # the spec hash, so job names and run folders (which the hash names) stay the same.
    spec_json = spec.model_dump(mode="json", exclude={"extends", "budget", "accept_risks"})
    plan: dict = {
        "format": PLAN_FORMAT,
        "tunespec_version": VERSION,
        "spec": {"name": spec.name, "description": spec.description, "hash": digest(spec_json)},
        "tracking": spec.tracking.model_dump(),
        "outputs": spec.outputs.model_dump(),
        "secrets": spec.secrets.model_dump(exclude_none=True),
    }
    # Each section is built from the sections it needs; a refused one leaves out what depends on it, and
    # the rest is built and checked, so that a spec's independent mistakes are reported together.
    findings = Findings()
    choices = LayoutChoices.of_spec(spec)
    findings.build(plan, (), lambda: {"model": _model_section(loaded, cwd)})
    findings.build(plan, ("model",), lambda: {"method": _method_section(loaded, plan["model"]["architecture"])})
    findings.build(plan, ("model", "method"), lambda: {"model": dict(plan["model"], parameters=_parameters(plan))})
    findings.build(plan, (), lambda: {"data": _data_section(loaded, cwd)})
    findings.build(plan, (), lambda: {"devices": devices_of_backend(spec, host)})
    findings.build(plan, ("devices",), lambda: place(plan["devices"], choices))
    findings.build(plan, ("parallel", "data"), lambda: {"batch": batch(choices, plan["parallel"], plan["data"])})
    findings.build(plan, ("model", "data", "devices", "parallel", "batch"), lambda: _attention_and_trainer(loaded, plan, host))
    findings.build(plan, ("devices", "parallel"), lambda: {"launch": _launch_section(plan["parallel"], plan["devices"])})
    findings.build(plan, ("method", "precision", "launch"), lambda: {"method": trainer_speed.with_adapter_input_cast(
        plan["method"], plan["precision"], plan["launch"])})
    findings.build(plan, ("devices", "precision"), lambda: {"inference": inference_section(
        plan["devices"], plan["precision"]["resolved"], spec.backend.type, host)})
    findings.check(spec, plan)
    findings.raise_refusals()
    # The backend compiles a plan the checks accepted.
    plan["backend"] = _compile_backend(loaded, plan)
    warnings = findings.warnings + plan["backend"].pop("warnings", [])
    from .estimate import estimate

    plan["estimates"] = estimate(plan)
    if spec.budget is not None:
        plan["estimates"]["budget"] = budget.usage(plan, spec.budget.model_dump())
    plan["warnings"] = sorted([_located(loaded, w) for w in warnings] + plan["estimates"].pop("warnings", []),
                              key=lambda w: (w["code"], w["message"]))
    return plan


def _attention_and_trainer(loaded: LoadedSpec, plan: dict, host: Host) -> dict:
    """The model section with the attention kernel that runs (and why) for the devices and the data, the
    packed rows for that kernel (data.packed_row_tokens), and the trainer section, which pads for them."""
    spec = loaded.spec
    kernel, reason = attention.choose_attention(spec.model.attn_implementation, spec.backend.type,
                                                plan["devices"], plan["data"])
    row_tokens = attention.packed_row_tokens(kernel, plan["data"], plan["batch"]["micro_batch_size"])
    trainer = {**_trainer_section(loaded, plan["data"], kernel, row_tokens),
               **trainer_speed.trainer_speed_settings(plan["devices"], plan["parallel"]["processes_per_node"],
                                                      _cpus_per_node(loaded, plan["devices"], host))}
    return {"model": dict(plan["model"], attn_implementation=kernel, attn_reason=reason), "trainer": trainer,
            "data": dict(plan["data"], packed_row_tokens=row_tokens)}


def _parameters(plan: dict) -> dict:
    arch = plan["model"]["architecture"]
    return {**parameter_counts.count_parameters(arch),
            "trainable": parameter_counts.count_trainable(arch, plan["method"]),
            "trainable_by_group": parameter_counts.trainable_by_group(arch, plan["method"])}
