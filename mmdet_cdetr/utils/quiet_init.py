import logging

from mmengine.logging import MMLogger
from torch import nn


def init_weights_quietly(model: nn.Module) -> None:
    """``model.init_weights()`` without its INFO line for every parameter
    (hundreds of lines for a ResNet-50 detector)."""
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        model.init_weights()
    finally:
        logger.setLevel(level)
