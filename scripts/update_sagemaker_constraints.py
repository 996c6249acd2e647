#!/usr/bin/env python3
"""Regenerate schema/sagemaker_constraints.json from botocore's SageMaker service model.

botocore's ParamValidator checks types, required and unknown keys, but not the service model's
`min`/`max`/`pattern`/`enum` (the service does, after the request is sent). `tunespec plan` has no
botocore, so the shapes a CreateTrainingJob request reaches are kept as a small data file and
checked by schema/sagemaker_api.py.

    python scripts/update_sagemaker_constraints.py          # rewrite the file
    python scripts/update_sagemaker_constraints.py --check  # exit 1 when it is out of date
"""
import argparse
import json
import sys
from pathlib import Path

TARGET = Path(__file__).resolve().parents[1] / "schema" / "sagemaker_constraints.json"
OPERATIONS = ("CreateTrainingJob",)
KEPT_FIELDS = ("type", "min", "max", "pattern", "enum", "required")


def _reachable(shapes: dict, name: str, out: dict) -> None:
    if name in out:
        return
    shape = shapes[name]
    kept = {key: shape[key] for key in KEPT_FIELDS if key in shape}
    out[name] = kept
    if "members" in shape:
        kept["members"] = {member: spec["shape"] for member, spec in shape["members"].items()}
        for spec in shape["members"].values():
            _reachable(shapes, spec["shape"], out)
    for key in ("member", "key", "value"):
        if key in shape:
            kept[key] = shape[key]["shape"]
            _reachable(shapes, shape[key]["shape"], out)


def build() -> dict:
    import botocore
    from botocore.loaders import Loader

    model = Loader().load_service_model("sagemaker", "service-2")
    shapes: dict = {}
    operations = {}
    for operation in OPERATIONS:
        input_shape = model["operations"][operation]["input"]["shape"]
        operations[operation] = input_shape
        _reachable(model["shapes"], input_shape, shapes)
    return {
        "source": {"botocore": botocore.__version__, "api_version": model["metadata"]["apiVersion"]},
        "operations": operations,
        "shapes": dict(sorted(shapes.items())),
    }


def render(data: dict) -> str:
    return json.dumps(data, indent=1, sort_keys=True) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    text = render(build())
    if args.check:
        current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
        # The botocore version differs between machines; the shapes are what must agree.
        same = json.loads(current or "{}").get("shapes") == json.loads(text)["shapes"]
        print(f"{TARGET.name}: {'up to date' if same else 'OUT OF DATE'}")
        return 0 if same else 1
    TARGET.write_text(text, encoding="utf-8")
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
