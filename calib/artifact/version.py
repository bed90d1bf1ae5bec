"""The one version string of detcal (the artifact, the patched model's metadata, `calib.__version__`, pyproject)."""
DETCAL_VERSION = "0.1.0"
