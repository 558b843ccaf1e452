"""The one input recipe: what every image goes through before a network sees it.

1. `to_unit`: uint8 pixels to float32 on [0, 1] (float images are taken as already there);
2. training only: `pad_crop` (zero padding by `dataset.crop_padding` pixels on each side,
   then an H x W window at a random corner, each of the 2p + 1 offsets per axis equally
   likely) and `flip` (left-right, with probability 1/2);
3. `normalise`: (x - mean) / std per channel (the dataset's training statistics).

Each pipeline applies these functions: the device pipeline (`data.arrays`, JAX arrays,
inside its jitted batch function), the PyTorch check (`lab.torch_check`, NumPy) and the
exported serving function (`serving.export`, JAX under jax2tf); the tf.data pipeline
(`data.datasets`) applies `tf_example`, the same steps per example in TensorFlow ops (its
random draws are TensorFlow's). `tests/test_recipe.py` checks all four on one batch.
Arrays are NHWC; `corners` (N, 2) int offsets in [0, 2p], `flips` (N,) bool.
"""
import numpy as np


def _xp(x):
  """jax.numpy for a JAX array (or tracer), numpy otherwise."""
  if isinstance(x, np.ndarray) or np.isscalar(x):
    return np
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  return jnp


def to_unit(images):
  """Images on [0, 1] in float32: uint8 ones are divided by 255, float ones already are."""
  xp = _xp(images)
  x = images.astype(xp.float32)
  return x / 255.0 if images.dtype == xp.uint8 else x


def normalise(x, mean, std):
  """(x - mean) / std per channel: x (..., C) on [0, 1], mean and std (C,)."""
  return (x - mean) / std


def pad_crop(x, corners, p: int):
  """Each image of x (N, H, W, C) zero-padded by p pixels on every side, then cropped back
  to H x W at its corner (y, x) in `corners` (N, 2), 0 <= y, x <= 2p."""
  xp = _xp(x)
  _, h, w, c = x.shape
  padded = xp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
  if xp is np:
    return np.stack([padded[i, y:y + h, z:z + w] for i, (y, z) in enumerate(corners)])
  import jax  # pylint: disable=g-import-not-at-top
  return jax.vmap(lambda im, yx: jax.lax.dynamic_slice(im, (yx[0], yx[1], 0), (h, w, c)))(
      padded, corners)


def flip(x, flips):
  """The images of x (N, H, W, C) whose `flips` entry is true, mirrored left-right."""
  xp = _xp(x)
  return xp.where(flips[:, None, None, None], x[:, :, ::-1], x)


def tf_to_unit(image, image_size: int = 0):
  """`to_unit` in TensorFlow: uint8 (H, W, C) -> float32 on [0, 1], resized (antialiased) to
  image_size x image_size unless that is 0."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  image = tf.cast(image, tf.float32) / 255.0
  return tf.image.resize(image, (image_size, image_size), antialias=True) if image_size else image


def tf_example(image, mean, std, crop_padding: int, do_flip: bool, train: bool, crop_seed,
               flip_seed, image_size: int = 0):
  """The recipe on one tf.data example (H, W, C) uint8, with TensorFlow's stateless random
  crop and flip (seeds: int64 pairs); `image_size` > 0 resizes (antialiased) first."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  image = tf_to_unit(image, image_size)
  if train and crop_padding > 0:
    shape = tf.shape(image)
    p = crop_padding
    image = tf.pad(image, [[p, p], [p, p], [0, 0]], mode='CONSTANT')
    image = tf.image.stateless_random_crop(image, shape, crop_seed)
  if train and do_flip:
    image = tf.image.stateless_random_flip_left_right(image, flip_seed)
  return normalise(image, mean, std)
