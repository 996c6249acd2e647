"""Every committed measurement, replayed through the estimator: peak memory within 10%, tokens/s
within 20% (15% for the runs on the GPU machine; benchmarks/estimate_errors.py prints the table)."""
import importlib.util
import pathlib

import pytest

_path = pathlib.Path(__file__).parents[1] / "benchmarks" / "estimate_errors.py"
_spec = importlib.util.spec_from_file_location("estimate_errors", _path)
estimate_errors = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(estimate_errors)

ROWS = estimate_errors.replay()


# The bar: at least 20 measured cases (48 ran without OOM on 2026-11-24).
MIN_CASES = 20


def test_enough_measured_cases():
    assert len(ROWS) >= MIN_CASES, "the replay needs the committed measurements (benchmarks/measurements/*.json)"


@pytest.mark.parametrize("row", ROWS, ids=[row["id"] for row in ROWS])
def test_peak_memory_within_bound(row):
    assert abs(row["memory_error"]) <= estimate_errors.MEMORY_BOUND, (
        f"estimated {row['estimated_peak_gib']:.2f} GiB, measured {row['measured_peak_gib']:.2f} GiB")


@pytest.mark.parametrize("row", ROWS, ids=[row["id"] for row in ROWS])
def test_tokens_per_s_within_bound(row):
    assert abs(row["speed_error"]) <= estimate_errors.SPEED_BOUND, (
        f"estimated {row['estimated_tokens_per_s']:.0f} tokens/s, measured {row['measured_tokens_per_s']:.0f}")


def test_measured_out_of_memory_cases_are_not_called_fits():
    for row in estimate_errors.oom_rows():
        assert row["verdict"] != "fits", row


APPLY_ROWS = estimate_errors.apply_rows()
PLAIN_LOOP_ROWS = estimate_errors.plain_loop_rows()
# Measured faster than estimated by 27% and 45%: the plain loop of benchmarks/gpu/moe_qlora.py ran the
# Llama-3-8B QLoRA step in 0.39-0.43 s on the H200's host, where the launch costs calibrated on the
# H100's (measure_training.py) predict 0.53-0.77 s. Strict: the day the estimator catches up, this fails.
KNOWN_SPEED_GAPS = {"moe-qlora-h200-2026-11-30:llama8b-qlora-minimal", "moe-qlora-h200-2026-11-30:llama8b-qlora-full"}


def test_the_gpu_runs_are_replayed():
    assert len(APPLY_ROWS) >= 6 and len(PLAIN_LOOP_ROWS) >= 4, "the GPU results under benchmarks/gpu/ need replay blocks"


# Estimated 89.9 GiB, measured 78.7: Llama-3-8B LoRA without Liger through `tunespec apply` on an H200 (packed, flex,
# micro batch 4). The estimate adds unfused RMSNorm/SwiGLU activations (+11 GiB over the Liger run) and the whole
# fp32 logits and loss (+11 GiB); the run measured 11.2 GiB over the Liger run, not 22. The H100 plain loops without
# Liger (sdpa, unpacked) fit within 2%. An over-estimate (the safe side); strict, so that a fix shows.
KNOWN_MEMORY_GAPS = {"results-h200-packed-2026-12-01:apply-auto-noliger"}


@pytest.mark.parametrize("row", [
    pytest.param(r, marks=pytest.mark.xfail(strict=True, reason="see KNOWN_MEMORY_GAPS"))
    if r["id"] in KNOWN_MEMORY_GAPS else r for r in APPLY_ROWS + PLAIN_LOOP_ROWS], ids=[r["id"] for r in APPLY_ROWS + PLAIN_LOOP_ROWS])
def test_gpu_run_peak_memory_within_bound(row):
    assert estimate_errors.memory_holds(row), (
        f"estimated {row['estimated_peak_gib']:.2f} GiB, measured {row['measured_peak_gib']:.2f} GiB")


@pytest.mark.parametrize("row", [
    pytest.param(r, marks=pytest.mark.xfail(strict=True, reason="host launch costs, see KNOWN_SPEED_GAPS"))
    if r["id"] in KNOWN_SPEED_GAPS else r for r in APPLY_ROWS + PLAIN_LOOP_ROWS], ids=[r["id"] for r in APPLY_ROWS + PLAIN_LOOP_ROWS])
def test_gpu_run_tokens_per_s_within_bound(row):
    assert abs(row["speed_error"]) <= estimate_errors.GPU_RUN_SPEED_BOUND, (
        f"estimated {row['estimated_tokens_per_s']:.0f} tokens/s, measured {row['measured_tokens_per_s']:.0f}")
