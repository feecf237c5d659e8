"""``argparse`` value types shared by the CLI modules: numbers with bounds and a clear message."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """An integer >= 1.

    Raises:
        argparse.ArgumentTypeError: Otherwise (argparse prints it as a usage error).
        ValueError: When the text is not an integer (argparse reports "invalid ... value").
    """
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0.

    Raises:
        argparse.ArgumentTypeError: Otherwise.
        ValueError: When the text is not an integer.
    """
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    """A number > 0.

    Raises:
        argparse.ArgumentTypeError: Otherwise.
        ValueError: When the text is not a number.
    """
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value
