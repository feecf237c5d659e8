"""Object detectors: a common interface, YOLOX on ONNX Runtime, a motion fallback, zone rules.

The model classes are imported lazily (PEP 562 ``__getattr__``), so importing the light
``detectors.types`` from another stage does not load ONNX Runtime.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from detectors.base import Detector, DetectorError, ModelNotFoundError
from detectors.coco import COCO80, PERSON, load_class_names
from detectors.types import Detections

_LAZY = {
    "MotionDetector": "detectors.motion",
    "YoloxOnnxDetector": "detectors.yolox",
    "ZoneRule": "detectors.zone_rules",
    "ZoneRuleEngine": "detectors.zone_rules",
    "RuleEvent": "detectors.zone_rules",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'detectors' has no attribute {name!r}")


__all__ = [
    "COCO80",
    "PERSON",
    "Detections",
    "Detector",
    "DetectorError",
    "ModelNotFoundError",
    "MotionDetector",
    "RuleEvent",
    "YoloxOnnxDetector",
    "ZoneRule",
    "ZoneRuleEngine",
    "load_class_names",
]
