"""Photo queries: load an investigator's photo and find the one person to search for in it.

The person is cut exactly as sightings cut their crops (the detector box clipped to the image),
so the query crop and the gallery crops look alike to the embedder.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from detectors.base import Detector
from ingest.errors import BaqylauError
from ingest.frame import check_array

logger = logging.getLogger(__name__)

#: Largest photo file accepted, bytes: phone photos are 2-8 MB; more is a video still, a scan or
#: an attack on the decoder.
MAX_PHOTO_BYTES = 20 * 1024 * 1024
#: Longest photo side accepted, px: 8000 covers 48-megapixel phone cameras; a decoded
#: 8000 x 8000 BGR image is 192 MB.
MAX_SIDE_PX = 8000
#: Height/width ratios of a photo that is probably already a tight crop of one standing person
#: (a COCO person box is typically 2-3 times taller than wide); such a photo without a detection
#: gets the ``--whole-image`` hint instead of a guess.
PERSON_ASPECT_RANGE = (1.5, 4.5)


class PhotoQueryError(BaqylauError, ValueError):
    """A photo cannot be used as a query (corrupt, oversized, bad ``choose``)."""


class PhotoFileError(BaqylauError, OSError):
    """A photo file does not exist or cannot be read."""


class NoPersonError(PhotoQueryError):
    """No person was detected in the photo."""


@dataclass(frozen=True, slots=True)
class PersonBox:
    """One detected person of a photo.

    Attributes:
        index: Position in :attr:`PhotoPerson.boxes` (largest box first); what ``choose`` takes.
        xyxy: `(4,)` float32 box in photo px (origin top-left, y down).
        conf: Detection confidence in [0, 1].
    """

    index: int
    xyxy: np.ndarray
    conf: float

    def describe(self) -> str:
        """One line such as ``#0 box (12, 30, 140, 410) conf 0.91``."""
        x0, y0, x1, y1 = (int(round(float(v))) for v in self.xyxy)
        return f"#{self.index} box ({x0}, {y0}, {x1}, {y1}) conf {self.conf:.2f}"


class SeveralPeopleError(PhotoQueryError):
    """Several people were detected and none was chosen.

    Attributes:
        boxes: Every detected person, largest first; pass one's ``index`` as ``choose``.
    """

    def __init__(self, boxes: Sequence[PersonBox]) -> None:
        self.boxes = tuple(boxes)
        lines = "; ".join(b.describe() for b in self.boxes)
        super().__init__(f"{len(self.boxes)} people in the photo, choose one with --person N: {lines}")


@dataclass(frozen=True, slots=True)
class PhotoPerson:
    """The person to search for.

    Attributes:
        crop: `(h, w, 3)` uint8 BGR pixels of the person (a copy).
        xyxy: `(4,)` float32 box of the crop in photo px.
        conf: Detection confidence, or ``None`` when the whole photo was used.
        boxes: Every person detected in the photo, largest first (empty for a whole image).
    """

    crop: np.ndarray
    xyxy: np.ndarray
    conf: float | None
    boxes: tuple[PersonBox, ...]


def load_photo(path: str | os.PathLike, *, max_bytes: int = MAX_PHOTO_BYTES,
               max_side_px: int = MAX_SIDE_PX) -> np.ndarray:
    """Read an uploaded photo (any format OpenCV decodes: JPEG, PNG, WebP, ...).

    The file size is checked before reading it; EXIF orientation is applied by OpenCV.

    Returns:
        `(H, W, 3)` uint8 BGR.

    Raises:
        PhotoFileError: The file does not exist or cannot be read.
        PhotoQueryError: Larger than ``max_bytes``, not a decodable image, or a side longer than
            ``max_side_px``.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > max_bytes:
            raise PhotoQueryError(f"photo {p} is {size / 1e6:.1f} MB, more than the {max_bytes / 1e6:.0f} MB "
                                  f"accepted; send a smaller JPEG")
        data = p.read_bytes()
    except OSError as exc:
        raise PhotoFileError(f"cannot read photo {p}: {exc.strerror or exc}") from exc
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if image is None:
        raise PhotoQueryError(f"photo {p} is not a readable image (corrupt or unsupported format)")
    if max(image.shape[:2]) > max_side_px:
        raise PhotoQueryError(f"photo {p} is {image.shape[1]}x{image.shape[0]} px; the longest side may be "
                              f"{max_side_px} px")
    return image


def person_from_photo(image_bgr: np.ndarray, detector: Detector | None, *, choose: int | None = None,
                      min_conf: float = 0.3, whole_image: bool = False) -> PhotoPerson:
    """Detect the people in a photo and return the one to search for.

    Args:
        image_bgr: `(H, W, 3)` uint8 BGR photo (:func:`load_photo`).
        detector: Person detector (e.g. ``YoloxOnnxDetector``); its class named ``"person"``
            (COCO class 0) is used. May be ``None`` with ``whole_image``.
        choose: Index into the boxes sorted by area, largest first, when there are several.
        min_conf: Least detection confidence of a person. Lower accepts blurred or partly
            hidden people but also false boxes that would force the investigator to choose.
        whole_image: Use the whole photo as the crop without detecting (for a photo that is
            already cut tight around the person).

    Returns:
        The person's crop, box and confidence, and every detected box.

    Raises:
        ShapeError: ``image_bgr`` is not `(H, W, 3)` uint8.
        NoPersonError: No person at ``min_conf`` (with a ``--whole-image`` hint when the photo's
            shape is that of a tight person crop).
        SeveralPeopleError: Several people and ``choose`` is ``None``; lists the boxes.
        PhotoQueryError: ``choose`` out of range, no detector, or the detector has no "person" class.
    """
    check_array("image_bgr", image_bgr, 3, np.uint8, (None, None, 3))
    img_h, img_w = image_bgr.shape[:2]
    if whole_image:
        return PhotoPerson(image_bgr.copy(), np.array([0, 0, img_w, img_h], np.float32), None, ())
    if detector is None:
        raise PhotoQueryError("a person detector is needed unless whole_image=True")
    names = tuple(detector.class_names)
    if "person" not in names:
        raise PhotoQueryError(f"detector {detector.name} has no 'person' class")
    person = names.index("person")
    (dets,) = detector.detect([image_bgr], ["photo"])
    keep = (dets.class_id == person) & (dets.conf >= min_conf)
    xyxy = np.clip(dets.xyxy[keep], 0, [img_w, img_h, img_w, img_h]).astype(np.float32)
    conf = dets.conf[keep]
    area = (xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1])
    order = np.argsort(-area, kind="stable")
    boxes = tuple(PersonBox(i, xyxy[j], float(conf[j])) for i, j in enumerate(order) if area[j] > 0)
    if not boxes:
        hint = ""
        if PERSON_ASPECT_RANGE[0] <= img_h / img_w <= PERSON_ASPECT_RANGE[1]:
            hint = (" The photo is shaped like a crop of one standing person: if it is, search with "
                    "--whole-image to use it as it is.")
        raise NoPersonError(f"no person detected in the {img_w}x{img_h} photo (confidence >= {min_conf}).{hint}")
    if choose is None:
        if len(boxes) > 1:
            raise SeveralPeopleError(boxes)
        choose = 0
    if not 0 <= choose < len(boxes):
        raise PhotoQueryError(f"--person {choose} is out of range: the photo has {len(boxes)} people "
                              f"({'; '.join(b.describe() for b in boxes)})")
    box = boxes[choose]
    x0, y0 = int(np.floor(box.xyxy[0])), int(np.floor(box.xyxy[1]))
    x1, y1 = int(np.ceil(box.xyxy[2])), int(np.ceil(box.xyxy[3]))
    logger.info("photo query: person %s of %d chosen", box.describe(), len(boxes))
    return PhotoPerson(image_bgr[y0:y1, x0:x1].copy(), box.xyxy.copy(), box.conf, boxes)
