"""YOLOX object detector running an ONNX export with onnxruntime.

Pre- and post-processing follow the YOLOX reference demo (Megvii, Apache-2.0):
``yolox/data/data_augment.py::preproc`` (letterbox to the top-left, pad 114, BGR 0-255, no
mean/std) and ``yolox/utils/demo_utils.py::demo_postprocess`` (grid decode at strides 8/16/32).
Ge et al., "YOLOX: Exceeding YOLO Series in 2021", arXiv:2107.08430.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from detectors.base import DetectorError, ModelNotFoundError, check_batch
from detectors.onnx import load_session, select_providers  # noqa: F401 - select_providers re-exported
from detectors.coco import COCO80
from detectors.types import Detections

log = logging.getLogger(__name__)

#: Letterbox padding value of the YOLOX reference preprocessing.
PAD_VALUE = 114
#: Output strides of the YOLOX PAFPN heads, finest first (order of the output rows).
STRIDES = (8, 16, 32)
#: Default cap on frames per ``session.run`` for models with a dynamic batch axis.
DEFAULT_MAX_BATCH = 16


def letterbox(image: np.ndarray, input_hw: tuple[int, int]) -> tuple[np.ndarray, float]:
    """Resize keeping the aspect ratio and place the image at the top-left of a padded canvas.

    Args:
        image: `(H, W, 3)` uint8 BGR.
        input_hw: Model input ``(height, width)`` in pixels.

    Returns:
        ``(blob, scale)``: blob `(3, in_h, in_w)` float32 BGR 0-255 (CHW), padded with 114;
        scale = model pixels per image pixel, so image coordinates = model coordinates / scale.
    """
    in_h, in_w = input_hw
    h, w = image.shape[:2]
    scale = min(in_h / h, in_w / w)
    new_w, new_h = max(1, int(w * scale)), max(1, int(h * scale))
    canvas = np.full((in_h, in_w, 3), PAD_VALUE, dtype=np.uint8)
    canvas[:new_h, :new_w] = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return canvas.transpose(2, 0, 1).astype(np.float32), scale


def make_grids(input_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Anchor-point grid of the YOLOX head.

    Returns:
        ``(grid, stride)``: grid `(A, 2)` float32 cell ``(x, y)`` indices and stride `(A, 1)`
        float32 pixels, where A = sum over strides of ``(in_h // s) * (in_w // s)``
        (3549 for 416x416), rows ordered stride 8 first, then row-major ``y, x``.
    """
    grids, strides = [], []
    for s in STRIDES:
        h, w = input_hw[0] // s, input_hw[1] // s
        xv, yv = np.meshgrid(np.arange(w), np.arange(h))
        grids.append(np.stack((xv, yv), axis=2).reshape(-1, 2))
        strides.append(np.full((h * w, 1), s))
    return np.concatenate(grids).astype(np.float32), np.concatenate(strides).astype(np.float32)


class YoloxOnnxDetector:
    """YOLOX detector (any size: nano to x) from an ONNX file, on onnxruntime.

    The model's input must be `(N, 3, H, W)` float32 BGR 0-255 and its output `(N, A, 5 + C)`
    rows ``cx, cy, w, h, objectness, class scores...`` with sigmoid applied (the standard YOLOX
    export). A box's score is ``objectness * best class score``.

    Attributes:
        name: Model file stem, e.g. ``"yolox_nano"``.
        class_names: Names indexed by class id.
        provider: onnxruntime provider the session runs on.
        max_batch: Frames per ``session.run``: 1 for a static batch axis, else ``max_batch``.
        input_hw: Model input ``(height, width)`` in pixels.
    """

    def __init__(self, model_path: str | Path, class_names: Sequence[str] | None = None,
                 providers: Sequence[str] = ("CPUExecutionProvider",),
                 conf_threshold: float = 0.3, nms_iou_threshold: float = 0.45,
                 intra_op_num_threads: int | None = None, output_decoded: bool = False,
                 max_batch: int = DEFAULT_MAX_BATCH,
                 input_hw: tuple[int, int] | None = None,
                 cross_class_iou_threshold: float | None = 0.8) -> None:
        """Load the model.

        Args:
            model_path: The ``.onnx`` file.
            class_names: Names of the model's classes; default :data:`~detectors.coco.COCO80`.
            providers: onnxruntime providers in order of preference; unavailable ones are
                dropped with a warning and ``CPUExecutionProvider`` is always the last resort.
            conf_threshold: Minimum score ``objectness * class score`` in [0, 1] to keep a box.
                Lower finds more small, distant or occluded people but adds false boxes;
                ByteTrack uses boxes below its high threshold only to continue existing tracks,
                so a low value (0.1-0.3) helps tracking. On PETS09-S2L1 0.3 measured best
                (see ``tests/tracker/metrics_pets09.json``).
            nms_iou_threshold: IoU in (0, 1] above which a lower-score box of the same class is
                suppressed. Lower removes more duplicates but merges people walking close
                together; 0.45 is the YOLOX demo value.
            intra_op_num_threads: onnxruntime threads per inference; ``None`` lets onnxruntime
                choose (all physical cores). Set it when several detectors share a machine.
            output_decoded: ``True`` when the export already decodes boxes into input pixels
                (``decode_in_inference``); ``False`` (default) for raw grid-relative output.
            max_batch: Most frames per ``session.run`` when the model's batch axis is dynamic.
            cross_class_iou_threshold: After the per-class NMS, a box that overlaps a
                higher-scoring box of *another* class by more than this IoU is dropped (one van
                seen as both "car" and "truck" gives one box, hence one track). High (0.8) so
                that genuinely overlapping objects (a person on a bicycle) both stay; ``None``
                turns it off.
            input_hw: Input ``(height, width)`` for models whose spatial axes are dynamic;
                ignored when the model fixes them.

        Raises:
            ModelNotFoundError: When ``model_path`` does not exist.
            DetectorError: When the file is not a loadable model, its input is not
                `(N, 3, H, W)`, its output width differs from ``5 + len(class_names)``, or
                its input size is dynamic and ``input_hw`` was not given.
            ValueError: When a threshold is outside [0, 1] or ``max_batch`` < 1.
        """
        path = Path(model_path)
        if not path.is_file():
            raise ModelNotFoundError(f"YOLOX model file not found: {path}")
        for label, value in (("conf_threshold", conf_threshold),
                             ("nms_iou_threshold", nms_iou_threshold),
                             ("cross_class_iou_threshold", cross_class_iou_threshold)):
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{label} must be in [0, 1], got {value}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")

        self._session = load_session(path, providers, intra_op_num_threads)

        inp = self._session.get_inputs()[0]
        if len(inp.shape) != 4 or inp.shape[1] != 3:
            raise DetectorError(f"{path}: expected input (N, 3, H, W), got {inp.shape}")
        batch, _, in_h, in_w = inp.shape
        if isinstance(in_h, int) and isinstance(in_w, int) and in_h > 0 and in_w > 0:
            self.input_hw = (in_h, in_w)
        elif input_hw is not None:
            self.input_hw = (int(input_hw[0]), int(input_hw[1]))
        else:
            raise DetectorError(f"{path}: input size {inp.shape} is dynamic; pass input_hw")
        self._input_name = inp.name
        self.name = path.stem
        self.class_names = tuple(class_names) if class_names is not None else COCO80
        out_shape = self._session.get_outputs()[0].shape
        if isinstance(out_shape[-1], int) and out_shape[-1] != 5 + len(self.class_names):
            raise DetectorError(f"{path}: output rows have {out_shape[-1]} values, expected "
                                f"5 + {len(self.class_names)} classes")
        self.max_batch = 1 if isinstance(batch, int) and batch > 0 else max_batch
        self.provider = self._session.get_providers()[0]
        self.conf_threshold = conf_threshold
        self.nms_iou_threshold = nms_iou_threshold
        self.cross_class_iou_threshold = cross_class_iou_threshold
        self.output_decoded = output_decoded
        self._grid, self._stride = make_grids(self.input_hw)
        log.info("YOLOX %s loaded: input %dx%d, max_batch %d, provider %s", self.name,
                 self.input_hw[1], self.input_hw[0], self.max_batch, self.provider)

    def detect(self, images: Sequence[np.ndarray],
               camera_ids: Sequence[str] | None = None) -> list[Detections]:
        """Detect objects in frames, several per ``session.run`` when the model allows.

        Args:
            images: Frames, each `(H, W, 3)` uint8 BGR, any size.
            camera_ids: Camera of each frame (unused: the detector is stateless); ``None``
                is accepted.

        Returns:
            One :class:`Detections` per image: ``xyxy`` pixels of that image, clipped to it;
            ``conf`` = objectness * class score; ``class_id`` indexes ``class_names``.

        Raises:
            ShapeError: When an image is not `(H, W, 3)` uint8.
            ValueError: When ``camera_ids`` differs in length from ``images``.
            DetectorError: When onnxruntime fails.
        """
        check_batch(images, camera_ids if camera_ids is not None else [""] * len(images))
        results: list[Detections] = []
        for start in range(0, len(images), self.max_batch):
            chunk = images[start:start + self.max_batch]
            blobs, scales = zip(*(letterbox(img, self.input_hw) for img in chunk))
            try:
                raw = self._session.run(None, {self._input_name: np.stack(blobs)})[0]
            except Exception as exc:
                raise DetectorError(f"YOLOX inference failed: {exc}") from exc
            for rows, scale, img in zip(raw, scales, chunk):
                results.append(self._postprocess(rows, scale, img.shape[:2]))
        return results

    def _postprocess(self, rows: np.ndarray, scale: float,
                     shape_hw: tuple[int, int]) -> Detections:
        """Decode, threshold, NMS and rescale one image's output rows `(A, 5 + C)`."""
        if self.output_decoded:
            cxcy, wh = rows[:, :2], rows[:, 2:4]
        else:
            cxcy = (rows[:, :2] + self._grid) * self._stride
            wh = np.exp(rows[:, 2:4]) * self._stride
        class_id = rows[:, 5:].argmax(axis=1)
        score = rows[:, 4] * rows[np.arange(len(rows)), 5 + class_id]
        keep = score >= self.conf_threshold
        if not keep.any():
            return Detections.empty()
        cxcy, wh, score, class_id = cxcy[keep], wh[keep], score[keep], class_id[keep]
        xywh = np.concatenate([cxcy - wh / 2, wh], axis=1) / scale
        # Class-aware NMS (a box only suppresses boxes of its own class).
        idx = np.asarray(cv2.dnn.NMSBoxesBatched(xywh.tolist(), score.tolist(), class_id.tolist(),
                                                 self.conf_threshold, self.nms_iou_threshold),
                         dtype=np.int64).reshape(-1)
        xywh, score, class_id = xywh[idx], score[idx], class_id[idx]
        if self.cross_class_iou_threshold is not None and len(score) > 1:
            idx = np.asarray(cv2.dnn.NMSBoxes(xywh.tolist(), score.tolist(), 0.0,
                                              self.cross_class_iou_threshold), dtype=np.int64).reshape(-1)
            idx.sort()
            xywh, score, class_id = xywh[idx], score[idx], class_id[idx]
        h, w = shape_hw
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        xyxy = np.clip(xyxy, 0, [w, h, w, h]).astype(np.float32)
        return Detections(xyxy, score.astype(np.float32), class_id.astype(np.int32))
