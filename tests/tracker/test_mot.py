"""MOTChallenge file writing and reading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from detectors.types import Detections
from tests.conftest import PETS_GT, need
from tracker import MotWriter, read_mot


def test_round_trip(tmp_path: Path) -> None:
    dets = Detections(np.array([[10, 20, 40, 100], [5.5, 6.25, 7, 8]], np.float32),
                      np.array([0.9, 0.5], np.float32), np.zeros(2, np.int32),
                      np.array([3, -1], np.int64))
    path = tmp_path / "sub" / "cam.txt"
    with MotWriter(path) as mot:
        mot.write(1, dets)
        mot.write(2, Detections.empty())
        mot.write(3, dets[:1])
    lines = path.read_text().splitlines()
    assert lines[0] == "1,3,10.00,20.00,30.00,80.00,0.9000,-1,-1,-1"
    rows = read_mot(path)
    assert sorted(rows) == [1, 3]
    np.testing.assert_allclose(rows[1], [[3, 10, 20, 30, 80, 0.9], [-1, 5.5, 6.25, 1.5, 1.75, 0.5]])
    with pytest.raises(ValueError, match="1-based"), MotWriter(tmp_path / "x.txt") as mot:
        mot.write(0, dets)
    writer = MotWriter(tmp_path / "y.txt")  # also usable without a with-block
    writer.write(5, dets[:1])
    writer.close()
    writer.close()
    assert sorted(read_mot(tmp_path / "y.txt")) == [5]
    with pytest.raises(ValueError, match="closed"):
        writer.write(6, dets)


def test_read_pets_ground_truth() -> None:
    gt = read_mot(need(PETS_GT))
    assert sorted(gt) == list(range(1, 401))
    rows = np.concatenate(list(gt.values()))
    assert rows.shape == (2396, 6)
    assert int((rows[:, 5] == 0).sum()) == 174
    assert sorted(np.unique(rows[:, 0]).astype(int).tolist()) == [1, 9, 11, 12, 13, 14, 15, 16,
                                                                   17, 19]


@pytest.mark.parametrize("text", ["1,2,3\n", "1,a,3,4,5,6,7\n"])
def test_bad_lines(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_text("1,1,0,0,10,10,1,-1,-1,-1\n\n" + text)
    with pytest.raises(ValueError, match=":3:"):
        read_mot(path)
