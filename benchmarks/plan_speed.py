"""How long `tunespec plan` takes on each example spec, as a user runs it (a fresh process each time).

Prints a table: spec, median wall-clock seconds over 5 runs, and whether torch, transformers,
boto3 or the SageMaker SDK were imported (they must not be: planning stays light).
Run: python benchmarks/plan_speed.py
"""
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ["torch", "transformers", "peft", "trl", "datasets", "boto3", "botocore", "sagemaker"]
PROBE = """
import sys, json
from tunespec.cli.main import main
code = main(["plan", sys.argv[1], "-o", sys.argv[2], "--format", "json"])
sys.stderr.write(json.dumps({"heavy": [m for m in %r if m in sys.modules]}) + "\\n")
sys.exit(code)
""" % (HEAVY,)


def time_plan(spec: Path, runs: int = 5) -> tuple:
    times, heavy = [], []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-c", PROBE, str(spec), out], cwd=REPO,
                                  capture_output=True, text=True)
            times.append(time.perf_counter() - start)
            if done.returncode != 0:
                raise SystemExit(f"{spec}: plan failed:\n{done.stderr}")
            heavy = json.loads(done.stderr.strip().splitlines()[-1])["heavy"]
    return statistics.median(times), heavy


def main() -> None:
    print(f"{'spec':52} {'median s':>9}  heavy modules imported")
    for spec in sorted((REPO / "specs").glob("*.yaml")):
        seconds, heavy = time_plan(spec.relative_to(REPO))
        print(f"{spec.stem:52} {seconds:9.3f}  {', '.join(heavy) or 'none'}")


if __name__ == "__main__":
    main()
