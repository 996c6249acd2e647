"""Recording double of optimum-neuron's lazy_load_for_parallelism (optimum/neuron/distributed/utils.py,
0.1.0): like the real one it patches PreTrainedModel.from_pretrained only for a tensor or pipeline degree
above 1; the patch records each model loaded under it into $NEURON_DOUBLE_LOG and loads it as usual
(the real one builds it on the meta device for the parallel layers to materialise shard by shard)."""
import contextlib
import json
import os

from transformers.modeling_utils import PreTrainedModel


@contextlib.contextmanager
def lazy_load_for_parallelism(tensor_parallel_size: int = 1, pipeline_parallel_size: int = 1):
    if tensor_parallel_size == 1 and pipeline_parallel_size == 1:
        yield
        return
    original = PreTrainedModel.__dict__["from_pretrained"]

    def from_pretrained(cls, *args, **kwargs):
        with open(os.environ["NEURON_DOUBLE_LOG"], "a", encoding="utf-8") as log:
            log.write(json.dumps({"call": "lazy_load_for_parallelism", "model": cls.__name__,
                                  "tensor_parallel_size": tensor_parallel_size,
                                  "pipeline_parallel_size": pipeline_parallel_size}) + "\n")
        return original.__func__(cls, *args, **kwargs)

    PreTrainedModel.from_pretrained = classmethod(from_pretrained)
    try:
        yield
    finally:
        PreTrainedModel.from_pretrained = original
