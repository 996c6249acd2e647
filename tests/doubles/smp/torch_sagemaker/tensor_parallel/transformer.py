import torch


class TransformerLayer(torch.nn.Module):
    """Stands for SMP's transformer layer: runs the Hugging Face layer it replaced."""

    def __init__(self, layer: torch.nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, *args, **kwargs):
        return self.layer(*args, **kwargs)
