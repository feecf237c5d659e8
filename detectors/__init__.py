"""Object detectors: a common interface, YOLOX on onnxruntime, and a motion fallback."""

from detectors.base import Detector, DetectorError, ModelNotFoundError
from detectors.coco import COCO80, PERSON, load_class_names
from detectors.motion import MotionDetector
from detectors.types import Detections
from detectors.yolox import YoloxOnnxDetector

__all__ = [
    "COCO80",
    "PERSON",
    "Detections",
    "Detector",
    "DetectorError",
    "ModelNotFoundError",
    "MotionDetector",
    "YoloxOnnxDetector",
    "load_class_names",
]
