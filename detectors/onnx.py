"""ONNX Runtime sessions for every model adapter (detector, embedders, bin classifier, water
segmenter): provider selection and loading with our errors."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from detectors.base import DetectorError

log = logging.getLogger(__name__)


def select_providers(requested: Sequence[str]) -> list[str]:
    """Keep the requested onnxruntime providers that this machine has, CPU last.

    Args:
        requested: Provider names in order of preference, e.g.
            ``("CUDAExecutionProvider", "CPUExecutionProvider")``.

    Returns:
        The available ones in the same order, always ending with ``"CPUExecutionProvider"``;
        each unavailable one is logged at INFO (a config that lists CUDA first runs
        unchanged on a CPU machine; the provider in use is logged when the model loads).
    """
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    chosen: list[str] = []
    for name in requested:
        if name == "CPUExecutionProvider":
            continue
        if name in available:
            chosen.append(name)
        else:
            log.info("onnxruntime provider %s is not available here (available: %s); skipped",
                     name, ", ".join(sorted(available)))
    return [*chosen, "CPUExecutionProvider"]


def load_session(path: str | Path, providers: Sequence[str] = ("CPUExecutionProvider",),
                 intra_op_num_threads: int | None = None,
                 error: type[DetectorError] = DetectorError):  # noqa: ANN201 - onnxruntime.InferenceSession
    """Open an ONNX model with ONNX Runtime (imported lazily, so weights-free paths never load it).

    Args:
        path: The ``.onnx`` file (its existence is checked by the caller, which names the model).
        providers: Execution providers in order of preference (see :func:`select_providers`).
        intra_op_num_threads: Threads per operator; ``None`` = ONNX Runtime's default.
        error: Exception class raised when the file cannot be loaded.

    Returns:
        The ``onnxruntime.InferenceSession``.

    Raises:
        DetectorError: (or ``error``) When ONNX Runtime cannot load the file.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    if intra_op_num_threads is not None:
        options.intra_op_num_threads = intra_op_num_threads
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=select_providers(providers))
    except Exception as exc:  # onnxruntime raises its own non-exported exception types
        raise error(f"cannot load ONNX model {path}: {exc}") from exc
