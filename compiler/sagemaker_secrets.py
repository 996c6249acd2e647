"""A SageMaker job's Environment and its secrets: Secrets Manager ARNs, raw values only when named.

SageMaker shows a job's Environment and HyperParameters to anyone allowed DescribeTrainingJob. A secret
given as `secrets_manager_arn` travels as its ARN (`TUNESPEC_SECRET_<VARIABLE>_ARN`) and the container
entry reads the value in the secret's own region. A secret given as `env:` exists only on the machine
that runs apply, so apply would have to copy its value into the request: refused unless the spec names
it in `backend.secrets_in_request`.
"""
from typing import Dict, List, Tuple

from ..schema.contract import SECRET_VARIABLES, secret_arn_variable
from . import secret_scan
from .errors import SpecError

OPT_IN_FIELD = ("backend", "secrets_in_request")
ENVIRONMENT_FIELD = ("backend", "environment")


def _references(plan: dict) -> Dict[str, Tuple[dict, tuple]]:
    """Every secret reference of the plan: name → (reference, the spec field that holds it)."""
    references = {name: (reference, ("secrets", name)) for name, reference in (plan.get("secrets") or {}).items()}
    wandb = (plan.get("tracking") or {}).get("wandb")
    if wandb:
        references["wandb_api_key"] = (wandb["api_key"], ("tracking", "wandb", "api_key"))
    return references


def environment(plan: dict, backend: dict) -> Tuple[Dict[str, str], Dict[str, str], List[dict]]:
    """The job's Environment (references only), the variables apply copies in, and warnings."""
    variables = dict(backend.get("environment") or {})
    _refuse_literal_secrets(variables)
    references = _references(plan)
    named = backend.get("secrets_in_request") or []
    for index, name in enumerate(named):
        if not (references.get(name, ({}, ()))[0]).get("env"):
            raise SpecError(f"`{name}` is not a secret given by `env:`, so there is no value to put in the request",
                            OPT_IN_FIELD + (index,),
                            hint="list only secrets written as `{env: VARIABLE}`; Secrets Manager ARNs need no opt-in")
    apply_environment, warnings = {}, []
    for name, (reference, field) in sorted(references.items()):
        target = SECRET_VARIABLES.get(name, name.upper())
        if target in variables:
            raise SpecError(f"`{target}` is set in backend.environment and is also the secret `{name}`",
                            ("backend", "environment", target), hint="keep only the `secrets:` reference")
        if reference.get("secrets_manager_arn"):
            variables[secret_arn_variable(target)] = reference["secrets_manager_arn"]
        elif name in named:
            apply_environment[target] = reference["env"]
            warnings.append({"code": "sagemaker-secret-in-request", "message": (
                f"secret `{name}` comes from ${reference['env']} on the machine that runs apply and is sent in "
                f"the job's Environment as ${target} (backend.secrets_in_request): anyone allowed "
                "DescribeTrainingJob can read it there")})
        else:
            raise SpecError(
                f"secret `{name}` comes from ${reference['env']} on this machine: a SageMaker job would get its "
                "value in the request's Environment, which anyone allowed DescribeTrainingJob can read",
                field,
                hint="store it in AWS Secrets Manager and give `secrets_manager_arn: arn:aws:secretsmanager:...` "
                     "(read in the container; the job role needs secretsmanager:GetSecretValue), or accept the "
                     f"exposure by naming it: `backend.secrets_in_request: [{name}]`")
    return dict(sorted(variables.items())), apply_environment, warnings


def _refuse_literal_secrets(variables: Dict[str, str]) -> None:
    finding = next(secret_scan.scan(variables, ENVIRONMENT_FIELD, (ENVIRONMENT_FIELD,), ()), None)
    if finding is None:
        return
    key = finding.key if finding.key is not None else finding.path[-1]
    raise SpecError(
        f"`{secret_scan.mask(str(key))}` would put {finding.what} into the training job's Environment",
        ENVIRONMENT_FIELD + (key,),
        hint="SageMaker shows a job's Environment and HyperParameters to anyone allowed DescribeTrainingJob, "
             "and the plan folder would hold it too (seed 000 passes hf_token as a hyperparameter; tunespec "
             "refuses that). Reference it instead: `secrets: {hf_token: {secrets_manager_arn: arn:...}}` "
             "(read in the container at run time)")
