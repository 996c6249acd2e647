"""Every number the estimates rest on, grouped by concern, each with where it comes from.

The estimator (estimate_memory.py, estimate_speed.py, estimate.py), its suggestions (suggest.py), the
trainer's data-loading settings (trainer_speed.py) and the attention reasons (attention.py) read these
by name. A value is `Calibrated(value, source)`; the source is one of:

- `Measured`: fitted to, or read off, runs kept under benchmarks/ (each results file with the names of
  the cases used, shell patterns), or, for runs no file keeps, where they are told (`elsewhere`);
- `Datasheet`: a published specification (a paper, a library's format, a vendor page);
- `Assumption`: not measured; why the value is what it is.

tests/test_calibration.py fails for a value without a source, a results file that does not exist, or
a case name that matches no case of its file. benchmarks/estimate_errors.py replays the measured cases
through the estimator (benchmarks/estimate_errors.md).

Not here: the hardware facts (peak FLOP/s, bandwidth, memory, links, prices), data with their own
sources in compiler/catalog/hardware.yaml; and plain arithmetic that stays with the formulas: dtype
sizes (bf16 = 2 bytes), unit conversions, and the bytes a layer's forward saves, counted tensor by
tensor in estimate_memory._layer_activation_bytes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, Mapping, Tuple, TypeVar, Union

GIB = 1024 ** 3
T = TypeVar("T")

H100_PLAIN_LOOP = "benchmarks/measurements/h100-2026-11-24.json"
H100_APPLY = "benchmarks/gpu/results-h100-2026-11-24.json"
H200X2_FSDP_APPLY = "benchmarks/gpu/results-h200x2-fsdp-2026-11-30.json"
H200_MOE_PLAIN_LOOP = "benchmarks/gpu/moe-qlora-h200-2026-11-30.json"
H200_PACKED_APPLY = "benchmarks/gpu/results-h200-packed-2026-11-30.json"
H200_PACKED_APPLY_MB4 = "benchmarks/gpu/results-h200-packed-2026-12-01.json"
# The Llama-3-8B and Mistral-7B adapter cases of the H100 plain-loop measurements.
H100_ADAPTER_CASES = ("llama3-8b-lora-*", "llama3-8b-qlora-*", "mistral-7b-lora-*", "mistral-7b-qlora-*")
H100_FULL_CASES = ("llama3-8b-full-*", "mistral-7b-full-*")
# The `tunespec apply` runs of the Llama-3-8B shape: LoRA and QLoRA, H100 and H200, 1 and 2 GPUs.
H200X2_FSDP_CASES = ("fsdp2-lora", "fsdp2-qlora", "fsdp1-lora", "fsdp1-qlora")
APPLY_RUNS = {H100_APPLY: ("lora", "qlora"), H200X2_FSDP_APPLY: H200X2_FSDP_CASES}


@dataclass(frozen=True)
class Measured:
    """Fitted to or read off measured runs: `results` maps a results file (a path from the repository
    root) to the names of the cases used (shell patterns); `elsewhere` tells of runs no file keeps."""
    results: Mapping[str, Tuple[str, ...]] = field(default_factory=dict)
    elsewhere: str = ""


@dataclass(frozen=True)
class Datasheet:
    """A published specification: which document, and where in it."""
    document: str


@dataclass(frozen=True)
class Assumption:
    """Not measured: why the value is what it is."""
    why: str


Source = Union[Measured, Datasheet, Assumption]


@dataclass(frozen=True)
class Calibrated(Generic[T]):
    """A number the estimates use, with its source."""
    value: T
    source: Source


class MemoryOverheads:
    """Device memory beyond the tensors counted: the runtime's, the allocator's, the loss's."""

    # Memory the CUDA context, kernels and cuBLAS/NCCL handles take outside torch's allocator counters.
    cuda_context_bytes = Calibrated(int(0.55 * GIB), Assumption(
        "typical of a CUDA 12/13 context with cuBLAS and NCCL loaded; torch's counters never see it and no "
        "benchmark here records nvidia-smi's figure for a training step"))
    # Reserved beyond allocated at the peak, as a share of the memory allocated during the step (not the
    # resident weights): the caching allocator keeps the freed segments of the loss's large blocks while
    # recomputation under checkpointing asks for other sizes (measured on the H100: 0.21-0.67, median
    # 0.34); without checkpointing the saved activations are allocated once and stay (0.02-0.16, median 0.06).
    allocator_slack = {
        "checkpointing": Calibrated(0.35, Measured({H100_PLAIN_LOOP: ("*-gc", "*-gc-r2")})),
        "no_checkpointing": Calibrated(0.08, Measured({H100_PLAIN_LOOP: ("*-nogc", "*-nogc-r2")})),
    }
    # The waste stays below a few large segments however big the step. Fitted to the reserved peaks of
    # the cases up to 4 sequences of 4096 tokens; the largest steps (micro batch 8 x 4096) keep 9.5-11.7 GiB
    # reserved beyond allocated, so their reserved estimate is 8-15% low (benchmarks/estimate_errors.md).
    allocator_slack_cap_bytes = Calibrated(6 * GIB, Measured({H100_PLAIN_LOOP: ("*-gc",)}))
    # Bytes per logit and token at the loss: the fp32 upcast of the logits (4), the fp32 log-softmax kept
    # for backward (4), and at the start of backward its fp32 gradient (4), less what the bf16 logits'
    # early release gives back: 12 by count; the Llama-3 (128k vocabulary) and Mixtral (32k) measurements
    # under checkpointing, where the loss sets the peak, give 11.4-11.8.
    logit_bytes = Calibrated(11.5, Measured({H100_PLAIN_LOOP: ("llama3-8b-*-gc", "mixtral-8x7b-*-gc")}))
    # Liger's fused linear cross-entropy computes the logits chunk by chunk and never holds them whole:
    # per token, about one fp32 vector of the hidden size.
    fused_loss_bytes_per_hidden = Calibrated(4, Assumption(
        "Liger computes the loss in chunks of the vocabulary; what stays per token is taken to be the fp32 "
        "gradient of the lm_head input; not measured on its own"))
    # Fraction of the largest per-layer transient (fp32 norm copies, MLP intermediates being built) in
    # flight on top of what is saved.
    transient_layer_fraction = Calibrated(1.0, Assumption(
        "the whole transient of one layer is taken to be live at the peak; the H100 replay stays within "
        "its bounds with it"))


class QuantizedStorage:
    """Bytes per parameter of the quantized weight and optimizer-state formats."""

    nf4_blocksize = Calibrated(64, Datasheet(
        "QLoRA (Dettmers et al. 2023, arXiv:2305.14314) section 3, bitsandbytes' default 4-bit blocksize: "
        "one fp32 absmax per 64 weights"))
    double_quant_blocksize = Calibrated(256, Datasheet(
        "QLoRA (arXiv:2305.14314) section 3, Double Quantization: the absmax constants are quantized to 8 bits "
        "in blocks of 256, with one fp32 constant per block"))
    int8_bytes_per_param = Calibrated(1.0 + 4 / 4096, Assumption(
        "LLM.int8 keeps one fp32 scale per row; a row of about 4096 weights is typical of the 7-8B models"))
    # Two uint8 states plus an fp32 absmax per 2048-block each.
    adamw_8bit_state_bytes_per_param = Calibrated(2.0 + 2 * 4 / 2048, Datasheet(
        "8-bit Optimizers via Block-wise Quantization (Dettmers et al. 2021, arXiv:2110.02861): two 8-bit "
        "states, blocks of 2048 values with one fp32 absmax each"))
    # Adafactor's factored second moment: a row and a column vector per matrix, no first moment.
    adafactor_state_share = Calibrated(0.05, Assumption(
        "rows + columns of each matrix are a small share of its size; 5% of the parameter bytes is a rough "
        "bound for the vectors and the non-matrix parameters, not measured"))


class DeviceEfficiency:
    """Shares of the datasheet peaks (compiler/catalog/hardware.yaml) that training kernels reach."""

    # Share of the dense bf16 tensor-core peak that the training step's GEMMs reach.
    gemm_utilisation = Calibrated(0.75, Measured({H100_PLAIN_LOOP: H100_ADAPTER_CASES}))
    # Full fine-tuning reaches less of it: every weight also gets a bf16 weight-gradient GEMM written into
    # .grad (13 cases: 0.53).
    full_gemm_utilisation = Calibrated(0.53, Measured({H100_PLAIN_LOOP: H100_FULL_CASES}))
    # Grouped GEMMs of the MoE experts (transformers 5's grouped_mm): many smaller, unevenly split
    # matrices reach less of the peak than one dense GEMM.
    moe_gemm_utilisation = Calibrated(0.45, Measured({H100_PLAIN_LOOP: ("mixtral-8x7b-L4-lora-*",
                                                                        "mixtral-8x7b-L8-lora-*")}))
    # NF4 experts (runtime/moe_quantization.py's loop: per expert a routing gather, bitsandbytes' 4-bit
    # matmuls, which dequantize the expert in forward and again in backward, adapters and a scatter) reach
    # far less of the peak on their FLOPs than grouped bf16 GEMMs: seed 000's Mixtral-8x7B over FSDP on
    # 2 H200s, micro batch 10 x 2048, the only GPU-bound NF4 run (4,716 and 4,638 tokens/s in two runs).
    # The one-GPU micro-batch-1 run (mixtral32-nf4) stays bound by its launches under it.
    nf4_expert_gemm_utilisation = Calibrated(0.18, Measured({H200X2_FSDP_APPLY: ("mixtral-fsdp2",)}))
    # Share of the plain fp32 peak that fp32 GEMMs reach (cuBLAS SGEMM on large shapes): fitted to the
    # Mixtral QLoRA cases whose 16-bit experts the full k-bit preparation upcast to fp32.
    fp32_utilisation = Calibrated(0.72, Measured({H100_PLAIN_LOOP: ("mixtral-8x7b-*-qlora-*",)}))
    # Share of the datasheet memory bandwidth that elementwise and dequantisation kernels reach.
    bandwidth_efficiency = Calibrated(0.70, Assumption(
        "a usual share of HBM bandwidth for streaming elementwise kernels; set before the calibration and "
        "left as it was while the byte counts below were fitted"))
    # Trainium through optimum-neuron: a conservative share of the peak.
    trainium_utilisation = Calibrated(0.25, Assumption("no Trainium measurement yet; the plan warns so"))


class HardwareFallbacks:
    """Figures the estimator uses where the hardware catalog has none for a device."""

    # Ratio of the bf16 tensor-core peak to the plain fp32 peak.
    bf16_to_fp32_peak_ratio = Calibrated(8, Assumption(
        "between the datasheet ratios of the catalog's GPUs (L4, A10G, L40S 4x; V100, T4 8x; A100, H100 "
        "15-16x), for a device without a plain fp32 figure"))
    memory_bandwidth_gbps = Calibrated(2000, Assumption("about an A100-80GB's HBM2e (2,039 GB/s datasheet)"))
    # Per device and direction, between the devices of one machine.
    intra_node_gbytes_per_s = Calibrated(16, Assumption("PCIe Gen3 x16 per direction, the slowest link in "
                                                        "the catalog"))
    network_gbps = Calibrated(25, Assumption("a modest instance network; most catalog instances have 25 Gbps "
                                             "or more"))


class MemoryTraffic:
    """Bytes the memory-bound kernels of a training step move."""

    # LoRA adapter elementwise traffic, bytes per input element of an adapted module per forward: fp32 cast
    # of the input (read 2, write 4), dropout (read 4, write 4, mask 1), autocast's bf16 copy for lora_A
    # (read 4, write 2); without dropout the dropout term goes.
    lora_bytes_per_input = Calibrated({"dropout": 21, "no_dropout": 12}, Assumption(
        "counted from PEFT 0.21's LoRA Linear forward under bf16 autocast, kernel by kernel"))
    # The same with the input left 16-bit (plan.method.lora.cast_input_to_adapter_dtype false, under autocast):
    # dropout over the 16-bit input (read 2, write 2, mask 1); lora_A reads the input itself.
    lora_bytes_per_uncast_input = Calibrated({"dropout": 5, "no_dropout": 0}, Assumption(
        "counted from PEFT 0.21's LoRA Linear forward with cast_input_dtype_enabled off, under bf16 autocast"))
    # ... and per output element: lora_B's fp32 output, the scaling, the cast back and the add.
    lora_bytes_per_output = Calibrated(24, Assumption("counted from PEFT 0.21's LoRA Linear forward"))
    # ParamWrapper: bytes moved per byte of a layer's fused experts per pass (delta write, W and delta
    # reads, W + delta write, GEMM read; in backward the full-size gradient and its reduction to A, B).
    param_wrapper_bytes_per_weight_byte = Calibrated(7.5, Measured({H100_PLAIN_LOOP: ("mixtral-8x7b-L4-lora-*",
                                                                                       "mixtral-8x7b-L8-lora-*")}))
    # NF4: bytes per weight each time a layer's weight is dequantized and used, besides the packed 4-bit
    # read that nf4_bytes_per_param counts exactly: the bf16 write and the GEMM's bf16 read (2 + 2), and
    # what the first estimate's packed read (0.52) had beyond the double-quantized format (0.5159).
    dequant_bytes_per_param = Calibrated(0.52 + 2 + 2 - 0.5159, Assumption(
        "counted from bitsandbytes' dequantize-then-GEMM path: packed read, bf16 write, bf16 read"))
    # QLoRA after PEFT's k-bit preparation: the fp32 embedding and norms make the residual stream, the norm
    # outputs and the adapted modules' outputs fp32, so the layer's elementwise kernels move about twice the
    # bytes: ~30 us/token more than bf16 LoRA on Llama-3-8B (32 layers, 4 pass equivalents with
    # checkpointing); bytes per hidden element per layer and pass.
    fp32_residual_bytes_per_hidden = Calibrated(134, Measured({H100_PLAIN_LOOP: ("llama3-8b-qlora-*",
                                                                                 "llama3-8b-lora-*")}))
    # torch's default AdamW ("adamw_torch", the foreach implementation) runs about a dozen elementwise passes
    # over parameters, gradients and both states (lerp, mul, addcmul, sqrt into a temporary, div, add,
    # addcdiv, decay), and gradient clipping reads and scales the gradients again: bytes moved per byte of
    # parameter.
    foreach_adamw_bytes_per_param_byte = Calibrated(27, Measured({H100_PLAIN_LOOP: H100_FULL_CASES}))


class LaunchCosts:
    """CPU seconds per decoder layer and pass (forward, recompute, backward): Python, autocast dispatch and
    kernel launches. The GPU runs behind the CPU, so small steps of an adapted model are launch-bound."""

    # PEFT adds several small kernels per adapted module.
    cpu_per_layer_pass_s = {
        "full": Calibrated(1.5e-3, Measured({H100_PLAIN_LOOP: H100_FULL_CASES})),
        # the launch-bound small steps: about the same step time from 512 to 2048 tokens
        "lora": Calibrated(5.0e-3, Measured({H100_PLAIN_LOOP: ("llama3-8b-lora-mb1-*", "mistral-7b-lora-mb1-*")})),
        "dora": Calibrated(6.5e-3, Assumption(
            "no DoRA measurement: LoRA's cost plus DoRA's weight-norm kernels per adapted module")),
        "qlora": Calibrated(5.5e-3, Measured(elsewhere="issue 13: a plain PEFT QLoRA loop without the k-bit "
                                                       "preparation, 3,891 tokens/s at micro batch 1 with "
                                                       "checkpointing, about 5.5 ms")),
    }
    # PEFT's full k-bit preparation adds fp32 casts around every adapted and quantized module: 8.0 ms per
    # layer-pass in all (Llama-3-8B QLoRA, H100) against the 5.5 ms without it.
    kbit_preparation_cpu_per_layer_pass_s = Calibrated(2.5e-3, Measured(
        {H100_PLAIN_LOOP: ("llama3-8b-qlora-mb1-*",)}, elsewhere="issue 13 for the 5.5 ms without it"))
    # ... and per expert of an NF4 MoE layer and pass: the loop's routing gather, two 4-bit matmuls, their
    # adapters, the activation and the scatter (about 20 launches): the 32-layer Mixtral-8x7B shape on an
    # H200, micro batch 1 with checkpointing, 1.22 s per step.
    cpu_per_nf4_expert_pass_s = Calibrated(0.9e-3, Measured({H200_MOE_PLAIN_LOOP: ("mixtral32-nf4",)}))
    # `tunespec apply` runs TRL's SFTTrainer (packed rows with position_ids, Liger's Triton kernels,
    # completion-only masks, per-step logging and token counting) where measure_training.py and the probe
    # run a plain loop: per decoder layer and pass it costs 3.7-5.5 ms more on six apply runs of the
    # Llama-3-8B shape (LoRA and QLoRA, H100 and H200, with and without checkpointing, 1 and 2 GPUs).
    # Its profile is issue 15's.
    trainer_cpu_per_layer_pass_s = Calibrated(5.0e-3, Measured(APPLY_RUNS))
    # Unpacked rows (one example per sequence, padded to the longest of the batch) skip the packed rows' mask
    # and position work: the seed recipe's naive setup through `tunespec apply` (Llama-3-8B shape, micro batch
    # 4, checkpointing, no Liger, sdpa) on an H100 and an H200.
    trainer_unpacked_scale = Calibrated(0.4, Measured({H100_APPLY: ("naive-dynamic",),
                                                          H200_PACKED_APPLY_MB4: ("naive-trl",)}))
    # The host's cost of a forward pass (or a recompute) against the mean per pass, the backward's being the rest:
    # Python launches the forward, autograd's C++ engine most of the backward. Fitted on the packed Llama-3-8B
    # LoRA apply runs on an H200 at micro batch 2 x 2 (0.352 s per micro batch: host-bound forward) and 4 x 1
    # (0.607 s: GPU-bound); 1.0 (no split) estimated +1% for micro batch 4 where +16% was measured. The H100
    # plain loops move by less than 3% (two of them closer).
    forward_pass_host_share = Calibrated(1.2, Measured({H200_PACKED_APPLY_MB4: ("apply-auto-mb2", "apply-auto")}))
    # FSDP sharded over several processes: each wrapped layer's all-gather (and in backward its
    # reduce-scatter) is issued and waited for on the CPU path: +1.5-2.5 ms per layer and pass, LoRA and
    # QLoRA, 2 processes against 1.
    fsdp_sharded_cpu_per_layer_pass_s = Calibrated(2.0e-3, Measured({H200X2_FSDP_APPLY: H200X2_FSDP_CASES}))


class PackedAttention:
    """What packed (padding-free) batches cost under each attention kernel (compiler/attention.py)."""

    # The trainer path's launch cost (LaunchCosts.trainer_cpu_per_layer_pass_s) scaled by the kernel: the
    # six apply runs packed under sdpa (a dense document mask), so sdpa is the calibration. Under flex
    # attention the packed Llama-3-8B apply ran at 11,213 tokens/s, above the probe's plain batches
    # (10,433): GPU-bound, so the trainer's extra launch cost is hidden (any scale up to 0.2 gives the same
    # estimate); the per-layer mask work sdpa pays is built once per step as a block mask.
    trainer_scale = {
        "sdpa": Calibrated(1.0, Measured({**APPLY_RUNS, H200_PACKED_APPLY: ("apply-sdpa",)})),
        "eager": Calibrated(1.0, Assumption("not measured: taken as sdpa")),
        "flex_attention": Calibrated(0.0, Measured({H200_PACKED_APPLY: ("apply-auto",)})),
        "flash_attention_2": Calibrated(1.0, Assumption("not measured: taken as sdpa")),
    }
    # Tokens/s sdpa loses to the dense document mask of packed rows against unpacked batches (the reason
    # the plan gives for another kernel).
    sdpa_document_mask_slowdown = Calibrated(0.08, Measured(elsewhere=(
        "issue 15: a plain loop on an H200, position_ids restarting every 256 tokens: 9,256 tokens/s packed "
        "under sdpa against 10,087 unpacked, 10,232 under flex attention")))


class Collectives:
    """Collectives that move weights or gradients between devices."""

    # Share of the collectives hidden behind computation (FSDP prefetch, DDP bucketing). On 2 H200s over
    # NVLink the Llama-3-8B-shape FSDP steps leave them no exposed share at all.
    overlap = Calibrated(0.5, Assumption(
        "a textbook share; the only multi-GPU measurement (2 H200s, NVLink) cannot tell it: no exposed time"))
    # Share of the link bandwidth they reach.
    link_efficiency = Calibrated(0.7, Assumption("a textbook share of NCCL's bus bandwidth on NVLink and EFA"))
    # FSDP/SMP gather a whole decoder layer at compute precision: the current one and the prefetched next.
    gathered_layers = Calibrated(2, Assumption(
        "FSDP prefetches the next layer's all-gather while the current layer computes: two layers gathered"))
    # QLoRA's all-gather moves the NF4 layers and the 16-bit embeddings, norms and lm_head.
    qlora_gathered_bytes_per_param = Calibrated(0.6, Assumption(
        "NF4 with its constants (0.52 bytes) for most parameters, 2 bytes for the few 16-bit ones; not "
        "measured"))


class CpuTraining:
    """Training on the host CPU (the local backend), measured with the embedded default (SmolLM2-135M LoRA,
    4 x ~250 tokens) on the workplace's 2-core Xeon (Sapphire Rapids, KVM)."""

    _EMBEDDED_DEFAULT_RUN = ("the embedded default's training on the 2-core Xeon, fp32 (commit 799e1c9: "
                             "5.5 GiB estimated against 5.49 GiB measured RSS); no results file kept")
    # What the trainer process holds in host RAM (RSS) before the weights load: Python with torch,
    # transformers, TRL and the data.
    process_bytes = Calibrated(int(0.55 * GIB), Measured(elsewhere=_EMBEDDED_DEFAULT_RUN))
    # What glibc's allocator keeps mapped beyond a step's own peak (freed activation and logit blocks it
    # reuses), as a share of that peak.
    rss_slack = Calibrated(0.84, Measured(elsewhere=_EMBEDDED_DEFAULT_RUN))
    # Effective GFLOP/s per core of a whole training step (matmuls, LoRA's elementwise work, the loss, the
    # optimizer) by the vector extension PyTorch uses and the precision: avx2 with torch held to AVX2
    # (ATEN_CPU_CAPABILITY=avx2), avx512_bf16 natively. Emulated bf16 (no AVX512-BF16/AMX) has no rate:
    # plans refuse it.
    _RATE_RUN = ("commit 23546dd: the embedded default's steps on the 2-core Xeon; no results file kept")
    _BY_WIDTH = "not measured: the measured AVX-512 rate, by vector width"
    gflops_per_core = {
        "avx2": {"fp32": Calibrated(45, Measured(elsewhere=_RATE_RUN))},
        "avx512": {"fp32": Calibrated(70, Assumption(_BY_WIDTH))},
        "avx512_bf16": {"fp32": Calibrated(70, Measured(elsewhere=_RATE_RUN)),
                        "bf16": Calibrated(90, Measured(elsewhere=_RATE_RUN))},
        "amx": {"fp32": Calibrated(70, Assumption(_BY_WIDTH)),
                "bf16": Calibrated(180, Assumption("not measured: AMX tiles taken as twice AVX512-BF16"))},
    }


class RunTime:
    """The wall-clock time of a run beyond its training steps."""

    # Loading the weights before the first step (download from the hub or S3, then to the devices).
    load_bytes_per_s = Calibrated(400e6, Assumption("a rough sustained rate from a hub or S3 to the devices"))


class Verdicts:
    """Where the plan's memory verdict and warnings draw their lines."""

    # "tight" above this share of the device's memory, "fits" below.
    tight_fraction = Calibrated(0.90, Assumption(
        "a margin for the estimate's error (memory within 10% on every measured case) and for fragmentation"))
    # Warn "communication-bound" when collectives take more than this share of a step.
    communication_bound_share = Calibrated(0.5, Assumption("more than half a step waiting on collectives"))
    # Warn "memory-underused" with checkpointing on below this share of the device's memory.
    memory_underused_share = Calibrated(0.3, Assumption(
        "under a third of the memory used, a run without checkpointing or with a larger micro batch likely fits"))


class Suggestions:
    """How far suggest.py searches for a faster plan."""

    max_micro_batch = Calibrated(64, Assumption(
        "a bound on the search; the measured tokens/s flatten well before it (H100 cases up to micro batch 8)"))
    # A larger micro batch is tried up to this multiple of the plan's.
    micro_batch_search_factor = Calibrated(8, Assumption("three doublings of the plan's micro batch"))
    # A faster variant is suggested only above this ratio of the plan's tokens/s.
    min_speedup = Calibrated(1.05, Assumption("a gain under 5% is within the estimate's own tokens/s error"))


class DataLoading:
    """The trainer's data loading beside the accelerator's work (trainer_speed.py)."""

    # Examples are tokenized before training, so collation is light.
    workers_per_process = Calibrated(2, Assumption(
        "collating pre-tokenized batches is light: two workers keep ahead of one accelerator; more only cost "
        "host memory"))
