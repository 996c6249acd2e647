#!/usr/bin/env python3
"""Regenerate compiler/catalog/sagemaker_images.json from the SageMaker Python SDK 2.x's own catalogue.

`tunespec plan` resolves training image URIs without importing the SDK. It reads this file, which
holds the training part of the SDK's bundled `image_uri_config/pytorch.json` and `pytorch-smp.json`,
the ECR host name of every region they name (from botocore's endpoint data, as the SDK looks it up),
and the framework versions the SDK accepts for torch_distributed. Run it with the SDK installed
(scripts/setup_sdk_venv.sh makes `.venv-sdk/`):

    .venv-sdk/bin/python scripts/update_sagemaker_images.py          # rewrite the file
    .venv-sdk/bin/python scripts/update_sagemaker_images.py --check  # exit 1 when it is out of date
"""
import argparse
import json
import sys
from pathlib import Path

TARGET = Path(__file__).resolve().parents[1] / "compiler" / "catalog" / "sagemaker_images.json"
FRAMEWORKS = ("pytorch", "pytorch-smp")


def build() -> dict:
    import sagemaker
    from sagemaker import fw_utils, image_uris, utils

    frameworks = {name: image_uris.config_for_framework(name)["training"] for name in FRAMEWORKS}
    regions = sorted({region for config in frameworks.values() for version in config["versions"].values()
                      for region in version["registries"]})
    resolver = utils._botocore_resolver()  # the SDK's own lookup of ECR endpoints
    hostnames = {}
    for region in regions:
        endpoint = resolver.construct_endpoint("ecr", region)
        hostnames[region] = endpoint["hostname"] if endpoint else f"ecr.{region}.amazonaws.com"
    return {
        "source": {"sagemaker": sagemaker.__version__,
                   "files": [f"sagemaker/image_uri_config/{name}.json" for name in FRAMEWORKS]},
        "ecr_hostnames": hostnames,
        "frameworks": frameworks,
        "torch_distributed_gpu_versions": fw_utils.TORCH_DISTRIBUTED_GPU_SUPPORTED_FRAMEWORK_VERSIONS,
    }


def render(data: dict) -> str:
    return json.dumps(data, indent=1, sort_keys=True) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    data = build()
    if args.check:
        current = json.loads(TARGET.read_text(encoding="utf-8")) if TARGET.exists() else {}
        current.pop("source", None)
        data.pop("source")
        same = current == data
        print(f"{TARGET.name}: {'up to date' if same else 'OUT OF DATE'}")
        return 0 if same else 1
    TARGET.write_text(render(data), encoding="utf-8")
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
