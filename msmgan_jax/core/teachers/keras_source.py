"""Teacher source `keras`: a Keras 3 model (`.keras` file or object) of any kind.

The model runs whole with `Model.stateless_call` on the JAX backend inside the jitted step,
in inference mode. Sequential, Functional and subclassed models alike: block features are
read by catching the outputs of the layers named in `teacher.feature_layers` ('/'-joined
paths into nested models and layers, say 'backbone/conv4') as they are called, so no
graph is needed; a model with several outputs gives the one `teacher.output` names.
"""
import contextlib
import os
from typing import Callable, Sequence

import jax
import numpy as np

from msmgan_jax.core.teachers.external import Given, pick_output
from msmgan_jax.errors import CheckpointError, ConfigError


def keras_module():
  """Keras 3 on the JAX backend (msmgan_jax sets KERAS_BACKEND=jax unless it was set)."""
  try:
    import keras  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ConfigError('teacher.source keras needs Keras 3: pip install keras') from e
  if not keras.__version__.startswith('3') or keras.config.backend() != 'jax':
    raise ConfigError(
        f'teacher.source keras needs Keras 3 on the JAX backend (found Keras '
        f'{keras.__version__} on {keras.config.backend()!r}): set KERAS_BACKEND=jax before '
        'Python starts, or import msmgan_jax before tensorflow and keras')
  return keras


def keras_model(path: str):
  """The Keras model saved at `path` (`.keras`); CheckpointError when it cannot be read."""
  keras = keras_module()
  path = os.path.abspath(os.path.expanduser(path))
  if not os.path.isfile(path):
    raise CheckpointError(f'teacher checkpoint {path} not found; fix teacher.checkpoints')
  try:
    return keras.saving.load_model(path, compile=False)
  except Exception as e:
    raise CheckpointError(f'teacher checkpoint {path} is not a readable Keras 3 model '
                          f'({type(e).__name__}: {str(e)[:200]}); save it with '
                          'model.save("teacher.keras")') from e


def sublayers(layer) -> list:
  """The layers directly inside `layer` (a model's or a layer's own), input layers left out."""
  keras = keras_module()
  inner = layer._flatten_layers(include_self=False, recursive=False)  # pylint: disable=protected-access
  return [l for l in inner if not isinstance(l, keras.layers.InputLayer)]


def all_layers(model) -> dict:
  """{'/'-joined path: layer} of every layer inside `model`, nested ones too, depth first."""
  out = {}

  def walk(layer, path):
    for sub in sublayers(layer):
      name = path + (sub.name,)
      out['/'.join(name)] = sub
      walk(sub, name)
  walk(model, ())
  return out


def find_layers(model, paths: Sequence[str]) -> list:
  """The layers at `paths` ('/'-joined names, nested models and layers included), or
  CheckpointError listing the model's layers."""
  found = all_layers(model)
  missing = [p for p in paths if p not in found]
  if missing:
    raise CheckpointError(
        f'teacher.feature_layers: {missing} name no layer of the Keras model {model.name!r}; '
        f'its layers are {list(found)[:80]} (python -m msmgan_jax.teachers --config ... lists '
        'them with their output shapes)')
  return [found[p] for p in paths]


@contextlib.contextmanager
def catching(layers: dict, caught: dict):
  """While open, each call of a layer in `layers` ({key: layer}) stores its output under
  its key in `caught` (the last call wins for a layer called twice)."""
  saved = {}
  for key, layer in layers.items():
    if id(layer) in saved:
      continue
    original = layer.call
    saved[id(layer)] = (layer, original)
    keys = [k for k, l in layers.items() if l is layer]

    def call(*args, _original=original, _keys=tuple(keys), **kwargs):
      out = _original(*args, **kwargs)
      for k in _keys:
        caught[k] = out
      return out
    object.__setattr__(layer, 'call', call)
  try:
    yield caught
  finally:
    for layer, _ in saved.values():
      object.__delattr__(layer, 'call')


def named_outputs(model, out) -> dict:
  """{name: output} of what a model returned: a dict's keys, else the Functional model's
  `output_names` (the layers that make them) or indices, else {'output': out}."""
  if isinstance(out, dict):
    return dict(out)
  if isinstance(out, (list, tuple)):
    names = list(getattr(model, 'output_names', None) or [])
    if len(names) != len(out) or len(set(names)) != len(names):
      names = [str(i) for i in range(len(out))]
    return dict(zip(names, out))
  return {'output': out}


def keras_forward(model, feature_layers: Sequence[str], output: str = '',
                  train_kwarg: str = '') -> Callable:
  """forward(variables, x) of a Keras model in inference mode: (the output `output` names
  (see `external.pick_output`), [the outputs of the layers at `feature_layers`]), with
  `variables` = (trainable, non-trainable) values as `keras_variables` gives them.
  `forward.layers(variables, shape)` lists every layer's output shape."""
  del train_kwarg  # Keras's own `training=False` is the switch.
  paths = tuple(feature_layers)
  targets = dict(zip(paths, find_layers(model, paths))) if paths else {}
  where = f'the Keras model {model.name!r}'

  def forward(variables, x):
    caught = {}
    with catching(targets, caught):
      out, _ = model.stateless_call(variables[0], variables[1], x, training=False)
    outs = named_outputs(model, out)
    key = pick_output({k: np.shape(v) for k, v in outs.items()}, output, where)
    missing = [p for p in paths if p not in caught]
    if missing:
      raise CheckpointError(f'teacher.feature_layers: {missing} of {where} are never called '
                            'when it runs; name layers on its path from image to output')
    return outs[key], [caught[p] for p in paths]

  def layers(variables, shape) -> list:
    """[(path, output shape)] of every layer called in one forward pass, in call order."""
    every = all_layers(model)
    order = []

    def run(v, x):
      caught = _Ordered(order)
      with catching(every, caught):
        model.stateless_call(v[0], v[1], x, training=False)
      return dict(caught)
    shapes = jax.eval_shape(run, variables, jax.ShapeDtypeStruct(tuple(shape), np.float32))
    return [(p, np.shape(shapes[p])) for p in dict.fromkeys(order)
            if hasattr(shapes.get(p), 'shape')]
  forward.layers = layers
  forward.input_shape = declared_input(model)
  return forward


def declared_input(model):
  """The image shape (H, W, C) a Keras model declares for its one input (`keras.Input`;
  None for a dimension left free), or None where it declares none (a subclassed model) or
  has several inputs."""
  try:
    inputs = model.inputs
  except (AttributeError, ValueError):
    return None
  if not inputs or len(inputs) != 1 or len(inputs[0].shape) != 4:
    return None
  return tuple(inputs[0].shape[1:])


class _Ordered(dict):
  """A dict that also notes the order its keys are first set in (`order`)."""

  def __init__(self, order: list):
    super().__init__()
    self._order = order

  def __setitem__(self, key, value):
    self._order.append(key)
    super().__setitem__(key, value)


def keras_variables(model) -> tuple:
  """(trainable, non-trainable) variable values of `model`, for `Model.stateless_call`."""
  return ([v.value for v in model.trainable_variables],
          [v.value for v in model.non_trainable_variables])


def keras_teacher(models_or_paths, feature_layers: Sequence[str] = (),
                  inputs: str = 'normalised', outputs: str = 'logits',
                  output: str = '') -> Given:
  """A Keras 3 teacher for `train_and_evaluate(cfg, workdir, teacher=...)`: one model (or
  `.keras` path) per anchor, weakest first, all one architecture; `feature_layers`:
  layer paths whose outputs are the block features (any kind of model; nested layers as
  'outer/inner'); `output`: which of several outputs holds the class scores (a name or an
  index). CheckpointError for anchors of different architectures or unknown layers."""
  items = models_or_paths if isinstance(models_or_paths, (list, tuple)) else [models_or_paths]
  nets = [keras_model(m) if isinstance(m, (str, os.PathLike)) else m for m in items]
  for item, net in zip(items, nets):
    if not net.built:
      raise CheckpointError(f'teacher {item}: the Keras model {net.name!r} is not built (it '
                            'has no weights yet); give the trained model, or call it once on '
                            'a batch of images first')
  find_layers(nets[0], feature_layers)
  values = [keras_variables(n) for n in nets]
  first = jax.tree.map(lambda a: a.shape, values[0])
  for item, v in zip(items[1:], values[1:]):
    if jax.tree.map(lambda a: a.shape, v) != first:
      raise CheckpointError(f'teacher {item} is another architecture than {items[0]}; '
                            'anchors must be one network')
  return Given('keras', nets[0], values, tuple(feature_layers), inputs, outputs, nets[0].name,
               keras_forward, output)


def load(t, info):
  """(Given, name) of the `teacher` config group `t` with source keras."""
  del info
  given = keras_teacher(list(t.checkpoints), t.feature_layers, t.inputs, t.outputs, t.output)
  return given, f'{given.description} (Keras {os.path.basename(t.checkpoints[-1])})'
