"""Moved to `calib.artifact.calibration_map` (the contract); this name stays for the modules of
the other half until they import from `calib.artifact`."""
from .artifact.calibration_map import *  # noqa: F401,F403
