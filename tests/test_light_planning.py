"""Planning never imports the heavy libraries: the base install must stay light and fast."""
import json
import subprocess
import sys

from conftest import REPO

HEAVY = ["torch", "transformers", "peft", "trl", "datasets", "bitsandbytes", "boto3", "botocore", "sagemaker"]


def test_plan_of_every_example_imports_no_heavy_library(tmp_path):
    script = (
        "import sys, json, pathlib\n"
        "from tunespec.cli.main import main\n"
        "for i, spec in enumerate(sorted(pathlib.Path('specs').glob('*.yaml'))):\n"
        f"    assert main(['plan', str(spec), '-o', r'{tmp_path}' + f'/{{i}}', '--format', 'json']) == 0\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
