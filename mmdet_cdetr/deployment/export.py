import warnings
from typing import Tuple

import torch
from torch import nn

from mmdet_cdetr.utils.torch_compat import onnx_export_options
from mmdet_cdetr.version import __version__
from .batched_end2end import BatchedEnd2EndDetector
from .end2end import End2EndDetector
from .ort_runner import IMG_SHAPE_NAME, INPUT_NAME, OUTPUT_NAMES


def export_onnx(detector: nn.Module,
                out_file: str,
                shape: Tuple[int, int] = (800, 1216),
                opset: int = 17,
                simplify: bool = False,
                batch_size: int = 1) -> None:
    """Write ``detector`` as one ONNX graph, preprocessed image in,
    final detections out (:class:`End2EndDetector`), image height and width
    dynamic.

    The graph is traced at ``shape``; the class count and ``max_per_img``
    are stored in the file's metadata, so that a runner can refuse a config
    for another class count. ``simplify`` folds the exporter's shape
    arithmetic with onnxslim (about 60% fewer nodes for R50), for runtimes and
    readers that do not fold it themselves; ONNX Runtime does.

    ``batch_size`` > 1 exports :class:`BatchedEnd2EndDetector` instead
    (traced at that many images): a dynamic batch axis and a second input,
    ``img_shape`` (B, 2) int64, each image's valid height and width in the
    padded batch.
    """
    import onnx
    batched = batch_size > 1
    detector.eval()
    wrapper = (BatchedEnd2EndDetector(detector)
               if batched else End2EndDetector(detector)).eval()
    dummy = torch.zeros(batch_size, 3, *shape)
    args = (dummy,
            torch.tensor([shape] * batch_size)) if batched else (dummy, )
    input_names = [INPUT_NAME, IMG_SHAPE_NAME] if batched else [INPUT_NAME]
    dynamic_axes = {INPUT_NAME: {2: 'height', 3: 'width'}}
    if batched:
        dynamic_axes[INPUT_NAME][0] = 'batch'
        for name in [IMG_SHAPE_NAME, *OUTPUT_NAMES]:
            dynamic_axes[name] = {0: 'batch'}
    with torch.no_grad(), warnings.catch_warnings():
        # Tracer warnings about shapes turned into constants: the branches
        # they guard take the same way at every image size (tested).
        warnings.simplefilter('ignore', torch.jit.TracerWarning)
        warnings.filterwarnings('ignore', 'Constant folding - Only steps=1')
        torch.onnx.export(
            wrapper,
            args,
            out_file,
            input_names=input_names,
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
            **onnx_export_options())
    model = onnx.load(out_file)
    if simplify:
        import onnxslim
        model = onnxslim.slim(model)
    onnx.helper.set_model_props(
        model,
        dict(
            num_classes=str(detector.bbox_head.num_classes),
            max_per_img=str(wrapper.max_per_img),
            exporter=f'mmdet_cdetr {__version__}'))
    onnx.checker.check_model(model)
    onnx.save(model, out_file)
