"""Annotated alert snapshots: the frame with the zone, the boxes and a title, as a JPEG."""

from __future__ import annotations

import logging
import os
import tempfile
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from ingest.errors import BaqylauError, ShapeError
from ingest.frame import check_array

logger = logging.getLogger(__name__)

ZONE_COLOR_BGR = (0, 200, 255)    # amber
BOX_COLOR_BGR = (0, 0, 255)       # red
ZONE_FILL_ALPHA = 0.25            # zone fill opacity: visible yet leaves the scene readable

# Cyrillic (Russian + Kazakh letters) to Latin, after the Kazakh Latin alphabet of 2021 where it
# differs from plain Russian transliteration; enough for camera and street names.
_CYRILLIC = dict(zip(
    "абвгдеёжзийклмнопрстуфхцчшщъыьэюяәғқңөұүһі",
    ["a", "b", "v", "g", "d", "e", "e", "zh", "z", "i", "i", "k", "l", "m", "n", "o", "p", "r",
     "s", "t", "u", "f", "kh", "ts", "ch", "sh", "shch", "", "y", "", "e", "iu", "ia",
     "a", "g", "q", "n", "o", "u", "u", "h", "i"], strict=True))


class SnapshotError(BaqylauError, OSError):
    """A snapshot cannot be encoded or written (unwritable directory, encoder failure)."""


def to_ascii(text: str) -> str:
    """Make text drawable by ``cv2.putText``, which only has glyphs for ASCII.

    Cyrillic (Russian and Kazakh) is transliterated, Latin accents are stripped (Unicode NFKD),
    and any other non-ASCII character is dropped.
    """
    out = []
    for ch in text:
        low = ch.lower()
        if low in _CYRILLIC:
            lat = _CYRILLIC[low]
            out.append(lat.capitalize() if ch != low else lat)
        else:
            out.append(unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode())
    return "".join(out)


def _put_label(img: np.ndarray, text: str, org: tuple[int, int], scale: float, thick: int,
               color: tuple[int, int, int]) -> None:
    """Draw white text on a filled ``color`` background, bottom-left at ``org``, kept in the image."""
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    h, w = img.shape[:2]
    x = int(min(max(org[0], 0), max(w - tw, 0)))
    y = int(min(max(org[1], th + base), h - 1))
    cv2.rectangle(img, (x, y - th - base), (x + tw, y), color, cv2.FILLED)
    cv2.putText(img, text, (x, y - base), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick,
                cv2.LINE_AA)


def render_snapshot(image: np.ndarray, xyxy: np.ndarray, labels: Sequence[str],
                    zone_polygon_px: np.ndarray | None = None, title: str | None = None) -> np.ndarray:
    """Return an annotated copy of ``image`` (the input is never modified).

    Args:
        image: `(H, W, 3)` uint8 BGR frame.
        xyxy: `(M, 4)` pixel boxes, origin top-left.
        labels: M strings drawn above the boxes, e.g. ``"person #12 0.87"``.
        zone_polygon_px: `(K, 2)` pixel polygon drawn with a translucent fill and an outline,
            or ``None``.
        title: Line drawn at the top left (camera name, time), or ``None``. Non-ASCII text
            goes through :func:`to_ascii` because OpenCV's Hershey fonts have no other glyphs.

    Returns:
        `(H, W, 3)` uint8 BGR image.

    Raises:
        ShapeError: For arrays of the wrong shape, or a label count different from M.
    """
    check_array("image", image, 3, np.uint8, (None, None, 3))
    boxes = np.asarray(xyxy, dtype=np.float64)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    check_array("xyxy", boxes, 2, None, (None, 4))
    if len(labels) != len(boxes):
        raise ShapeError(f"labels: expected {len(boxes)} labels (one per box), got {len(labels)}")
    out = np.ascontiguousarray(image).copy()
    scale = max(0.4, min(out.shape[:2]) / 720 * 0.7)
    thick = max(2, round(scale * 3))
    if zone_polygon_px is not None:
        poly = np.asarray(zone_polygon_px, dtype=np.float64)
        check_array("zone_polygon_px", poly, 2, None, (None, 2))
        poly = np.round(poly).astype(np.int32).reshape(-1, 1, 2)
        overlay = out.copy()
        cv2.fillPoly(overlay, [poly], ZONE_COLOR_BGR)
        cv2.addWeighted(overlay, ZONE_FILL_ALPHA, out, 1 - ZONE_FILL_ALPHA, 0, dst=out)
        cv2.polylines(out, [poly], True, ZONE_COLOR_BGR, thick, cv2.LINE_AA)
    for (x1, y1, x2, y2), label in zip(np.round(boxes).astype(int).tolist(), labels):
        cv2.rectangle(out, (x1, y1), (x2, y2), BOX_COLOR_BGR, thick)
        if label:
            _put_label(out, to_ascii(label), (x1, y1), scale, max(1, thick - 1), BOX_COLOR_BGR)
    if title:
        text = to_ascii(title)
        if text:
            _put_label(out, text, (0, 0), scale, max(1, thick - 1), (40, 40, 40))
    return out


def write_snapshot(path: str | Path, image: np.ndarray, xyxy: np.ndarray, labels: Sequence[str],
                   zone_polygon_px: np.ndarray | None = None, title: str | None = None,
                   jpeg_quality: int = 85) -> Path:
    """Draw an alert snapshot and write it as a JPEG, atomically.

    The JPEG is encoded in memory (``cv2.imencode``), written to a temporary file in the
    target directory and moved into place with ``os.replace``, so readers never see a partial
    file. Parent directories are created. See :func:`render_snapshot` for the drawing; the
    input image is never modified.

    Args:
        path: Output path (``.jpg``).
        image: `(H, W, 3)` uint8 BGR frame.
        xyxy: `(M, 4)` pixel boxes, origin top-left.
        labels: M box labels.
        zone_polygon_px: `(K, 2)` pixel polygon, or ``None``.
        title: Title line; non-ASCII is transliterated or dropped (OpenCV fonts are ASCII-only).
        jpeg_quality: 1..100 (OpenCV's default is 95); lower gives smaller files but blurs
            faces and plates, 85 is a common compromise.

    Returns:
        The path written.

    Raises:
        ShapeError: For arrays of the wrong shape.
        ValueError: For ``jpeg_quality`` outside 1..100.
        SnapshotError: When the directory cannot be created or written, or encoding fails.
    """
    if not 1 <= int(jpeg_quality) <= 100:
        raise ValueError(f"jpeg_quality must be in 1..100, got {jpeg_quality!r}")
    path = Path(path)
    drawn = render_snapshot(image, xyxy, labels, zone_polygon_px, title)
    ok, buf = cv2.imencode(".jpg", drawn, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    if not ok:
        raise SnapshotError(f"cannot encode snapshot {path} as JPEG")
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(buf.tobytes())
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        raise SnapshotError(f"cannot write snapshot {path}: {exc}") from exc
    logger.debug("wrote snapshot %s (%d bytes)", path, buf.size)
    return path
