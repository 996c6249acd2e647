"""The plan-time checks, grouped by concern, and the findings that report a spec's mistakes together.

A check is a rule (compiler/rules.py and the backends' own) with the plan sections it reads: it takes the
validated spec and the plan built so far, raises SpecError for a spec that cannot run and returns
warnings for one that runs badly. A check whose sections could not be built is skipped: the refusal that
stopped them is already found, and what the check would say follows from it or cannot be known.

`Findings` collects every refusal, of a check or of a plan section being built (an unknown
architecture, a missing data file, an instance the catalog lacks), one per field (problems at one field
are one mistake), and raises them together: the first error, with the rest as its `others`.
"""
from dataclasses import dataclass
from typing import Callable, Dict, List, Tuple

from ..schema import Spec
from . import (backend_local, backend_sagemaker, backend_slurm, rules, sagemaker_distribution, sagemaker_inputs,
               sagemaker_jobs, sagemaker_secrets)
from .errors import SpecError, raise_together, same_field
from .supports import backend_runs_plan


@dataclass(frozen=True)
class Check:
    rule: Callable[[Spec, dict], List[dict]]
    needs: Tuple[str, ...] = ()  # the plan sections the rule reads


def backend_refusal(backend_type: str, refuse: Callable[[dict, dict], object]) -> Callable[[Spec, dict], List[dict]]:
    """A backend's own refusal as a check, for specs on that backend. The backend's compile makes the same
    call and keeps what it returns; the check only collects the refusal with the others (the compile
    runs once every check has passed)."""
    def rule(spec: Spec, plan: dict) -> List[dict]:
        if spec.backend.type == backend_type:
            refuse(plan, spec.backend.model_dump())
        return []

    return rule


MODEL_AND_METHOD = [
    Check(rules.method_settings_match_type),
    Check(rules.experts_adapted_without_dropout, ("method",)),
    Check(rules.random_init_rules),
    Check(rules.lora_rank_fits_model, ("model", "method")),
    Check(rules.compile_fits_model, ("model", "method")),
]
DATA = [
    Check(rules.sequence_fits_model, ("model",)),
    Check(rules.evaluation_has_data),
    Check(rules.rows_fit_sequence, ("data",)),
]
HARDWARE_AND_PRECISION = [
    Check(rules.bitsandbytes_needs_cuda, ("devices",)),
    Check(rules.precision_fits_hardware, ("devices", "precision")),
    Check(rules.kernels_fit_hardware, ("devices",)),
    Check(rules.gpus_within_hardware),
]
DISTRIBUTION = [
    Check(rules.fsdp_rules, ("devices", "parallel", "model")),
    Check(rules.kbit_preparation_fits_sharding),
    Check(rules.smp_runs_on_sagemaker),
    Check(rules.smp_rules, ("parallel", "model")),
    Check(rules.smp_tensor_parallel_divides_heads, ("parallel", "model")),
    Check(rules.neuron_rules, ("devices", "model")),
    Check(rules.device_map_rules, ("devices",)),
    Check(rules.single_process_gpus, ("devices",)),
]
BACKEND = [
    Check(rules.neuron_sft_config_takes_the_trainer_arguments,
          ("devices", "parallel", "trainer", "batch", "precision", "data")),
    Check(rules.sagemaker_tags_allowed),
    # The backstop after the specific rules, which say more about the common cases.
    Check(backend_runs_plan, ("devices", "parallel", "precision")),
    Check(backend_refusal("sagemaker", sagemaker_distribution.distribution), ("devices", "parallel")),
    Check(backend_refusal("sagemaker", backend_sagemaker.training_image), ("parallel",)),
    Check(backend_refusal("sagemaker", backend_sagemaker.refuse_job_options)),
    Check(backend_refusal("sagemaker", sagemaker_jobs.refuse_reserved_tags)),
    Check(backend_refusal("sagemaker", sagemaker_inputs.refuse_local_folders), ("data", "model")),
    Check(backend_refusal("hyperpod-slurm", backend_slurm.refuse_unsafe_values)),
]
OUTPUTS_AND_SECRETS = [
    Check(rules.gated_model_needs_token, ("model",)),
    Check(backend_refusal("sagemaker", sagemaker_secrets.environment)),
    Check(backend_refusal("local", backend_local.refuse_run_dir_placeholders)),
]
GROUPS: Dict[str, List[Check]] = {
    "model and method": MODEL_AND_METHOD,
    "data": DATA,
    "hardware and precision": HARDWARE_AND_PRECISION,
    "distribution": DISTRIBUTION,
    "backend": BACKEND,
    "outputs and secrets": OUTPUTS_AND_SECRETS,
}


class Findings:
    """A spec's refusals and warnings, collected while its plan is built and checked."""

    def __init__(self) -> None:
        self.refusals: List[SpecError] = []
        self.warnings: List[dict] = []

    def refuse(self, error: SpecError) -> None:
        """Record an error and its others, each unless an earlier one is about the same field."""
        for each in [error] + error.others:
            if not any(same_field(each.path, seen.path) for seen in self.refusals):
                self.refusals.append(each)
        error.others = []

    def build(self, plan: dict, needs: Tuple[str, ...], step: Callable[[], dict]) -> None:
        """Add the sections `step` builds to the plan, when the sections it `needs` were built; a refusal
        is recorded and the plan goes on with the sections independent of it."""
        if not all(section in plan for section in needs):
            return
        try:
            plan.update(step())
        except SpecError as error:
            self.refuse(error)

    def check(self, spec: Spec, plan: dict) -> None:
        """Walk every group's checks whose sections were built."""
        for checks in GROUPS.values():
            for check in checks:
                if all(section in plan for section in check.needs):
                    try:
                        self.warnings.extend(check.rule(spec, plan))
                    except SpecError as error:
                        self.refuse(error)

    def raise_refusals(self) -> None:
        """Raise every refusal found, the first with the others."""
        raise_together(self.refusals)
