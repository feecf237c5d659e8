"""Calibration: zones, image-to-ground homographies and WGS84 <-> local metres."""

from calibration.homography import (
    CalibrationError,
    GroundPoint,
    Homography,
    fit_homography,
    latlon_to_local_m,
    local_m_to_latlon,
)
from calibration.zones import Zone, ZoneError

__all__ = ["CalibrationError", "GroundPoint", "Homography", "Zone", "ZoneError", "fit_homography",
           "latlon_to_local_m", "local_m_to_latlon"]
