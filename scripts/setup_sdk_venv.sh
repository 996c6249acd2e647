#!/usr/bin/env bash
# Make .venv-sdk/: the SageMaker Python SDK 2.x in a virtual environment of its own.
#
# The SDK (sagemaker>=2.257,<3) pins packaging<25, protobuf<7 and rich<15, which would downgrade what
# transformers 5 / torch / tunespec use in the main environment. Only two things need it: the parity
# test (tests/test_sagemaker_sdk_parity.py runs the SDK side in a subprocess here) and
# scripts/update_sagemaker_images.py. Idempotent: an existing venv with the SDK is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-sdk
PYTHON=${PYTHON:-python3}
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -I -c 'import sagemaker, sys; sys.exit(not sagemaker.__version__.startswith("2."))' 2>/dev/null; then
  exit 0
fi
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check 'sagemaker>=2.257,<3'
