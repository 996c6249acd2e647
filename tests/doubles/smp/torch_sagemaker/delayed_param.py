import torch

from .recorder import record


class DelayedParamIniter:
    """SMP v2's delayed parameter initialisation: FSDP materialises the meta parameters module by module
    (here as zeros; sync_module_states then brings rank 0's weights)."""

    def __init__(self, model, init_method_using_config=None, verbose=False):
        record("DelayedParamIniter", parameters_on_meta=sum(p.is_meta for p in model.parameters()))

    def get_param_init_fn(self):
        record("get_param_init_fn")

        def param_init_fn(module: torch.nn.Module) -> None:
            module.to_empty(device="cpu", recurse=False)
            for tensor in list(module.parameters(recurse=False)) + list(module.buffers(recurse=False)):
                torch.nn.init.zeros_(tensor)

        return param_init_fn

    def get_post_param_init_fn(self):
        record("get_post_param_init_fn")
        return lambda module: None
