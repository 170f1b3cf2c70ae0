"""Image data: the shared benchmark registry, reproducible seeds and random-crop patch datasets."""

from converge.data.patches import PatchDataset, dihedral
from converge.data.registry import (
    SETS,
    ImageSet,
    cache_root,
    convert_channels,
    data_root,
    get_set,
    list_images,
    load_images,
)
from converge.data.seeding import evaluation_generator, seed_everything, stable_seed

__all__ = [
    "SETS",
    "ImageSet",
    "PatchDataset",
    "cache_root",
    "convert_channels",
    "data_root",
    "dihedral",
    "evaluation_generator",
    "get_set",
    "list_images",
    "load_images",
    "seed_everything",
    "stable_seed",
]
