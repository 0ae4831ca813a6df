from typing import Optional

import torch
from mmdet.structures import SampleList
from mmengine.config import ConfigDict
from mmengine.model import BaseModel
from mmengine.structures import InstanceData
from torch import Tensor

from mmdet_cdetr.models.dense_heads import boxes_to_original
from mmdet_cdetr.registry import MODELS
from mmdet_cdetr.utils.errors import ConfigError
from .ort_runner import OrtRunner


@MODELS.register_module()
class ONNXRuntimeDetector(BaseModel):
    """An exported ``.onnx`` detector in the place of the PyTorch model, so
    that MMEngine's test loop, mmdet's ``CocoMetric``, visualisation hook
    and ``DetInferencer`` run it unchanged.

    A file exported with ``--batch-size`` runs the whole padded batch in
    one call, with each image's ``img_shape``; otherwise each image is
    cropped to its ``img_shape`` (the batch padding removed) and run alone.
    Either way every image gets the detections it gets alone, and its boxes
    are scaled back to the original image as the PyTorch head does with
    ``rescale=True``.

    Args:
        onnx_file: A file written by ``tools/deployment/pytorch2onnx.py``.
        num_classes: The config's class count; refused when the file was
            exported for another.
        data_preprocessor: The config's ``model.data_preprocessor``.
        **runner_kwargs: :class:`OrtRunner`'s options.
    """

    def __init__(self,
                 onnx_file: str,
                 num_classes: Optional[int] = None,
                 data_preprocessor: Optional[dict] = None,
                 **runner_kwargs) -> None:
        super().__init__(data_preprocessor=data_preprocessor)
        self.runner = OrtRunner(onnx_file, **runner_kwargs)
        exported = self.runner.num_classes
        if None not in (num_classes, exported) and num_classes != exported:
            raise ConfigError(
                f'{onnx_file} was exported for {exported} classes, but the '
                f'config has model.bbox_head.num_classes={num_classes}: use '
                'the config the model was exported from')

    def forward(self,
                inputs: Tensor,
                data_samples: SampleList,
                mode: str = 'predict') -> SampleList:
        if mode != 'predict':
            raise ValueError(f'an ONNX Runtime detector only predicts, '
                             f'mode={mode!r} is not supported')
        shapes = [sample.img_shape[:2] for sample in data_samples]
        if self.runner.batched:
            outputs = zip(*self.runner(inputs, shapes))
        else:
            outputs = ([
                output[0] for output in self.runner(image[None, :, :h, :w])
            ] for image, (h, w) in zip(inputs, shapes))
        for sample, (dets, labels) in zip(data_samples, outputs):
            dets = torch.from_numpy(dets)
            bboxes = dets[:, :4]
            if 'scale_factor' in sample:
                bboxes = boxes_to_original(bboxes, sample.scale_factor)
            sample.pred_instances = InstanceData(
                bboxes=bboxes,
                scores=dets[:, 4],
                labels=torch.from_numpy(labels))
        return data_samples


def onnxruntime_detector_cfg(model_cfg: ConfigDict, onnx_file: str,
                             **runner_kwargs) -> ConfigDict:
    """The config of :class:`ONNXRuntimeDetector` that stands in for the
    model of ``model_cfg`` (its data preprocessor and class count)."""
    return ConfigDict(
        type='ONNXRuntimeDetector',
        onnx_file=onnx_file,
        num_classes=model_cfg.bbox_head.num_classes,
        data_preprocessor=model_cfg.data_preprocessor,
        **runner_kwargs)
