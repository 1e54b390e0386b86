"""Array layout transforms from Caffe / Torch7 conventions to Keras', written once.

Caffe and Torch7 store convolution kernels as (out, in, kh, kw) and compute a cross-correlation,
as Keras does, so only the axes move (no spatial flip). Keras wants (kh, kw, in, out) for
``Conv2D`` and (kh, kw, out, in) for ``Conv2DTranspose``; ``Dense`` wants (in, out).
All functions accept any array-like, return a new C-contiguous float32 array, and raise
``ValueError`` naming the bad shape.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "caffe_conv_kernel",
    "caffe_deconv_kernel",
    "caffe_fc_to_conv",
    "caffe_fc_to_dense",
    "caffe_batchnorm",
    "torch_conv_kernel",
    "torch_deconv_kernel",
    "torch_linear",
]


def _f32(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


def _out(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


def caffe_conv_kernel(w_oihw) -> np.ndarray:
    """Caffe ``Convolution`` weights (out, in/group, kh, kw) -> Keras ``Conv2D`` (kh, kw, in, out)."""
    w = _f32(w_oihw)
    if w.ndim != 4:
        raise ValueError(f"convolution weights must be 4-d (out, in, kh, kw), got shape {w.shape}")
    return _out(w.transpose(2, 3, 1, 0))


def caffe_deconv_kernel(w_iohw) -> np.ndarray:
    """Caffe ``Deconvolution`` weights -> Keras ``Conv2DTranspose`` (kh, kw, out, in).

    Caffe's deconvolution is the backward pass of a convolution whose input is the deconvolution's
    output, so its blob is (in = bottom channels, out = num_output / group, kh, kw); Keras' kernel
    is that forward convolution's HWIO kernel, i.e. (kh, kw, out, in). No spatial flip: both are
    exact transposes of the same cross-correlation.
    """
    w = _f32(w_iohw)
    if w.ndim != 4:
        raise ValueError(f"deconvolution weights must be 4-d (in, out, kh, kw), got shape {w.shape}")
    return _out(w.transpose(2, 3, 1, 0))


def caffe_fc_to_conv(w, kernel_hw, in_channels: int) -> np.ndarray:
    """Caffe ``InnerProduct`` weights (out, in) -> an equivalent convolution kernel (kh, kw, C, out).

    Caffe flattens its (C, H, W) bottom blob in C-major order, so row ``o`` of ``w`` reshapes to
    (C, kh, kw); this is how FCN convolutionalises VGG's fc6 (7x7x512 -> 4096). A 4-d blob of
    shape (out, in, 1, 1) (old Caffe files) is accepted too.
    """
    w = _f32(w)
    kh, kw = (int(kernel_hw), int(kernel_hw)) if np.isscalar(kernel_hw) else map(int, kernel_hw)
    if w.ndim == 4 and w.shape[2:] == (1, 1):
        w = w.reshape(w.shape[0], w.shape[1])
    elif w.ndim == 4 and w.shape[0] == 1 and w.shape[1] == 1:  # legacy (1, 1, out, in)
        w = w.reshape(w.shape[2], w.shape[3])
    if w.ndim == 4 and w.shape[1:] == (in_channels, kh, kw):
        return caffe_conv_kernel(w)
    if w.ndim != 2 or w.shape[1] != in_channels * kh * kw:
        raise ValueError(
            f"inner-product weights of shape {w.shape} cannot become a {kh}x{kw} convolution over "
            f"{in_channels} channels (expected (out, {in_channels * kh * kw}))"
        )
    return caffe_conv_kernel(w.reshape(w.shape[0], in_channels, kh, kw))


def caffe_fc_to_dense(w) -> np.ndarray:
    """Caffe ``InnerProduct`` weights (out, in) -> Keras ``Dense`` kernel (in, out).

    Legacy 4-d blobs (1, 1, out, in) and (out, in, 1, 1) are squeezed first.
    """
    w = _f32(w)
    if w.ndim == 4 and w.shape[0] == 1 and w.shape[1] == 1:
        w = w.reshape(w.shape[2], w.shape[3])
    elif w.ndim == 4 and w.shape[2:] == (1, 1):
        w = w.reshape(w.shape[0], w.shape[1])
    if w.ndim != 2:
        raise ValueError(f"inner-product weights must be 2-d (out, in), got shape {w.shape}")
    return _out(w.T)


def caffe_batchnorm(blobs) -> tuple[np.ndarray, np.ndarray]:
    """Caffe ``BatchNorm`` blobs [mean * s, var * s, s] -> (mean, var).

    Caffe accumulates running sums and stores the scale factor ``s`` as a third one-element blob;
    the statistics are the first two blobs divided by it, and all zero when it is 0 (as Caffe does).
    """
    if len(blobs) < 3:
        raise ValueError(f"a Caffe BatchNorm layer has 3 blobs (mean, variance, scale factor), got {len(blobs)}")
    mean = _f32(blobs[0]).reshape(-1)
    var = _f32(blobs[1]).reshape(-1)
    s = _f32(blobs[2]).reshape(-1)
    if s.size != 1:
        raise ValueError(f"a Caffe BatchNorm scale factor is one number, got shape {np.shape(blobs[2])}")
    if mean.shape != var.shape:
        raise ValueError(f"BatchNorm mean {mean.shape} and variance {var.shape} differ in shape")
    factor = np.float32(0.0) if s[0] == 0 else np.float32(1.0) / s[0]
    return _out(mean * factor), _out(var * factor)


def torch_conv_kernel(w, kernel_hw=None, in_channels: int | None = None) -> np.ndarray:
    """Torch7 ``SpatialConvolution`` weights (out, in, kh, kw) -> Keras ``Conv2D`` (kh, kw, in, out).

    ``SpatialConvolutionMM`` may store a 2-d (out, in*kh*kw) weight; pass ``kernel_hw`` and
    ``in_channels`` to reshape it.
    """
    w = _f32(w)
    if w.ndim == 2 and kernel_hw is not None and in_channels is not None:
        kh, kw = (int(kernel_hw), int(kernel_hw)) if np.isscalar(kernel_hw) else map(int, kernel_hw)
        if w.shape[1] != in_channels * kh * kw:
            raise ValueError(
                f"SpatialConvolutionMM weights of shape {w.shape} do not fit a {kh}x{kw} kernel over "
                f"{in_channels} channels"
            )
        w = w.reshape(w.shape[0], in_channels, kh, kw)
    if w.ndim != 4:
        raise ValueError(f"convolution weights must be 4-d (out, in, kh, kw), got shape {w.shape}")
    return _out(w.transpose(2, 3, 1, 0))


def torch_deconv_kernel(w_iohw) -> np.ndarray:
    """Torch7 ``SpatialFullConvolution`` weights (in, out, kh, kw) -> Keras ``Conv2DTranspose``
    (kh, kw, out, in); same convention as Caffe's Deconvolution."""
    return caffe_deconv_kernel(w_iohw)


def torch_linear(w) -> np.ndarray:
    """Torch7 ``nn.Linear`` weights (out, in) -> Keras ``Dense`` kernel (in, out)."""
    w = _f32(w)
    if w.ndim != 2:
        raise ValueError(f"linear weights must be 2-d (out, in), got shape {w.shape}")
    return _out(w.T)
