"""Teacher source `saved_model`: a TensorFlow SavedModel's serving signature, logits only.

The signature runs inside the jitted step through `jax2tf.call_tf` (TensorFlow's XLA
lowering, on the device). Where that cannot lower it (a Keras 3 `model.export()` whose
function reads its variables: `call_tf` fails under `jax.jit`), it runs on the host
through `jax.pure_callback`, which is slower (a copy to the host and back every step) and
said on the console. The signature's outputs are listed sorted by name; `teacher.output`
picks one of several (by name or index in that order). A signature taking uint8 images is fed 0..255 pixels as uint8.
"""
import os
from typing import Callable

import jax
import numpy as np

from msmgan_jax.core.teachers.external import External, pick_output
from msmgan_jax.errors import CheckpointError, ConfigError

FLOAT_INPUTS = ('float16', 'bfloat16', 'float32', 'float64')


def _tensorflow():
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from jax.experimental import jax2tf  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ConfigError('teacher.source saved_model needs TensorFlow (pip install tensorflow)') from e
  return tf, jax2tf


def signature(path: str):
  """(loaded SavedModel, its serving signature, input name, input dtype name) of the
  SavedModel at `path`. CheckpointError when it is missing, unreadable, has no serving
  signature, or its signature takes other than one image input."""
  path = os.path.abspath(os.path.expanduser(path))
  if not os.path.isfile(os.path.join(path, 'saved_model.pb')):
    raise CheckpointError(f'teacher checkpoint {path} is not a TensorFlow SavedModel (no '
                          'saved_model.pb); fix teacher.checkpoints')
  tf, _ = _tensorflow()
  try:
    loaded = tf.saved_model.load(path)
  except Exception as e:
    raise CheckpointError(f'teacher checkpoint {path} cannot be loaded as a SavedModel '
                          f'({type(e).__name__}: {str(e)[:200]})') from e
  sigs = getattr(loaded, 'signatures', {})
  if 'serving_default' not in sigs:
    raise CheckpointError(f'teacher checkpoint {path}: the SavedModel has no serving_default '
                          f'signature (it has {list(sigs)}); export it with one')
  sig = sigs['serving_default']
  specs = sig.structured_input_signature[1]
  if len(specs) != 1:
    raise CheckpointError(f'teacher checkpoint {path}: serving_default takes {list(specs)}; a '
                          'teacher takes one input, the images')
  name, spec = next(iter(specs.items()))
  dtype = spec.dtype.name
  if dtype not in FLOAT_INPUTS + ('uint8',):
    raise CheckpointError(f'teacher checkpoint {path}: serving_default takes {name!r} as '
                          f'{dtype}; a teacher takes images as float or uint8')
  return loaded, sig, name, dtype


def saved_model_forward(path: str, output: str = '') -> Callable:
  """forward(variables, x) of a SavedModel's serving signature (variables unused): the
  output `output` names (see `external.pick_output`) as logits, no block features. `x`
  (B, H, W, C) float32 in the teacher's pixel scale; cast to the signature's dtype (uint8:
  rounded and clipped to 0..255). `forward.host` tells whether it runs on the host."""
  tf, jax2tf = _tensorflow()
  loaded, sig, name, dtype = signature(path)
  where = f'the SavedModel {os.path.basename(os.path.normpath(path))}'
  shapes = {k: tuple(v.shape) for k, v in sorted(sig.structured_outputs.items())}  # by name.
  key = pick_output(shapes, output, where)
  out_spec = sig.structured_outputs[key]
  if not out_spec.dtype.is_floating:
    raise CheckpointError(f'{where}: output {key!r} is {out_spec.dtype.name}, not class scores; '
                          f'set teacher.output to the logits or probabilities among {shapes}')
  trailing = tuple(out_spec.shape[1:])

  def to_input(x):
    if dtype == 'uint8':
      return tf.cast(tf.clip_by_value(tf.round(x), 0, 255), tf.uint8)
    return tf.cast(x, dtype)

  def fn(x):
    return tf.cast(sig(**{name: to_input(x)})[key], tf.float32)

  def on_device(x):
    spec = jax.ShapeDtypeStruct((x.shape[0],) + trailing, np.float32)
    return jax2tf.call_tf(fn, output_shape_dtype=spec)(x)

  def on_host(x):
    def run(a):
      flat = a.reshape((-1,) + a.shape[-3:])
      return np.asarray(fn(tf.constant(flat))).reshape(a.shape[:-3] + trailing)
    spec = jax.ShapeDtypeStruct(x.shape[:-3] + trailing, np.float32)
    return jax.pure_callback(run, spec, x, vmap_method='expand_dims')

  def forward(variables, x):
    del variables
    return (on_host if forward.host else on_device)(x), []
  forward.host = False
  forward.keep = loaded  # the TF objects live as long as the function.
  forward.input_dtype = dtype
  return forward


def load(t, info):
  """(External, [variables], name) of the `teacher` config group `t` with source
  saved_model: one anchor. ConfigError for several paths, or a `teacher.inputs` other than
  normalised or raw with a signature taking uint8 (0..255) images."""
  if len(t.checkpoints) != 1:
    raise ConfigError(f'config field teacher.checkpoints: gives {len(t.checkpoints)} '
                      'SavedModels; a SavedModel teacher is one anchor (anchors.num=1)')
  name = f'SavedModel {os.path.basename(os.path.normpath(t.checkpoints[0]))}'
  forward = saved_model_forward(t.checkpoints[0], t.output)
  inputs = t.inputs
  if forward.input_dtype == 'uint8':
    if inputs not in ('normalised', 'raw'):
      raise ConfigError(f'config field teacher.inputs: {inputs}, but the SavedModel takes '
                        'uint8 images, which hold 0..255 pixels: leave teacher.inputs at '
                        'normalised or set it to raw')
    inputs = 'raw'
    print(f'teacher: {name} takes uint8 images: fed 0..255 pixels', flush=True)
  model = External(forward, {}, info.image_shape, (), inputs, t.outputs, info.mean, info.std,
                   f'the {name}')
  _lowerable(model, info.image_shape, name)
  return model, [{}], name


def _lowerable(model: External, image_shape, name: str) -> None:
  """Switches `model`'s forward to the host where `call_tf` cannot lower it under jit."""
  x = jax.ShapeDtypeStruct((2,) + tuple(image_shape), np.float32)
  try:
    jax.jit(model.raw).lower({}, x)
  except Exception:  # pylint: disable=broad-except
    model._forward.host = True  # pylint: disable=protected-access
    jax.jit(model.raw).lower({}, x)  # a failure here is a real one: let it say so.
    print(f'teacher: {name} cannot be compiled into the step (its function reads TensorFlow '
          'variables); it runs on the host each step, which is slower', flush=True)
