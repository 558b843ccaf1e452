"""Teachers from outside the library: a Flax module, a Keras 3 model, a TensorFlow SavedModel.

The trainer sees every teacher through the interface of `core.models.Classifier`:
`apply(variables, x, train=False, start=0, stop=None, with_head=True) -> (logits, feats)`
with `block_channels`, `block_strides`, `num_blocks` and `block_names`. A Flax
`Classifier` (this library's block structure) is used as it is and serves every method.
Any other teacher is wrapped in `External`, which runs the whole network once per call
(inside the jitted step) and returns its logits and the outputs of the layers named in
`teacher.feature_layers` as its block features:

| source | how it runs in the step | block features | upper network (msmgan, srrl) |
|---|---|---|---|
| Flax `Classifier` | `module.apply` | every block | yes |
| other Flax module | `module.apply(..., capture_intermediates=...)` | named sub-modules | no |
| Keras 3 (`.keras`) | `Model.stateless_call` on the JAX backend | named layers | no |
| TF SavedModel | `jax2tf.call_tf` | none (logits only) | no |

So an external teacher serves the logit methods (kd, dkd, rco, ...) and, with feature
layers, the feature methods that compare block maps (fitnets, at, skd); methods that run the
teacher's upper blocks on student maps or train a copy of it (MS-MGANs with its teacher
discriminator or mutual learning, srrl) need a Flax `Classifier` (`check_serves` says so).

Inputs: the data pipeline gives images standardised by the dataset's mean and std;
`teacher.inputs` converts them back for a teacher trained on [0, 1] (`unit`) or 0..255
(`raw`) pixels. Outputs: `teacher.outputs = 'probabilities'` takes the log of a softmax
output, which gives the same softmax (and so the same KD target) as its logits would.
"""
import dataclasses
import importlib
import inspect
import os
import sys
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from msmgan_jax.errors import CheckpointError, ConfigError

SOURCES = ('msmgan_jax', 'flax', 'keras', 'saved_model')
INPUTS = ('normalised', 'unit', 'raw')
OUTPUTS = ('logits', 'probabilities')


@dataclasses.dataclass
class Given:
  """A teacher given from Python (`train_and_evaluate(..., teacher=...)`; build it with
  `flax_teacher` or `keras_teacher`): the network, one variables object per anchor (weakest
  first), and how to read it (the `teacher.*` fields of the same names)."""
  source: str                 # flax | keras.
  network: Any                # a Linen module, or the Keras network from `keras_network`.
  variables: list             # one per anchor.
  feature_layers: tuple = ()
  inputs: str = 'normalised'
  outputs: str = 'logits'
  description: str = ''

  def __post_init__(self):
    if not self.variables:
      raise ConfigError('a teacher needs at least one set of variables (one per anchor)')
    for field, value, allowed in (('inputs', self.inputs, INPUTS),
                                  ('outputs', self.outputs, OUTPUTS)):
      if value not in allowed:
        raise ConfigError(f'teacher {field} {value!r} is not one of {allowed}')

  def build(self, info):
    """The model the trainer runs (a `Classifier` as it is, else an `External`) for data
    `info` (a `data.DatasetInfo`: image shape, normalisation)."""
    from msmgan_jax.core import models  # pylint: disable=g-import-not-at-top
    if self.source == 'flax' and isinstance(self.network, models.Classifier):
      if self.feature_layers:
        raise ConfigError('config field teacher.feature_layers: a Classifier teacher gives '
                          "its blocks' features; leave it empty")
      return self.network
    forward = (flax_forward(self.network, self.feature_layers) if self.source == 'flax'
               else keras_forward(self.network, bool(self.feature_layers)))
    return External(forward, self.variables[0], info.image_shape, self.feature_layers,
                    self.inputs, self.outputs, info.mean, info.std,
                    f'the {self.source} teacher {self.description}')


def flax_teacher(module, variables, feature_layers: Sequence[str] = (),
                 inputs: str = 'normalised', outputs: str = 'logits') -> Given:
  """A Flax teacher for `train_and_evaluate(cfg, workdir, teacher=...)`: a Linen `module`
  and its `variables` ({'params': ..., 'batch_stats': ...}; a list of them for several
  anchors, weakest first). A `core.models.Classifier` serves every method; any other module
  serves logit methods, and feature methods through `feature_layers` (sub-module paths,
  one per student block, see `flax_forward`). ConfigError for bad `inputs`/`outputs`."""
  variables = list(variables) if isinstance(variables, (list, tuple)) else [variables]
  return Given('flax', module, variables, tuple(feature_layers), inputs, outputs,
               type(module).__name__)


def keras_teacher(models_or_paths, feature_layers: Sequence[str] = (),
                  inputs: str = 'normalised', outputs: str = 'logits') -> Given:
  """A Keras 3 teacher for `train_and_evaluate(cfg, workdir, teacher=...)`: one model (or
  `.keras` path) per anchor, weakest first, all one architecture; run with
  `Model.stateless_call` on the JAX backend inside the jitted step. `feature_layers`: layer
  names whose outputs are the block features (Functional or Sequential models)."""
  items = models_or_paths if isinstance(models_or_paths, (list, tuple)) else [models_or_paths]
  nets = [keras_network(keras_model(m) if isinstance(m, (str, os.PathLike)) else m,
                        feature_layers) for m in items]
  first = jax.tree.map(lambda a: a.shape, nets[0][1])
  for item, (_, v) in zip(items[1:], nets[1:]):
    if jax.tree.map(lambda a: a.shape, v) != first:
      raise CheckpointError(f'teacher {item} is another architecture than {items[0]}; '
                            'anchors must be one network')
  return Given('keras', nets[0][0], [v for _, v in nets], tuple(feature_layers), inputs,
               outputs, nets[0][0].name)


class External:
  """A non-`Classifier` teacher seen as one (see the module docstring).

  `forward(variables, x) -> (logits (B, C), [maps (B, H_k, W_k, C_k)])` on images `x`
  (B, H, W, C) float32 as the teacher expects them. Shapes are read once with
  `jax.eval_shape` on `sample_variables` and `image_shape`; a feature output that is not
  an NHWC map dividing the image size raises CheckpointError.
  """
  splittable = False

  def __init__(self, forward: Callable, sample_variables, image_shape: Sequence[int],
               feature_layers: Sequence[str] = (), inputs: str = 'normalised',
               outputs: str = 'logits', mean: Sequence[float] = (),
               std: Sequence[float] = (), description: str = 'external teacher'):
    self._forward, self.feature_layers = forward, tuple(feature_layers)
    self.inputs, self.outputs, self.description = inputs, outputs, description
    self._mean = np.asarray(mean or (0.0,), np.float32)
    self._std = np.asarray(std or (1.0,), np.float32)
    x = jax.ShapeDtypeStruct((1,) + tuple(image_shape), jnp.float32)
    try:
      logits, feats = jax.eval_shape(self._call, sample_variables, x)
    except CheckpointError:
      raise
    except Exception as e:  # the user's network cannot run on this data's images.
      raise CheckpointError(
          f'{description} does not run on this data\'s images {tuple(image_shape)} (NHWC): '
          f'{type(e).__name__}: {str(e)[:300]}. Give a teacher for images of this shape, or '
          'set dataset.image_size to the size it was trained on.') from e
    if len(logits.shape) != 2:
      raise CheckpointError(f'{description} returns an output of shape {logits.shape}; a '
                            'teacher must return logits of shape (batch, classes)')
    self.num_classes = int(logits.shape[-1])
    for name, f in zip(self.feature_layers, feats):
      if len(f.shape) != 4 or image_shape[0] % f.shape[1]:
        raise CheckpointError(
            f'{description}: feature layer {name!r} gives shape {tuple(f.shape)}; a block '
            'feature must be an NHWC map (batch, height, width, channels) whose size divides '
            f'the image size {tuple(image_shape[:2])}')
    self.block_channels = tuple(int(f.shape[-1]) for f in feats)
    self.block_strides = tuple(int(image_shape[0] // f.shape[1]) for f in feats)

  @property
  def num_blocks(self) -> int:
    return len(self.block_channels)

  @property
  def block_names(self) -> tuple:
    return self.feature_layers

  def _call(self, variables, x):
    x = x.astype(jnp.float32)
    if self.inputs != 'normalised':
      x = x * self._std + self._mean
      if self.inputs == 'raw':
        x = x * 255.0
    logits, feats = self._forward(variables, x)
    logits = jnp.asarray(logits, jnp.float32)
    if self.outputs == 'probabilities':  # log p: the same softmax as the teacher's logits.
      logits = jnp.log(jnp.clip(logits, 1e-12, None))
    return logits, [jnp.asarray(f, jnp.float32) for f in feats]

  def apply(self, variables, x, train: bool = False, start: int = 0,
            stop: Optional[int] = None, with_head: bool = True, **kwargs):
    """(logits, feats) as `Classifier.__call__` returns them; only inference from the image
    (start 0) can be asked of an external teacher (`check_serves` refuses the rest)."""
    if train or start or kwargs:
      raise ValueError(f'{self.description} runs only in inference mode from the image')
    logits, feats = self._call(variables, x)
    stop = self.num_blocks if stop is None else stop
    if stop < self.num_blocks or not with_head:
      return None, feats[:stop]
    return logits, feats


# Flax ----------------------------------------------------------------------------------
_INFERENCE_KWARGS = {'train': False, 'training': False, 'is_training': False,
                     'deterministic': True, 'use_running_average': True}


def import_object(spec: str, field: str = 'teacher.module'):
  """The object named by 'package.module:attribute' (the working directory importable)."""
  mod, _, attr = spec.partition(':')
  if not mod or not attr:
    raise ConfigError(f'config field {field}: {spec!r} must be "package.module:attribute", '
                      'say "mynets:Teacher" for class Teacher in mynets.py')
  if os.getcwd() not in sys.path:
    sys.path.insert(0, os.getcwd())
  try:
    obj = importlib.import_module(mod)
  except ImportError as e:
    raise ConfigError(f'config field {field}: cannot import {mod!r} ({e}); run from the folder '
                      'that holds it or install it') from e
  for part in attr.split('.'):
    if not hasattr(obj, part):
      raise ConfigError(f'config field {field}: {mod!r} has no attribute {attr!r}')
    obj = getattr(obj, part)
  return obj


def flax_module(spec: str, num_classes: int):
  """The Linen module of `teacher.module`: a module object, or a class / function called
  with `num_classes=` when it takes that argument (else with no arguments)."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  obj = import_object(spec)
  if not isinstance(obj, nn.Module) and callable(obj):
    try:
      params = inspect.signature(obj).parameters
    except (TypeError, ValueError):
      params = {}
    obj = obj(num_classes=num_classes) if 'num_classes' in params else obj()
  if not isinstance(obj, nn.Module):
    raise ConfigError(f'config field teacher.module: {spec!r} gives a {type(obj).__name__}, '
                      'not a flax.linen Module (or a function returning one)')
  return obj


def flax_forward(module, feature_layers: Sequence[str]) -> Callable:
  """forward(variables, x) for any Linen module: its output as logits and the outputs of
  the sub-modules at the '/'-joined paths `feature_layers` (say 'Stage_1' or
  'backbone/layer2'), read with `capture_intermediates`, in inference mode (the keyword
  train/training/deterministic/use_running_average its `__call__` takes, if any)."""
  names = tuple(feature_layers)
  try:
    params = inspect.signature(module.__call__).parameters
  except (TypeError, ValueError):
    params = {}
  kwargs = {k: v for k, v in _INFERENCE_KWARGS.items() if k in params}

  def forward(variables, x):
    if not names:
      return module.apply(variables, x, **kwargs), []
    want = lambda mdl, method: method == '__call__' and '/'.join(mdl.scope.path) in names
    out, state = module.apply(variables, x, capture_intermediates=want,
                              mutable=['intermediates'], **kwargs)
    found = {}

    def walk(tree, path):
      for k, v in tree.items():
        if k == '__call__':
          found['/'.join(path)] = v[0]
        elif isinstance(v, dict) or hasattr(v, 'items'):
          walk(v, path + (k,))
    walk(state.get('intermediates', {}), ())
    missing = [n for n in names if n not in found]
    if missing:
      raise CheckpointError(
          f'teacher.feature_layers: {missing} name no sub-module of the Flax teacher; its '
          f'sub-modules are {sorted(_module_paths(variables))[:40]}')
    return out, [found[n] for n in names]
  return forward


def _module_paths(variables) -> set:
  """The '/'-joined sub-module paths that hold variables (for the error message)."""
  paths = set()

  def walk(tree, path):
    for k, v in tree.items():
      if hasattr(v, 'items'):
        if path:
          paths.add('/'.join(path + (k,)))
        walk(v, path + (k,))
  for collection in variables.values():
    if hasattr(collection, 'items'):
      walk(collection, ())
  return paths


def flax_variables(path: str) -> dict:
  """A Flax teacher's variables from an orbax checkpoint directory or a `.msgpack` file
  (`flax.serialization.to_bytes`); CheckpointError when neither can be read."""
  path = os.path.abspath(os.path.expanduser(path))
  if os.path.isfile(path):
    from flax import serialization  # pylint: disable=g-import-not-at-top
    try:
      with open(path, 'rb') as f:
        return serialization.msgpack_restore(f.read())
    except Exception as e:
      raise CheckpointError(f'teacher checkpoint {path} is not a Flax msgpack file '
                            f'({type(e).__name__}: {e}); save it with '
                            'flax.serialization.to_bytes(variables)') from e
  if not os.path.isdir(path):
    raise CheckpointError(f'teacher checkpoint {path} not found; fix teacher.checkpoints')
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  try:
    return ocp.StandardCheckpointer().restore(path)
  except Exception as e:
    raise CheckpointError(f'teacher checkpoint {path} is not an orbax checkpoint of a Flax '
                          f'teacher\'s variables ({type(e).__name__}: {str(e)[:200]}); save '
                          'it with orbax.checkpoint.StandardCheckpointer().save(path, '
                          'variables)') from e


# Keras 3 -------------------------------------------------------------------------------
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


def keras_network(model, feature_layers: Sequence[str]):
  """(network, variables): the Keras model with its output and the named layers' outputs
  as outputs (a Functional or Sequential model; a subclassed one gives logits only), and
  its (trainable, non-trainable) variable values for `Model.stateless_call`."""
  keras = keras_module()
  net = model
  if feature_layers:
    try:
      outputs = [model.output] + [model.get_layer(n).output for n in feature_layers]
    except (ValueError, AttributeError) as e:
      names = [layer.name for layer in getattr(model, 'layers', [])]
      raise CheckpointError(
          f'teacher.feature_layers {list(feature_layers)}: {e}. The Keras model\'s layers are '
          f'{names[:60]} (a subclassed model has no graph to read layers from: save a '
          'Functional or Sequential model, or give no feature layers)') from e
    net = keras.Model(model.inputs, outputs)
  return net, ([v.value for v in net.trainable_variables],
               [v.value for v in net.non_trainable_variables])


def keras_forward(net, with_features: bool) -> Callable:
  """forward(variables, x) of a Keras network from `keras_network`, in inference mode."""
  def forward(variables, x):
    out, _ = net.stateless_call(variables[0], variables[1], x, training=False)
    if with_features:
      return out[0], list(out[1:])
    return out, []
  return forward


# TensorFlow SavedModel -----------------------------------------------------------------
def saved_model_forward(path: str) -> Callable:
  """forward(variables, x) of a SavedModel's serving function (or its `__call__`), run by
  `jax2tf.call_tf` inside the jitted step; logits only (variables unused)."""
  path = os.path.abspath(os.path.expanduser(path))
  if not os.path.isfile(os.path.join(path, 'saved_model.pb')):
    raise CheckpointError(f'teacher checkpoint {path} is not a TensorFlow SavedModel (no '
                          'saved_model.pb); fix teacher.checkpoints')
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from jax.experimental import jax2tf  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ConfigError('teacher.source saved_model needs TensorFlow (pip install tensorflow)') from e
  try:
    loaded = tf.saved_model.load(path)
  except Exception as e:
    raise CheckpointError(f'teacher checkpoint {path} cannot be loaded as a SavedModel '
                          f'({type(e).__name__}: {str(e)[:200]})') from e
  sig = getattr(loaded, 'signatures', {}).get('serving_default')
  if sig is not None:
    key = sorted(sig.structured_outputs)[0]
    fn = lambda x: sig(**{_only_input(sig, path): x})[key]
  elif callable(loaded):
    fn = loaded
  else:
    raise CheckpointError(f'teacher checkpoint {path}: the SavedModel has neither a '
                          'serving_default signature nor __call__')
  probe = {}  # the output's trailing shape and dtype, from one eager call at the first trace.

  def forward(variables, x):
    del variables
    if not probe:
      out = fn(tf.zeros((1,) + tuple(x.shape[1:]), tf.float32))
      probe['shape'], probe['dtype'] = tuple(out.shape[1:]), out.dtype.as_numpy_dtype
    # A batch-polymorphic SavedModel has a dynamic output shape, which call_tf must be told.
    spec = jax.ShapeDtypeStruct((x.shape[0],) + probe['shape'], probe['dtype'])
    return jax2tf.call_tf(fn, output_shape_dtype=spec)(x), []
  forward.keep = loaded  # the TF objects live as long as the function.
  return forward


def _only_input(sig, path) -> str:
  names = list(sig.structured_input_signature[1])
  if len(names) != 1:
    raise CheckpointError(f'teacher checkpoint {path}: serving_default takes {names}; a '
                          'teacher takes one input, the images')
  return names[0]
