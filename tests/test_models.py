"""Model zoo: block structure, shapes, parameter counts, and block-wise (start/stop) calls."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from msmgan_jax.core import models

ALL = sorted(models.MODELS)

# Parameters (millions) of the CIFAR-100 models (num_classes=100, 32x32x3 input), BatchNorm
# scales/biases included, as in RepDistiller (Tian et al., CRD, ICLR 2020), rounded to 2 decimals.
PUBLISHED_M = {
    'resnet20': 0.28, 'resnet56': 0.86, 'resnet110': 1.74,
    'wrn_40_2': 2.26, 'wrn_40_1': 0.57, 'wrn_16_2': 0.70,
    'resnet8x4': 1.23, 'resnet32x4': 7.43,
}
# Reference counts for the remaining CIFAR ResNets (same architecture family), in millions.
REFERENCE_M = {
    'resnet8': 0.0839, 'resnet14': 0.1811, 'resnet20': 0.2783, 'resnet32': 0.4728,
    'resnet44': 0.6672, 'resnet56': 0.8616, 'resnet110': 1.7366, 'resnet8x4': 1.2335,
    'resnet32x4': 7.4339, 'wrn_16_1': 0.1809,
}


def abstract_init(model, shape, batch=2):
  """((logits, feats), variables) as ShapeDtypeStructs: no compilation, no FLOPs."""
  x = jax.ShapeDtypeStruct((batch,) + shape, jnp.float32)
  return jax.eval_shape(
      lambda x: model.init_with_output(jax.random.key(0), x, train=False), x)


def n_params(tree) -> int:
  return int(sum(math.prod(x.shape) for x in jax.tree.leaves(tree)))


@pytest.mark.parametrize('name', ALL)
@pytest.mark.parametrize('shape', [(32, 32, 3), (28, 28, 1)], ids=['32x32x3', '28x28x1'])
def test_output_shapes(name, shape):
  model = models.create_model(name, num_classes=7)
  (logits, feats), variables = abstract_init(model, shape)
  assert logits.shape == (2, 7) and logits.dtype == jnp.float32
  k = model.num_blocks
  assert k == len(model.block_channels) == len(model.block_strides) == len(feats) == 3
  assert model.block_names == tuple(f'block{i + 1}' for i in range(k))
  for feat, channels, stride in zip(feats, model.block_channels, model.block_strides):
    expected = (2, math.ceil(shape[0] / stride), math.ceil(shape[1] / stride), channels)
    assert feat.shape == expected, (name, feat.shape, expected)
  # Top-level parameter collections are exactly block1..blockK and head.
  assert sorted(variables['params']) == sorted(model.block_names + ('head',))
  assert set(variables) == {'params', 'batch_stats'}
  assert variables['params']['head']['Dense_0']['kernel'].shape == (model.block_channels[-1], 7)


def test_spatial_sizes_explicit():
  """28x28 inputs: 28 -> 14 -> 7 for the ResNets; the CNN keeps full size in block 1."""
  (_, feats), _ = abstract_init(models.create_model('resnet20', 10), (28, 28, 1))
  assert [f.shape[1:3] for f in feats] == [(28, 28), (14, 14), (7, 7)]
  (_, feats), _ = abstract_init(models.create_model('cnn', 10), (32, 32, 3))
  assert [f.shape[1:] for f in feats] == [(32, 32, 32), (16, 16, 64), (8, 8, 128)]


@pytest.mark.parametrize('name', ALL)
def test_param_counts_cifar100(name):
  model = models.create_model(name, num_classes=100)
  _, variables = abstract_init(model, (32, 32, 3), batch=1)
  millions = n_params(variables['params']) / 1e6
  if name in PUBLISHED_M:
    assert abs(millions - PUBLISHED_M[name]) <= 0.01 + 1e-9, (name, millions)
    assert round(millions, 2) == PUBLISHED_M[name], (name, millions)
  if name in REFERENCE_M:
    assert millions == pytest.approx(REFERENCE_M[name], rel=0.02), (name, millions)
  if name not in PUBLISHED_M and name not in REFERENCE_M:  # the small CNN: a sanity range.
    assert 0.05 < millions < 0.2, (name, millions)
  # The head is GAP + dense: (C_last + 1) * classes parameters.
  assert n_params(variables['params']['head']) == (model.block_channels[-1] + 1) * 100


def test_bfloat16_model_keeps_float32_logits_and_params():
  model = models.create_model('resnet8', 10, dtype=jnp.bfloat16)
  (logits, feats), variables = abstract_init(model, (32, 32, 3))
  assert logits.dtype == jnp.float32
  assert all(f.dtype == jnp.bfloat16 for f in feats)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables['params']))


def test_create_model_unknown_name():
  with pytest.raises(ValueError, match=r"unknown model 'resnet999'.*resnet20"):
    models.create_model('resnet999', 10)


# One model per block type (ResNet v1 with 2 units per block, pre-activation WRN, plain CNN):
# deeper/wider variants only repeat or widen the same units, so these cover every code path
# of `start`/`stop` while keeping the CPU compile time small.
@pytest.mark.parametrize('name', ['resnet14', 'wrn_16_1', 'cnn'])
def test_start_stop_composition_equals_full_forward(name):
  model = models.create_model(name, num_classes=10)
  x = jax.random.normal(jax.random.key(1), (2, 12, 12, 3))
  variables = jax.jit(model.init, static_argnames='train')(jax.random.key(0), x, train=False)
  # Non-trivial BatchNorm statistics, so eval mode is not an identity normalisation.
  stats, treedef = jax.tree.flatten(variables['batch_stats'])
  keys = jax.random.split(jax.random.key(2), len(stats))
  stats = [0.1 * jax.random.normal(k, s.shape) if s.ndim == 1 and i % 2 == 0 else
           jax.random.uniform(k, s.shape, minval=0.5, maxval=1.5)
           for i, (k, s) in enumerate(zip(keys, stats))]
  variables = {'params': variables['params'], 'batch_stats': jax.tree.unflatten(treedef, stats)}

  @jax.jit
  def run(variables, x):
    apply = lambda inp, **kw: model.apply(variables, inp, train=False, **kw)
    full = apply(x)
    out = {'full': full}
    for cut in (1, 2):
      head_less, first = apply(x, stop=cut)
      assert head_less is None  # the head runs only when stop == K (checked at trace time).
      out[f'cut{cut}'] = (first, apply(first[-1], start=cut))
    head_less, mid = apply(full[1][0], start=1, stop=2)
    assert head_less is None
    out['mid'] = mid
    return out

  out = run(variables, x)
  logits, feats = out['full']
  assert logits.shape == (2, 10) and len(feats) == 3
  assert float(jnp.std(logits)) > 1e-3  # a non-degenerate forward.
  for cut in (1, 2):
    first, (rest_logits, rest) = out[f'cut{cut}']
    assert len(first) == cut and len(rest) == 3 - cut
    np.testing.assert_allclose(rest_logits, logits, rtol=1e-5, atol=1e-5)
    for got, want in zip(list(first) + list(rest), feats):
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # A single block on its own (start=1, stop=2) maps feat1 to feat2.
  assert len(out['mid']) == 1
  np.testing.assert_allclose(out['mid'][0], feats[1], rtol=1e-5, atol=1e-5)
