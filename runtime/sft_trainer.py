"""TRL's SFTTrainer as tunespec runs it: padding-free rows counted from their shape.

The Trainer counts each micro batch's tokens (`include_num_input_tokens_seen`) by moving the count to the
device, gathering it and reading it back: a device sync per micro batch, which stops the host from queueing
the next kernels. A padding-free row (packed batches without `pad_to_multiple_of`) holds no padding, so its
length is its token count, known on the host; one process needs no gather.
"""


def sft_trainer_class():
    from trl import SFTTrainer

    class TunespecSFTTrainer(SFTTrainer):
        def _track_num_input_tokens(self, inputs):
            padding_free = "position_ids" in inputs and "attention_mask" not in inputs
            if (padding_free and not self.args.pad_to_multiple_of and self.accelerator.num_processes == 1
                    and self.args.include_num_input_tokens_seen in ("non_padding", "all")):
                self.state.num_input_tokens_seen += inputs["input_ids"].numel()
                return
            super()._track_num_input_tokens(inputs)

    return TunespecSFTTrainer
