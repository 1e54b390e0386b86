"""Backbones shared by several models."""

from kseg.backbones.vgg import VGG16_BLOCKS, load_vgg16_weights, vgg16_imagenet_weights, vgg16_layer_names

__all__ = ["VGG16_BLOCKS", "load_vgg16_weights", "vgg16_imagenet_weights", "vgg16_layer_names"]
