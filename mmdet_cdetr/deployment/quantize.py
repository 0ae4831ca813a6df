import os.path as osp
import tempfile
from typing import Iterable, Iterator, Optional

import numpy as np
from mmengine.config import Config
from mmengine.dataset import pseudo_collate

from mmdet_cdetr.registry import DATASETS, MODELS
from .ort_runner import INPUT_NAME


def quantize_int8(onnx_file: str, out_file: str,
                  calibration_inputs: Iterable[np.ndarray]) -> None:
    """Static INT8 quantisation of the convolutions (the backbone and
    neck, about 80% of the CPU time), calibrated on preprocessed images.

    Weights are int8 per output channel, activations uint8 with ranges
    from the calibration images (min-max), written as QuantizeLinear /
    DequantizeLinear pairs (QDQ) that ONNX Runtime fuses into integer
    convolutions. The transformer stays in float32: dynamic quantisation,
    the other option ONNX Runtime offers, made the convolutions slower
    (``ConvInteger``) and the matrix products barely faster
    (docs/deployment.md).

    Args:
        onnx_file: An export of ``tools/deployment/pytorch2onnx.py``.
        out_file: Where to write the quantised model.
        calibration_inputs: (1, 3, H, W) float32 preprocessed images.
    """
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat,
                                          QuantType, quantize_static)

    class Reader(CalibrationDataReader):

        def __init__(self) -> None:
            self.inputs: Iterator[np.ndarray] = iter(calibration_inputs)

        def get_next(self) -> Optional[dict]:
            inputs = next(self.inputs, None)
            return None if inputs is None else {INPUT_NAME: inputs}

    with tempfile.TemporaryDirectory() as tmp:
        prepared = osp.join(tmp, 'prepared.onnx')
        onnx.save(_inline_shared_weights(onnx.load(onnx_file)), prepared)
        quantize_static(
            prepared,
            out_file,
            Reader(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=['Conv'],
            per_channel=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8)


def _inline_shared_weights(model):
    """The exporter stores equal weights once and feeds the other users
    through ``Identity`` nodes; the quantiser needs every conv weight as an
    initializer of its own, so each such ``Identity`` becomes a copy."""
    from onnx import TensorProto
    initializers = {init.name: init for init in model.graph.initializer}
    nodes = []
    for node in model.graph.node:
        if node.op_type == 'Identity' and node.input[0] in initializers:
            copy = TensorProto()
            copy.CopyFrom(initializers[node.input[0]])
            copy.name = node.output[0]
            model.graph.initializer.append(copy)
        else:
            nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


def calibration_images(cfg: Config, num_images: int) -> Iterator[np.ndarray]:
    """The first ``num_images`` training images of ``cfg`` through its test
    pipeline and data preprocessor, as the exported model takes them."""
    dataset = DATASETS.build(
        dict(
            cfg.train_dataloader.dataset,
            pipeline=cfg.test_dataloader.dataset.pipeline))
    preprocessor = MODELS.build(cfg.model.data_preprocessor)
    for index in range(min(num_images, len(dataset))):
        data = preprocessor(pseudo_collate([dataset[index]]), False)
        height, width = data['data_samples'][0].img_shape[:2]
        yield data['inputs'][:, :, :height, :width].numpy()
