import os.path as osp
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
from torch import Tensor

from mmdet_cdetr.utils.errors import (ArgumentError, CheckpointError,
                                      InputNotFoundError)

# The exported graph's names (mmdeploy's detection convention).
INPUT_NAME = 'input'
OUTPUT_NAMES = ('dets', 'labels')
# The second input of a batched export: valid (height, width) per image.
IMG_SHAPE_NAME = 'img_shape'

# Short names of ONNX Runtime's graph optimisation levels.
OPTIMIZATION_LEVELS = dict(
    disable='ORT_DISABLE_ALL',
    basic='ORT_ENABLE_BASIC',
    extended='ORT_ENABLE_EXTENDED',
    layout='ORT_ENABLE_LAYOUT',
    all='ORT_ENABLE_ALL')


def import_onnxruntime():
    """onnxruntime, or an error saying how to install it."""
    try:
        import onnxruntime
    except ImportError as err:
        raise ImportError('ONNX Runtime is not installed: pip install -e '
                          '".[deploy]" (pinned onnx and onnxruntime)') from err
    return onnxruntime


class OrtRunner:
    """A detector exported by ``tools/deployment/pytorch2onnx.py`` in an
    ONNX Runtime session: one preprocessed image (or, for a file exported
    with ``--batch-size``, a padded batch and each image's size) in, ``dets``
    and ``labels`` out.

    Args:
        onnx_file: The exported model.
        optimization: ONNX Runtime's graph optimisation level, one of
            :data:`OPTIMIZATION_LEVELS` (``layout`` adds layout changes such
            as the CPU's blocked NCHWc convolutions to ``extended``'s
            fusions, ``all`` everything).
        threads: Intra-op threads (default: ONNX Runtime's, one per
            physical core).
        providers: Execution providers, default the CPU's.
    """

    def __init__(self,
                 onnx_file: str,
                 optimization: str = 'all',
                 threads: Optional[int] = None,
                 providers: Sequence[str] = ('CPUExecutionProvider', )):
        ort = import_onnxruntime()
        if not osp.isfile(onnx_file):
            raise InputNotFoundError(f'ONNX file not found: {onnx_file}')
        if optimization not in OPTIMIZATION_LEVELS:
            raise ArgumentError(
                f'unknown graph optimisation {optimization!r}, '
                f'expected one of {list(OPTIMIZATION_LEVELS)}')
        options = ort.SessionOptions()
        options.graph_optimization_level = getattr(
            ort.GraphOptimizationLevel, OPTIMIZATION_LEVELS[optimization])
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3  # errors only
        try:
            self.session = ort.InferenceSession(
                onnx_file, options, providers=list(providers))
        except Exception as err:  # ORT's own classes, not builtins
            if type(err).__module__.startswith('onnxruntime'):
                raise CheckpointError(
                    f'{onnx_file} is not a valid ONNX model: '
                    f'{str(err).splitlines()[0]}') from err
            raise
        inputs = [node.name for node in self.session.get_inputs()]
        outputs = [node.name for node in self.session.get_outputs()]
        if (inputs not in ([INPUT_NAME], [INPUT_NAME, IMG_SHAPE_NAME])
                or tuple(outputs) != OUTPUT_NAMES):
            raise CheckpointError(
                f'{onnx_file} has inputs {inputs} and outputs {outputs}, '
                f'not [{INPUT_NAME!r}] (or [{INPUT_NAME!r}, '
                f'{IMG_SHAPE_NAME!r}]) and {list(OUTPUT_NAMES)}: it was not '
                'exported by tools/deployment/pytorch2onnx.py')
        self.batched = IMG_SHAPE_NAME in inputs
        self.onnx_file = onnx_file
        self.metadata: Dict[str, str] = (
            self.session.get_modelmeta().custom_metadata_map)

    @property
    def num_classes(self) -> Optional[int]:
        """Class count the model was exported with (from its metadata)."""
        value = self.metadata.get('num_classes')
        return None if value is None else int(value)

    def __call__(
        self,
        inputs: Union[np.ndarray, Tensor],
        img_shape: Optional[Sequence[Sequence[int]]] = None
    ) -> Tuple[np.ndarray, np.ndarray]:
        """Detect in one preprocessed image, or in each image of a padded
        batch (batched files only).

        Args:
            inputs: (B, 3, H, W) float, the data preprocessor's output; B is
                1 unless the file is batched.
            img_shape: (B, 2) each image's (height, width) in ``inputs``
                (batched files only; default: each fills the input).

        Returns:
            tuple: ``dets`` (B, K, 5) and ``labels`` (B, K), see
            :class:`~.End2EndDetector`.
        """
        if isinstance(inputs, Tensor):
            inputs = inputs.detach().cpu().numpy()
        inputs = np.ascontiguousarray(inputs, dtype=np.float32)
        if (inputs.ndim != 4 or inputs.shape[1] != 3
                or not self.batched and inputs.shape[0] != 1):
            expected = ('preprocessed images of shape (B, 3, H, W)'
                        if self.batched else
                        'one preprocessed image of shape (1, 3, H, W)')
            raise ArgumentError(f'input of shape {tuple(inputs.shape)}: '
                                f'{self.onnx_file} takes {expected}')
        feeds = {INPUT_NAME: inputs}
        if self.batched:
            if img_shape is None:
                img_shape = [inputs.shape[2:]] * len(inputs)
            feeds[IMG_SHAPE_NAME] = np.asarray(img_shape, dtype=np.int64)
        elif img_shape is not None:
            raise ArgumentError(f'{self.onnx_file} takes one image, no sizes: '
                                'export with --batch-size for batches')
        dets, labels = self.session.run(list(OUTPUT_NAMES), feeds)
        return dets, labels
