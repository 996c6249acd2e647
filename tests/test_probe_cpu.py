"""`tunespec probe` on a machine without a GPU: real steps of the spec's model shape, said to be CPU numbers."""
import subprocess
import sys

from conftest import REPO


def test_probe_runs_real_steps_on_the_cpu_and_says_they_are_not_gpu_numbers():
    done = subprocess.run([sys.executable, "-m", "tunespec.cli.main", "probe", "cli/defaults/smollm2-viggo-lora.yaml",
                           "--layers", "2", "--steps", "4"], cwd=REPO, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "COLUMNS": "160", "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    text = " ".join(done.stdout.split())
    assert "CPU numbers are not GPU numbers" in text
    assert "Probing smollm2-135m with 2 of 30 layers on cpu: lora, micro batch 4, sequence 256" in text
    assert "tokens/s" in text and "peak process memory (RSS)" in text
