import logging
import os
import sys
import tempfile
from typing import IO, Optional, Tuple

from mmcv.transforms import LoadImageFromFile as MMCVLoadImageFromFile
from mmengine.logging import print_log

from mmdet_cdetr.registry import TRANSFORMS
from ..annotation_checks import AnnotationError

IGNORE_ORIENTATION = '_ignore_orientation'
JPEG_SUFFIXES = ('.jpg', '.jpeg', '.jpe')
# How libjpeg's warnings begin (it prints them to the process's stderr
# without the file's name): "Corrupt JPEG data: 1623 extraneous bytes
# before marker 0xd9", "Premature end of JPEG file", ...
JPEG_WARNINGS = ('Corrupt JPEG data', 'Premature end of JPEG file',
                 'Invalid SOS parameters', 'Warning: unknown JFIF')


class ImageSizeError(AnnotationError):
    """An image decodes in neither orientation to its annotated size."""


class DamagedImageError(AnnotationError):
    """A JPEG decodes only with the decoder's corrupt-data warnings."""


class _DecoderOutput:
    """What the C decoder prints to the process's stderr (file
    descriptor 2) meanwhile, captured in a file of this process; anything
    else printed there meanwhile is passed on."""
    _file: Optional[IO[bytes]] = None
    _pid = -1

    def __enter__(self) -> '_DecoderOutput':
        if _DecoderOutput._pid != os.getpid():  # a new (worker) process
            _DecoderOutput._file = tempfile.TemporaryFile()
            _DecoderOutput._pid = os.getpid()
        self.text = ''
        sys.stderr.flush()
        self._saved = os.dup(2)
        os.dup2(self._file.fileno(), 2)
        return self

    def __exit__(self, *exc_info) -> None:
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._file.seek(0)
        self.text = self._file.read().decode(errors='replace')
        self._file.seek(0)
        self._file.truncate()

    def split(self) -> Tuple[str, str]:
        """The decoder's warnings (one line), and the other output."""
        lines = self.text.splitlines(keepends=True)
        ours = [line for line in lines if line.startswith(JPEG_WARNINGS)]
        others = ''.join(line for line in lines if line not in ours)
        return '; '.join(line.strip() for line in ours), others


@TRANSFORMS.register_module(
    name=['CheckedLoadImageFromFile', 'LoadImageFromFile'])
class CheckedLoadImageFromFile(MMCVLoadImageFromFile):
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

    A JPEG with damaged data (bytes scrambled or cut mid-file) still
    decodes, with libjpeg's "Corrupt JPEG data" on stderr naming no file.
    Its warnings are caught here and reported with the image's name, the
    first and then every tenfold count per process, as the reoriented
    images are; with ``refuse_damaged=True`` such an image is a
    :class:`DamagedImageError` instead.

    Args:
        refuse_damaged: Stop at a JPEG that decodes only with warnings.
    """

    def __init__(self, *args, refuse_damaged: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.refuse_damaged = refuse_damaged
        self.reoriented = 0
        self.damaged = 0

    def transform(self, results: dict) -> Optional[dict]:
        expected = (results.get('height'), results.get('width'))
        loaded = self._decode(results)
        if loaded is None or None in expected or (loaded['img'].shape[:2]
                                                  == expected):
            return loaded
        sizes = [_size(loaded['img'].shape[:2])]
        other = self._other_orientation()
        if other is not None:
            flag, self.color_type = self.color_type, other
            try:
                again = self._decode(dict(results), report=False)
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

    def _decode(self, results: dict, report: bool = True) -> Optional[dict]:
        """mmcv's decoding, with a JPEG's decoder warnings named (unless
        ``report`` is False: a second decoding of the same file)."""
        path = str(results.get('img_path', ''))
        if self.imdecode_backend != 'cv2' or not path.lower().endswith(
                JPEG_SUFFIXES):
            return super().transform(results)
        with _DecoderOutput() as output:
            loaded = super().transform(results)
        warning, others = output.split()
        if others:
            sys.stderr.write(others)
        if warning and report:
            self._report_damaged(path, warning)
        return loaded

    def _report_damaged(self, path: str, warning: str) -> None:
        if self.refuse_damaged:
            raise DamagedImageError(
                f'image {path} is damaged (the JPEG decoder says: '
                f'{warning}): replace it, or remove it from the annotation '
                'file')
        self.damaged += 1
        if self.damaged == 1 or self.damaged in (10, 100, 1000, 10000):
            print_log(
                f'{self.damaged} damaged JPEG image(s) decoded anyway in '
                f'this process (latest: {path}: {warning}); the damaged '
                'part of an image is grey or smeared: replace such images, '
                'or set refuse_damaged=True in LoadImageFromFile to stop '
                'at them',
                logger='current',
                level=logging.WARNING)

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
