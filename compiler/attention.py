"""The attention kernel a plan runs, and why: plan.model.attn_implementation (what the trainer passes to
from_pretrained, as is) and plan.model.attn_reason (the summary's line).

Packed batches are padding-free: TRL's collator concatenates a micro batch's documents into one row whose
position_ids restart at 0 for each document, and sends no attention mask. Each kernel keeps the documents
apart its own way (transformers 5.17): flash_attention_2 runs varlen flash attention over the collator's
cu_seq_lens; flex_attention builds a block-sparse document mask from position_ids and skips the blocks
between documents; sdpa and eager get a dense (batch, 1, L, L) mask built from position_ids, which costs
sdpa its fused causal path (measured on an H200: -8% tokens/s against unpacked batches, flex: none).

`auto` chooses from what the trainer's environment has. For the local backend that is this Python
environment, and an explicit kernel it lacks is refused here; remote environments (SageMaker
containers, Slurm nodes) are not visible at plan time, so `auto` keeps sdpa there and the trainer checks
an explicit choice before it loads anything.
"""
from typing import Optional, Tuple

from ..schema.kernels import FLEX_MIN_TORCH, attention_installed, attention_refusal
from . import instances, rules
from .calibration import PackedAttention
from .errors import SpecError

SDPA_PACKED_COST = (f"a dense document mask built from position_ids (no fused causal path: "
                    f"-{PackedAttention.sdpa_document_mask_slowdown.value:.0%} tokens/s against unpacked batches "
                    "on an H200, where flex attention lost nothing)")


def packed_batches(data: dict) -> bool:
    """Several documents per row: packing, except text grouped into blocks (one stream cut into blocks)."""
    fmt = data["format"]
    return bool(data["packing"]) and not (fmt["type"] == "text" and fmt.get("group_into_blocks", True))


def _fused_kernels_possible(devices: dict) -> bool:
    """flash-attn and flex attention's backward are CUDA kernels for Ampere or newer."""
    return devices["kind"] == "cuda" and rules.ampere_or_newer(instances.lookup_instance(devices["hardware"], ("backend",)))


def choose_attention(requested: str, backend_type: str, devices: dict, data: dict) -> Tuple[str, str]:
    """(kernel, reason) for the spec's `model.attn_implementation` on these devices and batches."""
    packed = packed_batches(data)
    local = backend_type == "local"
    if requested != "auto":
        # On devices that cannot run the kernel at all, compiler/rules.py says so instead.
        if local and _fused_kernels_possible(devices) and not attention_installed(requested):
            raise SpecError(attention_refusal(requested), ("model", "attn_implementation"),
                            hint="or leave `attn_implementation` out: `auto` chooses a kernel this environment has")
        cost = f": {SDPA_PACKED_COST}" if packed and requested in ("sdpa", "eager") else ""
        return requested, f"as the spec asks{cost}"
    if devices["kind"] != "cuda":
        where = "a CPU, where flex attention has no backward pass" if devices["kind"] == "cpu" else "Trainium"
        return "sdpa", f"on {where}" + (f", packed batches get {SDPA_PACKED_COST}" if packed else "")
    if not local:
        return "sdpa", ("the trainer's environment is not visible at plan time" +
                        (f"; packed batches get {SDPA_PACKED_COST}; set `attn_implementation: flash_attention_2` "
                         "(flash-attn installed there) or `flex_attention` (torch 2.6+ there) for a fused kernel"
                         if packed else ""))
    if _fused_kernels_possible(devices) and attention_installed("flash_attention_2"):
        return "flash_attention_2", ("flash-attn is installed here" +
                                     (": packed batches run as varlen flash attention" if packed else ""))
    if packed and _fused_kernels_possible(devices) and attention_installed("flex_attention"):
        return "flex_attention", ("packed batches, flash-attn not installed here: torch's flex attention with a "
                                  "block-sparse document mask (compiled at the first step)")
    if not packed:
        return "sdpa", "unpacked batches: torch's fused sdpa kernels"
    flex = "torch " + ".".join(map(str, FLEX_MIN_TORCH))
    return "sdpa", (f"neither flash-attn nor {flex} for flex attention here (or a GPU older than Ampere): "
                    f"packed batches get {SDPA_PACKED_COST}")


# Kernels that keep a padding-free row's documents apart without a dense mask.
DOCUMENT_KERNELS = ("flex_attention", "flash_attention_2")


def packed_row_tokens(kernel: str, data: dict, micro_batch_size: int) -> Optional[int]:
    """Tokens of the one padding-free row a micro batch of packed documents becomes, when the kernel keeps the
    documents apart without a dense mask: the documents are packed into rows of micro_batch_size x
    max_seq_length directly (each example truncated at max_seq_length first), instead of into micro_batch_size
    sequences the collator concatenates anyway. Fewer bin edges: measured on ViGGO, 95.4% of the row held
    documents with sequences of 2048, 98.5% for Axolotl's multipack into whole micro batches. sdpa and eager
    keep one sequence per max_seq_length: their dense mask grows with the row's square."""
    if kernel in DOCUMENT_KERNELS and packed_batches(data) and micro_batch_size > 1:
        return micro_batch_size * data["max_seq_length"]
    return None


def flex_pad_to_multiple_of(kernel: str, data: dict, row_tokens: Optional[int]) -> Optional[int]:
    """Flex attention is compiled for static shapes: padding the packed row to a multiple of the row's length
    leaves one shape to compile (otherwise one per packed length)."""
    if kernel != "flex_attention" or not packed_batches(data):
        return None
    return row_tokens or data["max_seq_length"]
