"""tf.data pipelines for segmentation: folder readers, joint augmentation, class weights.

    >>> from kseg import data
    >>> pairs = data.find_pairs("../shared/data/camvid", "train")  # doctest: +SKIP
    >>> ds = data.segmentation_dataset(pairs, batch_size=4, shuffle=True,
    ...                                augment=data.joint_augmentation(crop_size=(360, 480)),
    ...                                class_weights=data.median_frequency_weights(pairs))  # doctest: +SKIP
"""

from kseg.data.augment import JointAugmentation, joint_augmentation
from kseg.data.class_weights import class_pixel_counts, median_frequency_weights
from kseg.data.errors import DataError
from kseg.data.folder import find_pairs, read_image_info, segmentation_dataset, validate_pairs
from kseg.data.scan import find_corrupt_file
from kseg.data.synthetic import synthetic_scenes, write_synthetic_dataset

__all__ = [
    "DataError",
    "JointAugmentation",
    "class_pixel_counts",
    "find_corrupt_file",
    "find_pairs",
    "joint_augmentation",
    "median_frequency_weights",
    "read_image_info",
    "segmentation_dataset",
    "synthetic_scenes",
    "validate_pairs",
    "write_synthetic_dataset",
]
from kseg.data.coco import CocoInstances, InstanceDataError, load_coco, load_mask_folder, validate_coco  # noqa: E402
from kseg.data.instances import DeepMaskSampler, PatchConfig, deepmask_dataset, detector_samples  # noqa: E402

__all__ += ["CocoInstances", "InstanceDataError", "load_coco", "load_mask_folder", "validate_coco",
            "DeepMaskSampler", "PatchConfig", "deepmask_dataset", "detector_samples"]
