"""Pixel conventions shared by the models and the metrics: checks, conversions, augmentation.

Every image batch in course_lib is float ``[B, H, W]``. The VAE reads pixels in [0, 1] (binarised
for its Bernoulli decoder, chapter 5.2.1, 05a_vae_in_practice), the GAN's generator writes them in
[-1, 1] (its tanh, chapter 5.2.2, 05b_gan_in_practice), and the FD-LeNet classifier reads [0, 1].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def check_image_batch(images, image_shape, config: str, convert: str) -> None:
    """Raise a ValueError naming the fix unless ``images`` is a float batch [B, *image_shape].

    Models call it on traced arrays, so a wrong batch fails at compile time, before any step.
    ``config`` names the setting that fixes the shape, ``convert`` the expression that fixes
    the dtype. Taught in chapter 5 (05a_vae_in_practice).
    """
    h, w = image_shape
    if images.ndim != 3 or tuple(images.shape[1:]) != (h, w):
        raise ValueError(
            f"expected images of shape [batch, {h}, {w}], got {tuple(images.shape)}; reshape them "
            f"(e.g. x.reshape(-1, {h}, {w})) or set {config}(image_shape=...) to match"
        )
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"expected float images, got dtype {images.dtype}; convert with {convert}")


def binarize(images) -> np.ndarray:
    """uint8 pixels -> {0, 1} float32 at the threshold 0.5 (pixel >= 128).

    The Bernoulli decoder's data (chapter 5.2.1, 05a_vae_in_practice).
    """
    return (np.asarray(images) >= 128).astype(np.float32)


def translate(key, images, shift: int, fill: float = 0.0):
    """Shift each image of ``[B, H, W]`` by up to ``shift`` pixels each way, filling with ``fill``.

    Two users, one function: DiffAugment (Zhao et al., 2020) shows the GAN's D translated real
    *and* fake images (background -1), which keeps it from memorising a set as small as mnist10k,
    and being differentiable it still passes G its gradients (05b_gan_in_practice); the FD-LeNet
    classifier trains on shifted digits (background 0) as cheap extra data.
    """
    if shift == 0:
        return images
    b, h, w = images.shape
    pad = ((0, 0), (shift, shift), (shift, shift))
    padded = jnp.pad(images, pad, constant_values=fill)
    offsets = jax.random.randint(key, (b, 2), 0, 2 * shift + 1)
    crop = lambda img, o: jax.lax.dynamic_slice(img, (o[0], o[1]), (h, w))  # noqa: E731
    return jax.vmap(crop)(padded, offsets)


def space_to_depth(x, block: int):
    """[B, H, W, C] -> [B, H/b, W/b, C*b*b]: every b x b patch of pixels becomes channels."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // block, block, w // block, block, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, h // block, w // block, c * block**2)


def depth_to_space(x, block: int = 2):
    """[B, H, W, C*b*b] -> [B, H*b, W*b, C], the inverse of :func:`space_to_depth`: the sub-pixel
    upsampling of Shi et al. (2016) that the GAN (05b) and the diffusion U-Net (08) use."""
    b, h, w, c = x.shape
    x = x.reshape(b, h, w, block, block, c // block**2)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, h * block, w * block, c // block**2)
