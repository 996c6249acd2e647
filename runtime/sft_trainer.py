"""TRL's SFTTrainer as tunespec runs it: padding-free rows counted from their shape, and packed into rows of a
whole micro batch when the plan says so.

The Trainer counts each micro batch's tokens (`include_num_input_tokens_seen`) by moving the count to the
device, gathering it and reading it back: a device sync per micro batch, which stops the host from queueing
the next kernels. A padding-free row (packed batches without `pad_to_multiple_of`) holds no padding, so its
length is its token count, known on the host; one process needs no gather.

Packed rows (plan.batch.packed_row_tokens): TRL packs to its `max_length` and truncates each example to it
too. The examples are truncated at the plan's sequence_length first (TRL's own unpacked preparation:
tokenize, completion mask, truncation), then packed into rows of max_length (the row) by TRL's best fit.
"""
from typing import Optional


def sft_trainer_class():
    from trl import SFTTrainer
    from trl.data_utils import pack_dataset

    class TunespecSFTTrainer(SFTTrainer):
        def __init__(self, *args, example_tokens: Optional[int] = None, **kwargs):
            # read by _prepare_dataset, which SFTTrainer.__init__ calls
            self.example_tokens = example_tokens
            super().__init__(*args, **kwargs)

        def _prepare_dataset(self, dataset, processing_class, args, packing, formatting_func, dataset_name):
            if not (packing and self.example_tokens and args.max_length > self.example_tokens):
                return super()._prepare_dataset(dataset, processing_class, args, packing, formatting_func,
                                                dataset_name)
            # TRL's unpacked preparation truncates at args.max_length: the example length while it runs (a copy
            # through dataclasses.replace would run TrainingArguments.__post_init__ again on processed settings)
            row_tokens, args.max_length = args.max_length, self.example_tokens
            try:
                examples = super()._prepare_dataset(dataset, processing_class, args, False, formatting_func,
                                                    dataset_name)
            finally:
                args.max_length = row_tokens
            return pack_dataset(examples.select_columns(["input_ids", "labels"]), row_tokens, args.packing_strategy,
                                {"num_proc": args.dataset_num_proc})

        def _track_num_input_tokens(self, inputs):
            padding_free = "position_ids" in inputs and "attention_mask" not in inputs
            if (padding_free and not self.args.pad_to_multiple_of and self.accelerator.num_processes == 1
                    and self.args.include_num_input_tokens_seen in ("non_padding", "all")):
                self.state.num_input_tokens_seen += inputs["input_ids"].numel()
                return
            super()._track_num_input_tokens(inputs)

    return TunespecSFTTrainer
