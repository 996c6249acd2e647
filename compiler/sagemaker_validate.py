"""Check a compiled SageMaker request against the service model's constraints (schema/sagemaker_api.py),
so `tunespec plan` finds a too-long job name or an unknown instance type before anything is sent, and
says which spec field the broken value came from.
"""
from typing import Dict, Optional

from ..schema.sagemaker_api import RequestPath, problems
from .errors import SpecError, SpecPath, raise_together


def spec_path_for(request_path: RequestPath, spec_paths: Dict[RequestPath, SpecPath]) -> SpecPath:
    """The spec field a request field comes from: the longest known prefix, else the backend section."""
    for length in range(len(request_path), 0, -1):
        if request_path[:length] in spec_paths:
            return spec_paths[request_path[:length]]
    return ("backend",)


def check(request: dict, spec_paths: Dict[RequestPath, SpecPath], operation: str = "CreateTrainingJob",
          what: Optional[str] = None) -> None:
    """Raise SpecError for every broken constraint (the first, with the others), each at the spec field
    the value came from."""
    errors = [SpecError(f"{what or operation} request field {'.'.join(str(part) for part in request_path)} {message}",
                        spec_path_for(request_path, spec_paths),
                        hint="the limits are SageMaker's own (its API model); change the spec so the request fits them")
              for request_path, message in problems(request, operation)]
    raise_together(errors)
