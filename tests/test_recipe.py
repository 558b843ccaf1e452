"""The one input recipe (`data.recipe`), checked equal across its four users on one batch:
the device pipeline (JAX), tf.data (TensorFlow), the PyTorch check (NumPy) and the exported
serving function (JAX under jax2tf's input contract: uint8 images)."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf

from msmgan_jax.core import models, sharding
from msmgan_jax.data import arrays, recipe
from msmgan_jax.lab import torch_check
from msmgan_jax.serving import export

from support import dataset_cfg

N, H, C, P = 8, 6, 2, 2
RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, (N, H, H, C)).astype(np.uint8)
MEAN, STD = np.array([0.3, 0.6], np.float32), np.array([0.2, 0.5], np.float32)
CORNERS = RNG.integers(0, 2 * P + 1, (N, 2))
FLIPS = RNG.random(N) < 0.5


def reference(i, corner, flipped):
  """Image i by the recipe's definition, written out: pad, crop, flip, normalise."""
  x = np.pad(IMAGES[i].astype(np.float32) / 255.0, ((P, P), (P, P), (0, 0)))
  x = x[corner[0]:corner[0] + H, corner[1]:corner[1] + H]
  return ((x[:, ::-1] if flipped else x) - MEAN) / STD


def test_numpy_and_jax_recipes_agree_with_the_definition():
  want = np.stack([reference(i, CORNERS[i], FLIPS[i]) for i in range(N)])
  for xp in (np, jnp):
    x = recipe.pad_crop(recipe.to_unit(xp.asarray(IMAGES)), xp.asarray(CORNERS), P)
    x = recipe.normalise(recipe.flip(x, xp.asarray(FLIPS)), MEAN, STD)
    np.testing.assert_allclose(np.asarray(x), want, rtol=1e-6, atol=1e-6)


def test_device_pipeline_batches_are_recipe_batches():
  """Each augmented image of a device-pipeline batch is one of the recipe's (2p+1)^2 x 2
  outcomes of its source image."""
  a = {'train_images': IMAGES, 'train_labels': np.arange(N, dtype=np.int32),
       'test_images': IMAGES, 'test_labels': np.arange(N, dtype=np.int32),
       'mean': MEAN, 'std': STD, 'num_classes': N, 'name': 'x'}
  pipe = arrays.DevicePipeline(a, dataset_cfg(crop_padding=P, flip=True), batch_size=N,
                               eval_batch_size=N, mesh=sharding.mesh())
  batch = next(pipe.train_batches(seed=1))
  for x, i in zip(np.asarray(batch['image']), np.asarray(batch['label'])):
    assert _is_an_outcome(x, i)
  ev = next(pipe.eval_batches())
  np.testing.assert_allclose(np.asarray(ev['image']),
                             recipe.normalise(recipe.to_unit(IMAGES), MEAN, STD), atol=1e-6)


def _is_an_outcome(x, i) -> bool:
  return any(np.allclose(x, reference(i, c, f), atol=1e-6)
             for c, f in itertools.product(itertools.product(range(2 * P + 1), repeat=2),
                                           (False, True)))


def test_tf_data_examples_are_recipe_outcomes():
  for i in range(N):
    for seed in range(3):
      x = recipe.tf_example(tf.constant(IMAGES[i]), MEAN, STD, P, True, True,
                            tf.constant([seed, i], tf.int64), tf.constant([i, seed], tf.int64))
      assert _is_an_outcome(x.numpy(), i)
    plain = recipe.tf_example(tf.constant(IMAGES[i]), MEAN, STD, P, True, False,
                              tf.constant([0, 0], tf.int64), tf.constant([0, 0], tf.int64))
    np.testing.assert_allclose(plain.numpy(), (IMAGES[i] / 255.0 - MEAN) / STD, atol=1e-6)


def test_torch_check_batches_are_recipe_outcomes():
  batches = torch_check.Batches(IMAGES, np.arange(N), MEAN, STD, N, P, True, seed=0)
  x, y = next(batches)
  for im, i in zip(x.transpose(0, 2, 3, 1), y):  # NCHW back to NHWC.
    assert _is_an_outcome(im, i)


def test_the_serving_function_normalises_as_training_evaluates():
  model = models.create_model('cnn', 3)
  variables = model.init(jax.random.key(0), jnp.zeros((1, H, H, C)))
  out = export.serving_fn(model, (MEAN, STD))(variables, jnp.asarray(IMAGES))
  want, _ = model.apply(variables, recipe.normalise(recipe.to_unit(IMAGES), MEAN, STD))
  np.testing.assert_allclose(np.asarray(out['logits']), np.asarray(want), rtol=1e-5, atol=1e-5)
