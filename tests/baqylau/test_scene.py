"""Scene detectors built from the configuration: settings, models, movers, evidence files."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from baqylau.config import ConfigError, load_config
from baqylau.scene import build_scene_detectors, event_details, split_movers, still_learning, write_evidence
from calibration.zones import Zone
from detectors.coco import COCO80
from detectors.scene import SceneEvent
from detectors.types import Detections


def standin_onnx(path: Path, classes: int, hw: tuple[int, int], spatial: bool) -> None:
    """A stand-in ONNX model (not trained): 1x1 convolution to ``classes`` maps, pooled to
    logits for a classifier (``spatial=False``) or kept per pixel for a segmenter."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    h, w = hw
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y" if spatial else "maps"])]
    out_shape = [1, classes, h, w]
    if not spatial:
        nodes += [helper.make_node("GlobalAveragePool", ["maps"], ["pooled"]),
                  helper.make_node("Flatten", ["pooled"], ["y"])]
        out_shape = [1, classes]
    graph = helper.make_graph(
        nodes, "standin", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, h, w])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        [numpy_helper.from_array(np.zeros((classes, 3, 1, 1), np.float32), "w"),
         numpy_helper.from_array(np.arange(classes, dtype=np.float32), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_config_builds_each_detector_with_its_settings_and_models(tmp_path):
    standin_onnx(tmp_path / "bins.onnx", 2, (224, 224), spatial=False)
    standin_onnx(tmp_path / "water.onnx", 3, (64, 96), spatial=True)
    p = tmp_path / "cfg.yaml"
    p.write_text(textwrap.dedent("""
        cameras:
          - id: street
            url: street.mp4
            zones:
              - {id: bin, units: norm, points: [[0.1, 0.1], [0.3, 0.1], [0.3, 0.4], [0.1, 0.4]]}
              - {id: road, units: norm, points: [[0, 0.5], [1, 0.5], [1, 1], [0, 1]]}
            calibration:
              depth_markers: [{id: kerb, points_px: [[50, 95], [50, 90]], height_m: [0.05, 0.15]}]
            scene:
              - {id: bin-1, type: bin_overflow, zone: bin, rim_line: [[0.1, 0.15], [0.3, 0.15]],
                 model: {model_path: bins.onnx, threshold: 0.6}, settings: {persistence_s: 90}}
              - {id: litter, type: littering, zone: road, settings: {wait_s: 12}, scene_change: {learn_s: 7}}
              - {id: flood, type: flooding, zone: road, depth_markers: [kerb],
                 model: {model_path: water.onnx, input_size: [96, 64], positive_index: 2, threshold: 0.7}}
        """))
    cam = load_config(p).cameras[0]
    zones = {z.id: Zone(z.id, np.asarray(z.points, np.float32), z.units) for z in cam.zones}
    bin_det, litter, flood = build_scene_detectors(cam, zones)
    assert bin_det.config.persistence_s == 90 and bin_det.classifier.threshold == 0.6
    assert litter.config.wait_s == 12 and litter.config.scene.learn_s == 7
    assert flood.config.water_prob_min == 0.7  # the model threshold
    assert [m.marker_id for m in flood.depth_markers] == ["kerb"]
    assert all(still_learning(d) for d in (bin_det, litter, flood))


def test_bad_setting_value_fails_at_build_with_the_yaml_key(tmp_path):
    p = tmp_path / "cfg.yaml"
    p.write_text(textwrap.dedent("""
        cameras:
          - id: street
            url: street.mp4
            zones: [{id: road, units: norm, points: [[0, 0.5], [1, 0.5], [1, 1]]}]
            scene: [{id: litter, type: littering, zone: road, scene_change: {learn_s: -1}}]
        """))
    cam = load_config(p).cameras[0]
    with pytest.raises(ConfigError) as info:
        build_scene_detectors(cam, {"road": Zone("road", np.asarray(cam.zones[0].points, np.float32), "norm")})
    assert "scene_change.learn_s must be >= 0" in info.value.problems[0]


def test_people_and_vehicles_are_split_by_class_name():
    names = COCO80
    dets = Detections(np.zeros((4, 4), np.float32), np.ones(4, np.float32),
                      np.array([names.index("person"), names.index("car"), names.index("backpack"),
                                names.index("truck")], np.int32), np.arange(4, dtype=np.int64))
    people, vehicles = split_movers(dets, tuple(names))
    assert people.track_id.tolist() == [0] and vehicles.track_id.tolist() == [1, 3]  # bags stay visible
    blobs, none = split_movers(dets, ("motion",))
    assert len(blobs) == 4 and len(none) == 0


def test_evidence_crops_are_written_readable_and_details_rounded(tmp_path):
    ev = SceneEvent("started", "flooding", "flood", 0, "road", "water", 10.0, 25.0, 1e9,
                    np.array([[0, 0, 20, 10]], np.float32), np.array([200.0], np.float32),
                    covered_share=0.5, severity=0.55, reference_bgr=np.zeros((10, 20, 3), np.uint8),
                    current_bgr=np.full((10, 20, 3), 200, np.uint8),
                    details={"max_submerged_height_m": float(np.float32(0.05))})
    paths = write_evidence(tmp_path / "a1", ev, 85)
    assert set(paths) == {"before", "after"}
    import cv2

    assert min(cv2.imread(paths["after"]).shape[:2]) >= 128
    details = event_details(ev)
    assert details["max_submerged_height_m"] == 0.05 and details["route"] == "ticketing"
    assert details["delay_s"] == 15.0 and details["onset_time_s"] == 10.0
