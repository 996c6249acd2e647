"""Secrets written into a spec are refused at load time, located, and never repeated in the message."""
from . import secret_scan
from .errors import SpecError
from .loader import LoadedYaml

SECRET_REF_KEYS = ("env", "secrets_manager_arn")  # the keys of a reference, not a secret
# Fields that take a secret reference, and the environment variable the hint suggests.
SECRET_REF_FIELDS = {("tracking", "wandb", "api_key"): "WANDB_API_KEY", ("secrets", "hf_token"): "HF_TOKEN"}
# Mappings a backend passes on as they are: random text there is refused as a likely secret.
PASSED_ON = (("backend", "environment"), ("backend", "tags"))


def refuse_inline_secrets(data: dict, loaded: LoadedYaml) -> None:
    """Refuse secrets written into the spec: a plan, a log or a hyperparameter would carry them.

    The message never holds the secret: a secret used as a key is reported at its mapping, with the
    key's position."""
    findings = secret_scan.scan(data, (), PASSED_ON, SECRET_REF_KEYS)
    finding = next(iter(findings), None)
    if finding is None:
        return
    if finding.key is not None:
        error = SpecError(f"a key here is what looks like {finding.what}", finding.path,
                          hint="never write secrets into a spec, not even as a name: reference them under "
                               "`secrets:` (environment variable or Secrets Manager ARN)")
        error.file, error.line, error.column = loaded.keys.get(finding.path + (finding.key,), (None, None, None))
        raise error
    key = finding.path[-1] if finding.path else None
    variable = SECRET_REF_FIELDS.get(finding.path)
    if finding.by_name:
        hint = (f"give a reference instead: `{key}: {{env: {variable}}}` or "
                f"`{key}: {{secrets_manager_arn: arn:aws:secretsmanager:...}}`; the value is read at run time"
                if variable else
                "secrets are given by reference: `secrets: {hf_token: {env: HF_TOKEN}}` or "
                "`{secrets_manager_arn: arn:aws:secretsmanager:...}`; the value is read at run time")
        raise SpecError(f"`{key}` looks like {finding.what}", finding.path, hint=hint)
    raise SpecError(f"this value contains what looks like {finding.what}", finding.path,
                    hint="never write secrets into a spec: reference them under `secrets:` "
                         "(environment variable or Secrets Manager ARN)")
