"""Exact O(N^2) numpy mean field of the fully connected CRF, for tests on small images.

No lattice: the kernel matrices ``K[i, j] = exp(-|f_i - f_j|^2 / 2)`` are formed explicitly
(including the diagonal j = i, as the authors' filtering code does), so N must stay small
(a 12x10 image is 120 pixels). Same conventions as :func:`kseg.crf.dense_crf`.
"""

import numpy as np

__all__ = ["gaussian_kernel_matrix", "reference_features", "reference_mean_field", "reference_dense_crf"]


def reference_features(image, theta_alpha, theta_beta, theta_gamma):
    """(bilateral (N, 5), spatial (N, 2)) float64 features of an (H, W, 3) image."""
    image = np.asarray(image, np.float64)
    h, w = image.shape[:2]
    ys, xs = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    xy = np.stack([xs, ys], -1).reshape(-1, 2)
    bil = np.concatenate([xy / theta_alpha, image.reshape(-1, 3) / theta_beta], -1)
    return bil, xy / theta_gamma


def gaussian_kernel_matrix(features):
    """Exact (N, N) Gaussian kernel ``exp(-|f_i - f_j|^2 / 2)`` of (N, d) features."""
    f = np.asarray(features, np.float64)
    sq = np.sum((f[:, None, :] - f[None, :, :]) ** 2, -1)
    return np.exp(-0.5 * sq)


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def reference_mean_field(unary_logits, kernels, weights, num_iterations, compatibility=None, normalization="after"):
    """Exact mean field: ``kernels`` are (N, N) matrices, ``weights`` their scalar weights."""
    u = np.asarray(unary_logits, np.float64)
    normed = []
    for k in kernels:
        s = k.sum(1)
        if normalization == "after":
            normed.append(k / (s[:, None] + 1e-20))
        elif normalization == "symmetric":
            n = 1.0 / np.sqrt(s + 1e-20)
            normed.append(n[:, None] * k * n[None, :])
        elif normalization == "none":
            normed.append(k / s.mean())
        else:
            raise ValueError(f"unknown normalization {normalization!r}")
    q = _softmax(u)
    for _ in range(num_iterations):
        msg = sum(w * (k @ q) for k, w in zip(normed, weights))
        pairwise = msg if compatibility is None else -msg @ np.asarray(compatibility, np.float64).T
        q = _softmax(u + pairwise)
    return q


def reference_dense_crf(
    unary,
    image,
    num_iterations=10,
    theta_alpha=121.0,
    theta_beta=5.0,
    theta_gamma=3.0,
    bilateral_weight=4.0,
    spatial_weight=3.0,
    compatibility=None,
    unary_is="logits",
    normalization="after",
):
    """Exact counterpart of :func:`kseg.crf.dense_crf` for one (H, W, L) unary; returns Q (H, W, L)."""
    unary = np.asarray(unary, np.float64)
    h, w, n_labels = unary.shape
    logits = unary.reshape(-1, n_labels)
    if unary_is == "probabilities":
        logits = np.log(np.maximum(logits, 1e-8))
    bil, spa = reference_features(image, theta_alpha, theta_beta, theta_gamma)
    kernels = [gaussian_kernel_matrix(bil), gaussian_kernel_matrix(spa)]
    q = reference_mean_field(logits, kernels, [bilateral_weight, spatial_weight], num_iterations, compatibility, normalization)
    return q.reshape(h, w, n_labels)
