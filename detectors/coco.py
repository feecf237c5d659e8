"""COCO class names, and a reader for class-name files."""

from __future__ import annotations

from pathlib import Path

#: The 80 COCO 2017 detection categories in the contiguous 0-79 order used by YOLOX, YOLOv5/8
#: and most exported detectors (0 = person). Source: the category list of the COCO 2017
#: detection annotations (cocodataset.org, ``instances_val2017.json``), ids 1-90 with gaps,
#: renumbered contiguously; identical to YOLOX ``yolox/data/datasets/coco_classes.py``.
COCO80: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)

#: Class id of "person" in :data:`COCO80`.
PERSON = 0


def load_class_names(path: str | Path) -> tuple[str, ...]:
    """Read class names, one per line (blank lines and surrounding spaces ignored).

    Args:
        path: UTF-8 text file; line k (0-based, blank lines skipped) names class id k.

    Returns:
        The names in file order.

    Raises:
        FileNotFoundError: When the file does not exist.
        ValueError: When the file holds no names.
    """
    names = tuple(line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()
                  if line.strip())
    if not names:
        raise ValueError(f"{path}: no class names found")
    return names
