"""Clothing colours of a person crop as basic colour names, for search by description.

Names: the eleven basic colour terms of Berlin and Kay, "Basic Color Terms: Their Universality
and Evolution" (1969): black, white, grey, red, orange, yellow, green, blue, purple, pink, brown.

Method: every pixel of the torso band and of the legs band (central columns only, to leave out
most of the background) is converted to CIELAB (D65, OpenCV's float conversion) and named:

* achromatic when its chroma ``C* = hypot(a*, b*)`` is below :data:`ACHROMATIC_CHROMA` or it is
  darker than :data:`BLACK_LIGHTNESS`: black, grey or white by lightness ``L*``;
* otherwise by its CIELAB hue angle, with sector boundaries (:data:`HUE_SECTORS`) placed between
  the hues of the CSS Color Module Level 4 named colours ``red`` (40 deg), ``orange`` (73),
  ``yellow`` (103), ``green`` (136), ``teal``/``lightblue``/``blue`` (196-306) and ``purple``
  (328), converted from sRGB; inside the red and orange sectors dark, weak colours are brown
  (CSS ``brown`` L*=38 C*=58, ``saddlebrown`` L*=37 h=57) and light, weak reds are pink (CSS
  ``pink`` L*=84 C*=25, ``hotpink`` L*=65 C*=65).

The lightness and chroma thresholds were set by us by looking at PETS09-S2L1 crops (dim,
compressed outdoor video: jeans have low chroma); they are heuristics, not a colour-naming model.
The learned colour-naming table of van de Weijer et al. (IEEE TIP 2009) would be the next step.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import cv2
import numpy as np

from ingest.errors import ShapeError
from ingest.frame import check_array
from search.embed import central_region

log = logging.getLogger(__name__)

#: The basic colour terms, in Berlin and Kay's order.
COLOUR_NAMES = ("black", "white", "grey", "red", "orange", "yellow", "green", "blue", "purple",
                "pink", "brown")
#: Chroma C* below which a pixel is achromatic. Higher calls faded jeans grey; lower calls grey
#: pavement-lit coats blue or brown from compression noise.
ACHROMATIC_CHROMA = 7.0
#: Lightness L* below which a pixel is black whatever its chroma (navy, dark brown look black
#: in surveillance video and witnesses describe them so).
BLACK_LIGHTNESS = 22.0
#: Lightness L* above which an achromatic pixel is white; between the two it is grey.
WHITE_LIGHTNESS = 75.0
#: CIELAB hue sectors ``(start_deg, end_deg, name)``, end exclusive; the red sector wraps 0.
HUE_SECTORS = ((345.0, 360.0, "red"), (0.0, 55.0, "red"), (55.0, 88.0, "orange"),
               (88.0, 118.0, "yellow"), (118.0, 190.0, "green"), (190.0, 318.0, "blue"),
               (318.0, 345.0, "purple"))
#: In the red and orange sectors, L* below this with C* below :data:`BROWN_CHROMA` is brown.
BROWN_LIGHTNESS = 45.0
#: Chroma under which a dark red/orange pixel is brown rather than red.
BROWN_CHROMA = 60.0
#: In the red and purple sectors, L* above this with C* below :data:`PINK_CHROMA` is pink.
PINK_LIGHTNESS = 60.0
#: Chroma under which a light red or purple pixel is pink rather than red or purple.
PINK_CHROMA = 70.0
#: Torso band ``(top, bottom)`` as fractions of the crop height (head above, belt below).
UPPER_BAND = (0.18, 0.45)
#: Legs band ``(top, bottom)`` as fractions of the crop height (feet and shadow below).
LOWER_BAND = (0.55, 0.85)
#: Fraction of the width dropped on each side of both bands (background beside the body).
SIDE_MARGIN = 0.25


@dataclass(frozen=True, slots=True)
class ClothingColours:
    """Colour names of the upper and lower body of one person crop.

    Attributes:
        upper: Dominant colour name of the torso band, one of :data:`COLOUR_NAMES`.
        lower: Dominant colour name of the legs band.
        upper_shares: Share of the torso band's pixels per colour name (names with share 0
            left out), summing to 1.
        lower_shares: The same for the legs band.
    """

    upper: str
    lower: str
    upper_shares: Mapping[str, float]
    lower_shares: Mapping[str, float]


def name_pixels(pixels_bgr: np.ndarray) -> np.ndarray:
    """Name each pixel with a basic colour term.

    Args:
        pixels_bgr: `(..., 3)` uint8 BGR.

    Returns:
        Integer indices into :data:`COLOUR_NAMES`, the shape of ``pixels_bgr`` without its
        last axis, dtype int64.

    Raises:
        ShapeError: When the input is not uint8 with a last axis of 3.
    """
    pixels = np.asarray(pixels_bgr)
    if pixels.dtype != np.uint8 or pixels.ndim < 1 or pixels.shape[-1] != 3:
        raise ShapeError(f"pixels_bgr: expected (..., 3) uint8, got {pixels.shape} {pixels.dtype}")
    flat = pixels.reshape(1, -1, 3).astype(np.float32) / 255.0
    lab = cv2.cvtColor(flat, cv2.COLOR_BGR2Lab)[0]
    lightness, a, b = lab[:, 0], lab[:, 1], lab[:, 2]
    chroma = np.hypot(a, b)
    hue = np.degrees(np.arctan2(b, a)) % 360.0
    index = {name: i for i, name in enumerate(COLOUR_NAMES)}
    names = np.full(lightness.shape, index["grey"], dtype=np.int64)
    for start, end, name in HUE_SECTORS:
        names[(hue >= start) & (hue < end)] = index[name]
    warm = (names == index["red"]) | (names == index["orange"])
    names[warm & (lightness < BROWN_LIGHTNESS) & (chroma < BROWN_CHROMA)] = index["brown"]
    pinkish = (names == index["red"]) | (names == index["purple"])
    names[pinkish & (lightness > PINK_LIGHTNESS) & (chroma < PINK_CHROMA)] = index["pink"]
    achromatic = (chroma < ACHROMATIC_CHROMA) | (lightness < BLACK_LIGHTNESS)
    names[achromatic] = index["grey"]
    names[achromatic & (lightness < BLACK_LIGHTNESS)] = index["black"]
    names[achromatic & (lightness > WHITE_LIGHTNESS)] = index["white"]
    return names.reshape(pixels.shape[:-1])


def colour_shares(region_bgr: np.ndarray) -> dict[str, float]:
    """Share of each colour name among the pixels of an image region.

    Args:
        region_bgr: `(H, W, 3)` uint8 BGR with at least one pixel.

    Returns:
        ``{name: share}`` for names with a non-zero share, largest first, summing to 1.

    Raises:
        ShapeError: When the region is not a non-empty `(H, W, 3)` uint8 array.
    """
    check_array("region_bgr", region_bgr, 3, np.uint8, (None, None, 3))
    if region_bgr.size == 0:
        raise ShapeError(f"region_bgr: empty region of shape {region_bgr.shape}")
    counts = np.bincount(name_pixels(region_bgr).ravel(), minlength=len(COLOUR_NAMES))
    shares = counts / counts.sum()
    order = np.argsort(-shares, kind="stable")
    return {COLOUR_NAMES[i]: float(shares[i]) for i in order if shares[i] > 0}


def clothing_colours(crop_bgr: np.ndarray) -> ClothingColours:
    """Name the clothing colours of the upper and lower body of a standing person crop.

    The crop is lightly smoothed (3x3 median) against compression noise; the torso band
    :data:`UPPER_BAND` and legs band :data:`LOWER_BAND` of the central columns (dropping
    :data:`SIDE_MARGIN` of the width each side) are named pixel by pixel with
    :func:`name_pixels`, and the most frequent name of each band wins.

    Args:
        crop_bgr: `(H, W, 3)` uint8 BGR crop of one person (a detector or tracker box),
            head at the top.

    Returns:
        The dominant names and per-name shares of both bands.

    Raises:
        ShapeError: When the crop is not a non-empty `(H, W, 3)` uint8 array.
    """
    check_array("crop_bgr", crop_bgr, 3, np.uint8, (None, None, 3))
    if crop_bgr.shape[0] == 0 or crop_bgr.shape[1] == 0:
        raise ShapeError(f"crop_bgr: empty crop of shape {crop_bgr.shape}")
    smooth = cv2.medianBlur(crop_bgr, 3)
    upper = colour_shares(central_region(smooth, UPPER_BAND, SIDE_MARGIN))
    lower = colour_shares(central_region(smooth, LOWER_BAND, SIDE_MARGIN))
    return ClothingColours(next(iter(upper)), next(iter(lower)),
                           MappingProxyType(upper), MappingProxyType(lower))


def mean_clothing_colours(crops_bgr: Sequence[np.ndarray]) -> ClothingColours:
    """Clothing colours of one person from several crops: per-name shares averaged over the
    crops (:func:`clothing_colours` of each), the largest mean share naming each band, so one
    crop spoiled by an occluder (a blue sign in front of a dark coat) does not name the coat.

    Args:
        crops_bgr: One or more `(H, W, 3)` uint8 BGR crops of the same person.

    Raises:
        ShapeError: When a crop is not a non-empty `(H, W, 3)` uint8 array, or none is given.
    """
    if not crops_bgr:
        raise ShapeError("mean_clothing_colours needs at least one crop")
    each = [clothing_colours(c) for c in crops_bgr]

    def mean(key: str) -> dict[str, float]:
        total: dict[str, float] = {}
        for c in each:
            for name, share in getattr(c, key).items():
                total[name] = total.get(name, 0.0) + share / len(each)
        return dict(sorted(total.items(), key=lambda kv: -kv[1]))

    upper, lower = mean("upper_shares"), mean("lower_shares")
    return ClothingColours(next(iter(upper)), next(iter(lower)), MappingProxyType(upper), MappingProxyType(lower))
