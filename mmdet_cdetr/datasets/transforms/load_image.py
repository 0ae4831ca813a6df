import logging
from typing import Optional

from mmcv.transforms import LoadImageFromFile as MMCVLoadImageFromFile
from mmengine.logging import print_log

from mmdet_cdetr.registry import TRANSFORMS
from ..annotation_checks import AnnotationError

IGNORE_ORIENTATION = '_ignore_orientation'


class ImageSizeError(AnnotationError):
    """An image decodes in neither orientation to its annotated size."""


@TRANSFORMS.register_module()
class LoadImageFromFile(MMCVLoadImageFromFile):
    """mmcv's ``LoadImageFromFile`` (same arguments), decoding an image in
    the orientation its annotation's ``width`` and ``height`` describe.

    A JPEG with an EXIF orientation tag is stored in one orientation and
    shown in another; annotation tools list either size, and the boxes are
    drawn on that one. mmcv decodes with the tag applied (``color``), so a
    file annotated in stored pixels is trained on rotated, its boxes off
    the objects. Here, when the decoded size differs from the annotated
    one, the image is decoded again with the tag ignored (or applied, for
    an ``*_ignore_orientation`` ``color_type``), and kept if that matches;
    each process reports the first such image by name and counts the rest.
    An image that matches in neither orientation is an
    :class:`ImageSizeError` naming the file and both sizes, since its boxes
    cannot be trusted. Without an annotated size (inference) nothing is
    checked. Shadows mmcv's transform in the ``mmdet_cdetr`` scope.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.reoriented = 0

    def transform(self, results: dict) -> Optional[dict]:
        expected = (results.get('height'), results.get('width'))
        loaded = super().transform(results)
        if loaded is None or None in expected or (loaded['img'].shape[:2]
                                                  == expected):
            return loaded
        sizes = [_size(loaded['img'].shape[:2])]
        other = self._other_orientation()
        if other is not None:
            flag, self.color_type = self.color_type, other
            try:
                again = super().transform(dict(results))
            finally:
                self.color_type = flag
            if again['img'].shape[:2] == expected:
                self._report(again['img_path'], other)
                return again
            if again['img'].shape[:2] != loaded['img'].shape[:2]:
                sizes.append(f'{_size(again["img"].shape[:2])} with its EXIF '
                             f'orientation {_how(other)}')
        raise ImageSizeError(
            f'image {results["img_path"]} decodes as {" or ".join(sizes)} '
            f'(width x height), but its annotation lists {_size(expected)}: '
            'correct its width and height (and boxes) in the annotation '
            'file')

    def _other_orientation(self) -> Optional[str]:
        if self.color_type.endswith(IGNORE_ORIENTATION):
            return self.color_type[:-len(IGNORE_ORIENTATION)]
        if self.color_type in ('color', 'grayscale'):
            return self.color_type + IGNORE_ORIENTATION
        return None

    def _report(self, path: str, flag: str) -> None:
        self.reoriented += 1
        if self.reoriented == 1 or self.reoriented in (10, 100, 1000, 10000):
            print_log(
                f'{self.reoriented} image(s) decoded with their EXIF '
                f'orientation {_how(flag)} to match the annotated width '
                f'and height in this process (latest: {path})',
                logger='current',
                level=logging.WARNING)


def _how(flag: str) -> str:
    return 'ignored' if flag.endswith(IGNORE_ORIENTATION) else 'applied'


def _size(height_width) -> str:
    height, width = height_width
    return f'{width}x{height}'
