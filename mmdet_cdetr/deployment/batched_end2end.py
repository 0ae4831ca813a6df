from contextlib import contextmanager
from typing import Dict, Iterator, Tuple

import torch
from torch import Tensor, nn

from mmdet_cdetr.models.dense_heads import top_k_detections
from .end2end import End2EndDetector

# Layers that mix neighbouring pixels: they see the batch padding.
_SPATIAL_LAYERS = (nn.Conv2d, nn.MaxPool2d)
# Side of the square image the strides are probed at (a power of two at
# least twice the backbone's largest stride).
_PROBE_SIZE = 256


class BatchedEnd2EndDetector(End2EndDetector):
    """:class:`End2EndDetector` for a batch of images of different sizes,
    zero-padded to one (B, 3, H, W) input, that gives every image the
    detections it gets alone.

    Padding changes a DETR's result in two ways, both undone here from the
    per-image valid sizes ``img_shape`` (B, 2) (height, width), an input of
    the graph:

    * the backbone's convolutions and pooling near an image's bottom and
      right edges would read the padding's activations (after the first
      layer they are no longer zero): the input of every such layer is
      multiplied by the image's valid-pixel mask at that layer's stride, so
      it reads zeros there, as the image's own zero padding alone;
    * the transformer gets the padding mask at the feature stride (keys
      masked out, sine positions normalised by each image's extent), as
      mmdet's DETR builds it for a padded batch.

    Valid extents at stride s are ``ceil(h / s)``: the mask is the input
    mask sampled every s pixels, so no branch depends on the sizes and the
    batch, height and width stay dynamic in the exported graph.

    Outputs: ``dets`` (B, K, 5) and ``labels`` (B, K), each image's boxes in
    its own pixels (clipped to its ``img_shape``).
    """

    def __init__(self, detector: nn.Module) -> None:
        super().__init__(detector)
        self.layer_strides, self.feature_stride = self._probe_strides()

    @torch.no_grad()
    def _probe_strides(self) -> Tuple[Dict[nn.Module, int], int]:
        """The stride of each spatial layer's input in the backbone, and of
        the features, from one forward pass at :data:`_PROBE_SIZE`."""
        heights = {}

        def record(layer: nn.Module, args: tuple) -> None:
            heights.setdefault(layer, args[0].shape[-2])

        hooks = [
            layer.register_forward_pre_hook(record)
            for layer in self.detector.backbone.modules()
            if isinstance(layer, _SPATIAL_LAYERS)
        ]
        try:
            probe = torch.zeros(1, 3, _PROBE_SIZE, _PROBE_SIZE)
            feature = self.detector.extract_feat(probe)[-1]
        finally:
            for hook in hooks:
                hook.remove()
        strides = {layer: _PROBE_SIZE // h for layer, h in heights.items()}
        return strides, _PROBE_SIZE // feature.shape[-2]

    @contextmanager
    def _masked_backbone(self, valid: Tensor) -> Iterator[None]:
        """Zero the padding in the input of every spatial backbone layer."""

        def zero_padding(layer: nn.Module, args: tuple) -> tuple:
            stride = self.layer_strides[layer]
            mask = valid[:, None, ::stride, ::stride].to(args[0].dtype)
            return (args[0] * mask, ) + args[1:]

        hooks = [
            layer.register_forward_pre_hook(zero_padding)
            for layer in self.layer_strides
        ]
        try:
            yield
        finally:
            for hook in hooks:
                hook.remove()

    def forward(self, inputs: Tensor,
                img_shape: Tensor) -> Tuple[Tensor, Tensor]:
        detector = self.detector
        # Row and column indices as cumulative sums: no size-dependent op.
        ones = torch.ones_like(inputs[:, 0])
        rows, cols = ones.cumsum(1) - 1, ones.cumsum(2) - 1
        img_shape = img_shape.to(inputs.dtype)
        valid = ((rows < img_shape[:, 0, None, None]) &
                 (cols < img_shape[:, 1, None, None]))
        with self._masked_backbone(valid):
            feat = detector.extract_feat(inputs)[-1]
        stride = self.feature_stride
        masks = ~valid[:, ::stride, ::stride]
        pos_embed = detector.positional_encoding(masks)
        feat = feat.flatten(2).transpose(1, 2)
        pos_embed = pos_embed.flatten(2).transpose(1, 2)
        masks = masks.flatten(1)
        encoder_out = detector.forward_encoder(
            feat=feat, feat_mask=masks, feat_pos=pos_embed)
        decoder_in, head_inputs = detector.pre_decoder(**encoder_out)
        head_inputs.update(
            detector.forward_decoder(
                memory_mask=masks, memory_pos=pos_embed, **decoder_in))
        cls_scores, bbox_preds = detector.bbox_head(
            head_inputs['hidden_states'][-1:], head_inputs['references'])
        bboxes, scores, labels = top_k_detections(cls_scores[-1],
                                                  bbox_preds[-1],
                                                  img_shape.flip(-1),
                                                  self.max_per_img,
                                                  self.use_sigmoid)
        return torch.cat([bboxes, scores[..., None]], dim=-1), labels
