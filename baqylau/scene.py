"""Scene detectors in the pipeline: built from the camera's ``scene:`` list, fed each frame's
tracked people and vehicles, and turned into alerts with their evidence.

Used by :class:`baqylau.analysis.CameraAnalysis` in both process layouts. Learned clean
references are kept under ``data_dir/scene/<camera>/`` so a restart does not relearn them.

Evidence written per alert, next to the snapshot (``snapshots/<camera>/<alert_id>*.jpg``):
the annotated frame, ``-before.jpg`` (clean reference) and ``-after.jpg`` (now) crops of the
changed area and, for littering/dumping, ``-person.jpg`` (best crop of the person who left it).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from baqylau.config import CameraConfig, Config, ConfigError, SceneDetectorConfig
from calibration.zones import Zone
from detectors.scene import SceneDetector, SceneEvent
from detectors.scene_change import SceneChangeConfig
from detectors.types import Detections

log = logging.getLogger(__name__)

#: Evidence crops shorter than this (px) are enlarged (bicubic) when written.
MIN_EVIDENCE_PX = 128

#: COCO class names masked out of the scene models as vehicles (people are "person").
VEHICLE_CLASSES = frozenset({"bicycle", "car", "motorcycle", "bus", "train", "truck"})


def _config_class(kind: str) -> type:
    if kind == "bin_overflow":
        from detectors.bin_overflow import BinOverflowConfig
        return BinOverflowConfig
    if kind == "littering":
        from detectors.litter import LitteringConfig
        return LitteringConfig
    from detectors.flooding import FloodingConfig
    return FloodingConfig


def _make_config(d: SceneDetectorConfig, where: str) -> Any:
    """The detector's config dataclass from ``settings`` and ``scene_change``.

    Raises:
        ConfigError: For an unknown name or a value out of bounds (one line naming the path).
    """
    cls = _config_class(d.type)
    known = {f.name for f in dataclasses.fields(cls)} - {"scene"}
    scene_known = {f.name for f in dataclasses.fields(SceneChangeConfig)}
    problems = [f"{where}.settings.{k}: unknown setting of {d.type} (known: {', '.join(sorted(known))})"
                for k in d.settings if k not in known]
    problems += [f"{where}.scene_change.{k}: unknown setting (known: {', '.join(sorted(scene_known))})"
                 for k in d.scene_change if k not in scene_known]
    if problems:
        raise ConfigError("configuration", problems)
    try:
        base = cls()
        scene = dataclasses.replace(base.scene, **d.scene_change) if hasattr(base, "scene") else None
        kwargs = dict(d.settings)
        if scene is not None:
            kwargs["scene"] = scene
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        # name the YAML key, not the dataclass: "FloodingConfig.persistence_s" -> "settings.persistence_s"
        text = re.sub(r"\bSceneChangeConfig\.(\w+)", r"scene_change.\1", str(exc))
        text = re.sub(r"\b[A-Z]\w*Config\.(\w+)", r"settings.\1", text)
        raise ConfigError("configuration", [f"{where}: {text}"]) from None


def scene_problems(cfg: Config) -> list[str]:
    """One line per invalid scene-detector setting or missing model file in the configuration
    (no model is loaded)."""
    problems: list[str] = []
    for ci, cam in enumerate(cfg.cameras):
        for di, d in enumerate(cam.scene):
            where = f"cameras[{ci}] ({cam.id}).scene[{di}] ({d.id})"
            try:
                _make_config(d, where)
            except ConfigError as exc:
                problems += exc.problems
            if d.model is not None and not Path(d.model.model_path).is_file():
                problems.append(f"{where}.model.model_path: file not found: {d.model.model_path}")
            if d.type == "flooding" and d.model is not None and d.model.input_size is None:
                problems.append(f"{where}.model.input_size: required for a water segmentation model "
                                "([width, height])")
    return problems


def build_scene_detectors(cam: CameraConfig, zones: Mapping[str, Zone], homography: Any = None) -> list[SceneDetector]:
    """Create the camera's scene detectors.

    Args:
        cam: The camera (its ``scene`` list, zones and calibration depth markers).
        zones: The camera's zones by id.
        homography: The camera's ``calibration.homography.Homography`` or ``None``.

    Raises:
        ConfigError: For invalid settings.
        detectors.base.ModelNotFoundError: When a configured model file is missing.
    """
    out: list[SceneDetector] = []
    markers = {m.id: m for m in cam.calibration.depth_markers} if cam.calibration else {}
    for di, d in enumerate(cam.scene):
        config = _make_config(d, f"camera {cam.id}: scene[{di}] ({d.id})")
        if d.type == "bin_overflow":
            from detectors.bin_overflow import BinOverflowDetector, OnnxBinClassifier

            classifier = None
            if d.model is not None:
                kw = {"input_hw": d.model.input_size[::-1]} if d.model.input_size else {}
                classifier = OnnxBinClassifier(d.model.model_path, positive_index=d.model.positive_index,
                                               threshold=d.model.threshold, **kw)
            rim = np.asarray(d.rim_line, np.float32) if d.rim_line else None
            out.append(BinOverflowDetector(d.id, zones[d.zone], zones[d.around_zone] if d.around_zone else None,
                                           rim, config, classifier))
        elif d.type == "littering":
            from detectors.litter import LitteringDetector

            out.append(LitteringDetector(d.id, zones[d.zone], config, homography))
        else:
            from detectors.flooding import DepthMarker, FloodingDetector, OnnxWaterSegmenter

            segmenter = None
            if d.model is not None:
                if d.model.input_size is None:
                    raise ConfigError("configuration", [
                        f"camera {cam.id}: scene[{di}] ({d.id}).model.input_size: required for a water "
                        "segmentation model ([width, height])"])
                segmenter = OnnxWaterSegmenter(d.model.model_path, input_hw=d.model.input_size[::-1],
                                               water_class=d.model.positive_index)
                if "water_prob_min" not in d.settings:
                    config = dataclasses.replace(config, water_prob_min=d.model.threshold)
            dm = [DepthMarker(m, np.asarray(markers[m].points_px, np.float32),
                              np.asarray(markers[m].height_m, np.float32)) for m in d.depth_markers]
            out.append(FloodingDetector(d.id, zones[d.zone], config, dm, segmenter))
    return out


def still_learning(det: SceneDetector) -> bool:
    """Whether a scene detector has not finished learning its clean reference yet (it reports
    nothing until then)."""
    return bool(det.learning)


def split_movers(tracked: Detections, class_names: tuple[str, ...]) -> tuple[Detections, Detections]:
    """People and vehicles of a frame's tracked detections, for the scene detectors.

    With the weights-free motion detector (one class, ``"motion"``) every blob counts as a
    person: blobs are masked out either way, and a littering owner can then be a blob.

    Returns:
        ``(people, vehicles)``; other classes (bags, bottles, ...) are in neither, so objects
        the detector names are still seen by the scene models.
    """
    if class_names == ("motion",):
        return tracked, Detections.empty()
    names = np.array(class_names, dtype=object)
    ids = tracked.class_id
    valid = (ids >= 0) & (ids < len(names))
    cls = np.where(valid, names[np.clip(ids, 0, len(names) - 1)], "")
    return tracked[cls == "person"], tracked[np.isin(cls, list(VEHICLE_CLASSES))]


class SceneStates:
    """Saves and restores the learned clean references of one camera's scene detectors.

    Args:
        directory: ``data_dir/scene/<camera id>``.
        detectors: The camera's scene detectors.
        interval_s: Wall-clock seconds between saves.
        restore: Whether to load saved references now.
    """

    def __init__(self, directory: Path, detectors: list[SceneDetector], interval_s: float,
                 restore: bool = True) -> None:
        self.directory = directory
        self.detectors = detectors
        self.interval_s = interval_s
        self._next = time.monotonic() + interval_s
        for det in detectors if restore else []:
            try:
                if det.load_state(directory):
                    log.info("scene detector %s: learned reference restored from %s", det.detector_id, directory)
            except Exception as exc:  # noqa: BLE001 - a bad state file must not stop the camera
                log.warning("scene detector %s: saved state not usable, learning afresh: %s", det.detector_id, exc)

    def maybe_save(self, force: bool = False) -> None:
        """Save every detector's state when the interval has passed (or ``force``); errors are logged."""
        if not self.detectors or (not force and time.monotonic() < self._next):
            return
        self._next = time.monotonic() + self.interval_s
        for det in self.detectors:
            try:
                det.save_state(self.directory)
            except OSError as exc:
                log.error("scene detector %s: state not saved to %s: %s", det.detector_id, self.directory, exc)


def write_evidence(base: Path, ev: SceneEvent, quality: int) -> dict[str, str]:
    """Write the before/after/person crops of an event as JPEGs beside the snapshot.

    Args:
        base: Snapshot path without suffix (``snapshots/<camera>/<alert_id>``).
        ev: The event.
        quality: JPEG quality.

    Returns:
        ``{"before": path, "after": path, "person": path}`` for the crops written.
    """
    out: dict[str, str] = {}
    for key, image in (("before", ev.reference_bgr), ("after", ev.current_bgr), ("person", ev.person_bgr)):
        if image is None or image.size == 0:
            continue
        path = base.parent / f"{base.name}-{key}.jpg"
        short = min(image.shape[:2])
        if short < MIN_EVIDENCE_PX:  # enlarge tiny crops so they can be read (the snapshot has the context)
            f = MIN_EVIDENCE_PX / short
            image = cv2.resize(image, None, fx=f, fy=f, interpolation=cv2.INTER_CUBIC)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, quality]):
                raise OSError("cv2.imwrite returned False")
            out[key] = str(path)
        except OSError as exc:
            log.error("evidence %s not written: %s", path, exc)
    return out


def event_details(ev: SceneEvent) -> dict[str, Any]:
    """The JSON-able alert details of a scene event (measurements and reasons)."""
    details: dict[str, Any] = {
        "reason": ev.reason,
        "detector_id": ev.detector_id,
        "route": ev.route,
        "onset_time_s": round(ev.start_time_s, 2),
        "confirmed_time_s": round(ev.time_s, 2),
        "delay_s": round(ev.time_s - ev.start_time_s, 2),
        "area_px": [round(float(a), 1) for a in ev.area_px],
        "covered_share": round(ev.covered_share, 4),
        "severity": round(ev.severity, 3),
        "urgent": bool(ev.urgent),
    }
    if ev.person_time_s is not None:
        details["person_time_s"] = round(ev.person_time_s, 2)
    for k, v in ev.details.items():
        details.setdefault(k, _rounded(v))
    return details


def _rounded(value: Any) -> Any:
    """Floats rounded to 4 decimals, recursively (float32 noise such as 0.05000000074505806)."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value
