"""Spec file → validated `Spec`: `extends:` merged, inline secrets refused, the schema's errors located."""
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

from pydantic import ValidationError

from ..schema import Spec
from .errors import SpecError, SpecPath, locate
from .inline_secrets import refuse_inline_secrets
from .loader import Position
from .spec_extends import load_with_extends
from .validation_errors import from_validation_error


@dataclass
class LoadedSpec:
    spec: Spec
    data: dict
    file: str
    path: Path
    positions: Dict[SpecPath, Position]
    key_positions: Dict[SpecPath, Position]

    def locate(self, error: SpecError) -> SpecError:
        """Fill in file:line:column for an error raised after validation."""
        return locate(error, self.positions, self.key_positions, self.file)


def load_spec(path: Path, display: Optional[str] = None, text: Optional[str] = None) -> LoadedSpec:
    """Load, merge and validate a spec. `text` replaces the file's content (a spec from a git ref);
    relative paths in it still resolve against `path`'s folder."""
    display = display or str(path)
    loaded = load_with_extends(path, display, [path.resolve()], text)
    data = loaded.data
    try:
        refuse_inline_secrets(data, loaded)
        if "apiVersion" not in data:
            raise SpecError("missing `apiVersion`", ("apiVersion",), hint="start the spec with `apiVersion: tunespec/v1`")
        if data["apiVersion"] != "tunespec/v1":
            raise SpecError(f"unsupported apiVersion {data['apiVersion']!r}", ("apiVersion",),
                            hint="this tunespec reads `apiVersion: tunespec/v1`")
        spec = Spec.model_validate(data)
    except SpecError as error:
        raise locate(error, loaded.values, loaded.keys, display) from None
    except ValidationError as exc:
        raise from_validation_error(exc, data, loaded, display) from None
    return LoadedSpec(spec=spec, data=data, file=display, path=path, positions=loaded.values, key_positions=loaded.keys)
