"""Export to ONNX and inference with ONNX Runtime.

onnx and onnxruntime (``pip install -e ".[deploy]"``) are imported only
when a file is exported or run.
"""
from .batched_end2end import BatchedEnd2EndDetector
from .end2end import End2EndDetector
from .export import export_onnx
from .onnxruntime_detector import ONNXRuntimeDetector, onnxruntime_detector_cfg
from .ort_runner import OPTIMIZATION_LEVELS, OrtRunner
from .quantize import calibration_images, quantize_int8
from .verify import compare_detections, random_image, verify_export

__all__ = [
    'BatchedEnd2EndDetector', 'End2EndDetector', 'ONNXRuntimeDetector',
    'OPTIMIZATION_LEVELS', 'OrtRunner', 'calibration_images',
    'compare_detections', 'export_onnx', 'onnxruntime_detector_cfg',
    'quantize_int8', 'random_image', 'verify_export'
]
