"""This library's CIFAR ResNets (`core.models.ResNet`) as Keras 3 Functional models.

`keras_resnet(model_name, variables, image_shape, num_classes)` builds the same network
in Keras, layer for layer (3x3 convolutions padded by one pixel on each side, as Flax's
`padding=1`; BatchNorm epsilon 1e-5), with the Flax variables copied in, and names the
last activation of block k `block<k>` (the block features a Keras teacher declares in
`teacher.feature_layers`). It lets the tests check a Keras teacher against the native one
(same logits) and the benchmark time a kd step with each on the same network.
"""
from typing import Sequence

import numpy as np

from msmgan_jax.core import models


def keras_resnet(model_name: str, variables: dict, image_shape: Sequence[int],
                 num_classes: int):
  """The Keras twin of resnet `model_name` with `variables` ({'params', 'batch_stats'}) in
  it. ValueError for a model that is not one of the library's ResNets."""
  from msmgan_jax.core import teachers  # pylint: disable=g-import-not-at-top
  keras = teachers.keras_module()
  layers = keras.layers
  net = models.create_model(model_name, num_classes)
  if not isinstance(net, models.ResNet):
    raise ValueError(f'{model_name} is not one of the library\'s ResNets')
  params, stats = variables['params'], variables['batch_stats']
  weights = []  # (keras layer, Flax path) pairs, filled in as layers are made.

  def conv(x, filters, size, strides, path):
    # Flax's padding=1 pads one pixel on each side: Keras's 'same' does so at stride 1, but
    # pads (0, 1) at stride 2 on an even size, so those are padded explicitly.
    padding = 'same' if strides == 1 else 'valid'
    if size == 3 and strides != 1:
      x = layers.ZeroPadding2D(1)(x)
    layer = layers.Conv2D(filters, size, strides, padding=padding, use_bias=False)
    weights.append((layer, path))
    return layer(x)

  def norm(x, path):
    layer = layers.BatchNormalization(epsilon=1e-5, momentum=0.9)
    weights.append((layer, path))
    return layer(x)

  n = (net.depth - 2) // 6
  x = inputs = keras.Input(tuple(image_shape))
  for k in range(3):
    block = f'block{k + 1}'
    if k == 0:
      x = layers.ReLU()(norm(conv(x, net.widths[0], 3, 1, (block, 'Conv_0')),
                             (block, 'BatchNorm_0')))
    for i in range(n):
      unit, s = (block, f'BasicBlock_{i}'), 2 if (k > 0 and i == 0) else 1
      y = layers.ReLU()(norm(conv(x, net.widths[k + 1], 3, s, unit + ('Conv_0',)),
                             unit + ('BatchNorm_0',)))
      y = norm(conv(y, net.widths[k + 1], 3, 1, unit + ('Conv_1',)), unit + ('BatchNorm_1',))
      if x.shape[-1] != y.shape[-1] or s != 1:
        x = norm(conv(x, net.widths[k + 1], 1, s, unit + ('Conv_2',)), unit + ('BatchNorm_2',))
      x = layers.ReLU(name=block if i == n - 1 else None)(layers.Add()([x, y]))
  head = layers.Dense(num_classes, name='head')
  weights.append((head, ('head', 'Dense_0')))
  model = keras.Model(inputs, head(layers.GlobalAveragePooling2D()(x)),
                      name=f'keras_{model_name}')

  def at(tree, path):
    for p in path:
      tree = tree[p]
    return tree
  for layer, path in weights:
    p = at(params, path)
    if isinstance(layer, layers.BatchNormalization):
      s = at(stats, path)
      layer.set_weights([np.asarray(p['scale']), np.asarray(p['bias']),
                         np.asarray(s['mean']), np.asarray(s['var'])])
    elif isinstance(layer, layers.Dense):
      layer.set_weights([np.asarray(p['kernel']), np.asarray(p['bias'])])
    else:
      layer.set_weights([np.asarray(p['kernel'])])
  return model
