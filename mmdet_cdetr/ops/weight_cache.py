"""Weights prepared once for inference, and when to prepare them again.

The packed convolutions and linear layers keep their weights cast and
reordered for oneDNN between calls. A prepared weight is current while the
tensors it was computed from are the same memory and have not been changed
in place (through the parameter itself: an optimiser step,
``load_state_dict``); changes made through ``.data`` are not seen, as with
mmcv's ``fuse_conv_bn``.
"""
from typing import List, Optional, Sequence, Tuple

from torch import Tensor


def _versions(tensors: Sequence[Tensor]) -> List[Tuple[int, int]]:
    """Where each tensor's memory is and how often it was changed in
    place: read on every call, so without ``detach``."""
    return [(t.data_ptr(), t._version) for t in tensors]


class PreparedWeight:
    """Tensors prepared from ``sources`` (subclasses set them), with what
    they were prepared from."""

    def __init__(self, sources: Sequence[Optional[Tensor]]) -> None:
        sources = [t for t in sources if t is not None]
        # Held so that a replaced tensor's memory is not reused by another
        # one that the versions would then mistake for it.
        self.held_sources = [t.detach() for t in sources]
        self.versions = _versions(sources)

    def is_current(self, sources: Sequence[Optional[Tensor]]) -> bool:
        return self.versions == _versions(
            [t for t in sources if t is not None])


class PreparedWeights(dict):
    """A module's prepared weights by dtype. oneDNN's packed tensors can be
    neither copied nor pickled; copies of the model (``deepcopy``,
    ``torch.save``) start empty and prepare them again when first needed."""

    def __deepcopy__(self, memo: dict) -> 'PreparedWeights':
        return PreparedWeights()

    def __reduce__(self):
        return PreparedWeights, ()
