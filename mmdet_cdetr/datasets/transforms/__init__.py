from .load_image import CheckedLoadImageFromFile, ImageSizeError

__all__ = ['ImageSizeError', 'CheckedLoadImageFromFile']
