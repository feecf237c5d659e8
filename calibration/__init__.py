"""Calibration: zones, and later homographies and per-camera settings."""

from calibration.zones import Zone, ZoneError

__all__ = ["Zone", "ZoneError"]
