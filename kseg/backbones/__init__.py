"""Backbones shared by several models."""

from kseg.backbones.deeplab_vgg import deeplab_vgg16_trunk, load_deeplab_vgg16_imagenet
from kseg.backbones.vgg import VGG16_BLOCKS, load_vgg16_weights, vgg16_imagenet_weights, vgg16_layer_names
from kseg.backbones.vgg import VGG16FCNBackbone, vgg16_fcn_trunk

__all__ = ["VGG16FCNBackbone", "vgg16_fcn_trunk", "deeplab_vgg16_trunk", "load_deeplab_vgg16_imagenet", "VGG16_BLOCKS", "load_vgg16_weights", "vgg16_imagenet_weights", "vgg16_layer_names"]
