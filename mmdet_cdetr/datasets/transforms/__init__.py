from .load_image import ImageSizeError, LoadImageFromFile

__all__ = ['ImageSizeError', 'LoadImageFromFile']
