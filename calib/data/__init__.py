"""Deployment validation sets: Ultralytics dataset YAML, a folder of images with YOLO labels, COCO JSON.

``load_dataset`` reads and validates the labels (no pixels); ``iter_images`` decodes the images,
skipping unreadable ones with a count in the report and stopping when more than 5% fail. The
validation rules are listed in ``calib.data.types``.

    types      Sample, LabelReport, Dataset
    files      text / YAML files and image lists
    yolo       YOLO txt labels (``label_path_for``)
    coco       COCO instances JSON
    names      class names (``read_names_file``)
    loading    ``load_dataset``
    iteration  ``iter_images``
"""
from ..images import IMAGE_EXTENSIONS
from .iteration import iter_images
from .loading import load_dataset
from .names import read_names_file
from .types import MAX_DETAILS_PER_KIND, MAX_UNREADABLE_FRAC, Dataset, LabelReport, Sample
from .yolo import label_path_for

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_DETAILS_PER_KIND",
    "MAX_UNREADABLE_FRAC",
    "Dataset",
    "LabelReport",
    "Sample",
    "iter_images",
    "label_path_for",
    "load_dataset",
    "read_names_file",
]
