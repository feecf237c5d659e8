"""Clothing colour names: reference colours, and real PETS09 people labelled by looking at crops."""

from __future__ import annotations

from collections import Counter

import cv2
import numpy as np
import pytest

from ingest.errors import ShapeError
from search.colours import COLOUR_NAMES, clothing_colours, colour_shares, name_pixels
from tests.conftest import PETS_GT, VTEST, need

#: Upper / lower clothing of PETS09-S2L1 people, labelled by looking at crops of vtest.avi
#: (2x enlarged PNG montages, six moments per identity). Left out: id 11 (navy jacket with red
#: shoulders), id 12 (long black coat over jeans: the legs band is mostly coat), id 15 and 19
#: (often behind the lamp-post sign).
LABELS = {1: ("black", "black"), 9: ("black", "blue"), 13: ("black", "blue"),
          14: ("black", "black"), 16: ("blue", "blue"), 17: ("black", "blue")}
SAMPLES = 9


@pytest.mark.parametrize("rgb, name", [
    ((0, 0, 0), "black"), ((255, 255, 255), "white"), ((128, 128, 128), "grey"),
    ((255, 0, 0), "red"), ((139, 0, 0), "red"), ((255, 165, 0), "orange"),
    ((255, 255, 0), "yellow"), ((0, 128, 0), "green"), ((0, 0, 255), "blue"),
    ((70, 100, 160), "blue"), ((128, 0, 128), "purple"), ((255, 192, 203), "pink"),
    ((255, 105, 180), "pink"), ((165, 42, 42), "brown"), ((139, 69, 19), "brown"),
    ((0, 0, 60), "black"),
])
def test_reference_colours_get_their_names(rgb: tuple[int, int, int], name: str) -> None:
    """CSS Color Level 4 named colours (plus a denim blue and a navy that reads black)."""
    pixel = np.array([[rgb[::-1]]], dtype=np.uint8)
    assert COLOUR_NAMES[int(name_pixels(pixel)[0, 0])] == name


def test_two_tone_crop_and_shares() -> None:
    crop = np.zeros((200, 80, 3), np.uint8)
    crop[:100] = (0, 0, 200)  # red top (BGR)
    crop[100:] = (140, 90, 60)  # denim-blue legs
    crop[:, :10] = (0, 200, 0)  # green background strip at the side is ignored
    colours = clothing_colours(crop)
    assert (colours.upper, colours.lower) == ("red", "blue")
    assert colours.upper_shares == {"red": 1.0}
    shares = colour_shares(crop)
    assert list(shares)[0] == "red" and sum(shares.values()) == pytest.approx(1.0)
    assert set(shares) == {"red", "blue", "green"}


@pytest.mark.parametrize("bad", [np.zeros((10, 10), np.uint8), np.zeros((0, 4, 3), np.uint8),
                                 np.zeros((10, 10, 3), np.float32)])
def test_bad_crops_raise_shape_error(bad: np.ndarray) -> None:
    with pytest.raises(ShapeError):
        clothing_colours(bad)
    with pytest.raises(ShapeError):
        colour_shares(bad)


def test_pets09_people_colours() -> None:
    """Majority over SAMPLES moments of each labelled person must match; at least 2/3 agree."""
    need(VTEST)
    gt = np.loadtxt(need(PETS_GT), delimiter=",")
    gt = gt[(gt[:, 6] == 1) & np.isin(gt[:, 1], list(LABELS))]
    wanted: dict[int, list[np.ndarray]] = {}
    for tid in LABELS:
        rows = gt[gt[:, 1] == tid]
        for k in np.linspace(0, len(rows) - 1, SAMPLES).astype(int):
            wanted.setdefault(int(rows[k, 0]) - 1, []).append(rows[k])
    capture = cv2.VideoCapture(str(VTEST))
    upper: dict[int, Counter] = {t: Counter() for t in LABELS}
    lower: dict[int, Counter] = {t: Counter() for t in LABELS}
    for frame_index in range(max(wanted) + 1):
        ok, image = capture.read()
        assert ok
        for row in wanted.get(frame_index, []):
            x, y, w, h = np.round(row[2:6]).astype(int)
            colours = clothing_colours(image[max(y, 0):y + h, max(x, 0):x + w])
            upper[int(row[1])][colours.upper] += 1
            lower[int(row[1])][colours.lower] += 1
    capture.release()
    wrong = []
    for tid, (want_upper, want_lower) in LABELS.items():
        for part, want, got in (("upper", want_upper, upper[tid]), ("lower", want_lower, lower[tid])):
            name, count = got.most_common(1)[0]
            if name != want or count < 2 * SAMPLES / 3:
                wrong.append(f"id {tid} {part}: want {want}, got {dict(got)}")
    assert not wrong, wrong


def test_mean_colours_outvote_one_spoiled_crop() -> None:
    from search.colours import mean_clothing_colours

    def person(top_bgr: tuple[int, int, int]) -> np.ndarray:
        crop = np.full((160, 60, 3), (40, 40, 40), np.uint8)  # dark trousers
        crop[25:75] = top_bgr
        return crop

    red, blue = (30, 30, 200), (200, 80, 20)
    got = mean_clothing_colours([person(red), person(red), person(blue)])
    assert got.upper == "red" and got.lower == "black"
    assert abs(sum(got.upper_shares.values()) - 1) < 1e-6 and got.upper_shares["blue"] > 0
    with pytest.raises(ShapeError):
        mean_clothing_colours([])
