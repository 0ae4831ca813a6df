import torch
from torch import Tensor


def autocast_off(tensor: Tensor) -> torch.autocast:
    """A region without autocast on ``tensor``'s device: what runs inside
    computes in the dtype of its inputs (cast them to float32), whatever
    mixed precision the caller chose. For the few small computations whose
    precision matters more than their cost (reference points, box logits,
    matching costs, losses)."""
    return torch.autocast(tensor.device.type, enabled=False)
