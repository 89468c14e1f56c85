"""Images in, as the model reads them: registered datasets by name, folders of image files by path.

    images.py     ImageSet, decoding rules, range / channel / size conversion
    folders.py    folders of image files (listing, seeded ID halves, one error naming every bad file)
    registry.py   the registry of named datasets; load_dataset, load_images
    offline.py    the sets of the offline profile (shipped or generated here)
    paper.py      the paper profile's public sets, read from their published formats
    downloads.py  the one download folder and checksummed downloads into it

Importing the package registers both providers' datasets; nothing else registers behind the scenes.
"""
from .folders import folder_summary, is_folder_source, list_image_files, load_image_folder
from .images import (ImageSet, check_images, convert_channels, decode_image, image_hashes, item_names, resize,
                     uint8_to_model_range)
from .offline import OFFLINE_DATASETS
from .paper import PAPER_DATASETS, check_available
from .registry import DATASETS, DatasetSpec, dataset_title, load_dataset, load_images, register, source_problem

for _spec in OFFLINE_DATASETS + PAPER_DATASETS:
    register(_spec)
del _spec

__all__ = ["DATASETS", "DatasetSpec", "ImageSet", "check_available", "check_images", "convert_channels",
           "dataset_title", "decode_image", "folder_summary", "image_hashes", "is_folder_source", "item_names",
           "list_image_files",
           "load_dataset", "load_image_folder", "load_images", "register", "resize", "source_problem",
           "uint8_to_model_range"]
