"""Teacher source `flax`: any Linen module, its variables from orbax or msgpack.

A `core.models.Classifier` serves every method as it is; any other module runs whole in
inference mode (its train switch found in its `__call__` signature, or named by
`teacher.train_kwarg`), its output as the logits (`teacher.output` picks one of several)
and the outputs of the sub-modules named in `teacher.feature_layers` (their '/'-joined
paths, read with `capture_intermediates`) as block features.
"""
import importlib
import inspect
import os
import sys
from typing import Callable, Sequence

import jax
import numpy as np

from msmgan_jax.core.teachers.external import Given, pick_output
from msmgan_jax.errors import CheckpointError, ConfigError

# Keywords of a module's __call__ that switch training on (given False) or off (given True).
TRAIN_ON = ('train', 'training', 'is_train', 'is_training', 'train_mode')
TRAIN_OFF = ('deterministic', 'use_running_average', 'eval', 'is_eval', 'inference',
             'is_inference', 'evaluation', 'test', 'is_test')


def import_object(spec: str, field: str = 'teacher.module'):
  """The object named by 'package.module:attribute' (the working directory importable).
  ConfigError when it cannot be imported or found."""
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


def inference_kwargs(module, train_kwarg: str = '') -> dict:
  """The keyword arguments that put `module.__call__` in inference mode: `train_kwarg`
  ('name' is given False, 'name=True'/'name=False' as written), else every keyword of its
  signature in TRAIN_ON (False) or TRAIN_OFF (True). ConfigError for a `train_kwarg` its
  `__call__` does not take."""
  try:
    params = inspect.signature(module.__call__).parameters
  except (TypeError, ValueError):
    params = {}
  if train_kwarg:
    name, _, value = train_kwarg.partition('=')
    name = name.strip()
    takes_any = any(p.kind == p.VAR_KEYWORD for p in params.values())
    if name not in params and not takes_any:
      raise ConfigError(f'config field teacher.train_kwarg: {type(module).__name__}.__call__ '
                        f'takes no {name!r} (it takes {list(params)})')
    if value.strip() not in ('', 'True', 'False'):
      raise ConfigError(f'config field teacher.train_kwarg: {train_kwarg!r} must be "name", '
                        '"name=True" or "name=False"')
    return {name: value.strip() == 'True'}
  return {**{k: False for k in TRAIN_ON if k in params},
          **{k: True for k in TRAIN_OFF if k in params}}


def _outputs(out) -> dict:
  """{name: array} of a module's output: a dict's keys, a sequence's indices, or 'logits'."""
  if isinstance(out, dict) or hasattr(out, 'items'):
    return dict(out.items())
  if isinstance(out, (list, tuple)):
    return {str(i): o for i, o in enumerate(out)}
  return {'logits': out}


def flax_forward(module, feature_layers: Sequence[str], output: str = '',
                 train_kwarg: str = '') -> Callable:
  """forward(variables, x) for any Linen module: its output (`output` picks one of several,
  see `external.pick_output`) as logits and the outputs of the sub-modules at the
  '/'-joined paths `feature_layers` (say 'Stage_1' or 'backbone/layer2'), in inference
  mode (`inference_kwargs`). `forward.layers(variables, shape)` lists every sub-module's
  output shape. CheckpointError naming the sub-modules when a path names none."""
  names = tuple(feature_layers)
  kwargs = inference_kwargs(module, train_kwarg)
  where = f'the Flax teacher {type(module).__name__}'

  def logits_of(out):
    outs = _outputs(out)
    shapes = {k: np.shape(v) for k, v in outs.items()}
    return outs[pick_output(shapes, output, where)]

  def forward(variables, x):
    if not names:
      return logits_of(module.apply(variables, x, **kwargs)), []
    want = lambda mdl, method: method == '__call__' and '/'.join(mdl.scope.path) in names
    out, state = module.apply(variables, x, capture_intermediates=want,
                              mutable=['intermediates'], **kwargs)
    found = _captured(state.get('intermediates', {}))
    missing = [n for n in names if n not in found]
    if missing:
      rows = '\n'.join(f'  {p}  {s}' for p, s in layers(variables, x.shape))
      raise CheckpointError(
          f'teacher.feature_layers: {missing} name no sub-module of {where}; its '
          f'sub-modules and their outputs:\n{rows}')
    return logits_of(out), [found[n] for n in names]

  def layers(variables, shape) -> list:
    """[(path, output shape)] of every sub-module called in one forward pass."""
    x = jax.ShapeDtypeStruct(tuple(shape), np.float32)
    _, state = jax.eval_shape(lambda v, x: module.apply(
        v, x, capture_intermediates=True, mutable=['intermediates'], **kwargs), variables, x)
    found = _captured(state.get('intermediates', {}))
    return [(p, np.shape(v)) for p, v in found.items() if p and hasattr(v, 'shape')]
  forward.layers = layers
  return forward


def _captured(tree) -> dict:
  """{'/'-joined path: output} of `capture_intermediates`' collection, in call order."""
  found = {}

  def walk(node, path):
    for k, v in node.items():
      if k == '__call__':
        found['/'.join(path)] = v[0]
      elif hasattr(v, 'items'):
        walk(v, path + (k,))
  walk(tree, ())
  return found


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


def flax_teacher(module, variables, feature_layers: Sequence[str] = (),
                 inputs: str = 'normalised', outputs: str = 'logits', output: str = '',
                 train_kwarg: str = '') -> Given:
  """A Flax teacher for `train_and_evaluate(cfg, workdir, teacher=...)`: a Linen `module`
  and its `variables` ({'params': ..., 'batch_stats': ...}; a list of them for several
  anchors, weakest first). A `core.models.Classifier` serves every method; any other module
  serves logit methods, and feature methods through `feature_layers` (sub-module paths,
  one per student block, see `flax_forward`); `output` and `train_kwarg` as the
  `teacher.*` fields of those names. ConfigError for bad `inputs`/`outputs`."""
  variables = list(variables) if isinstance(variables, (list, tuple)) else [variables]
  return Given('flax', module, variables, tuple(feature_layers), inputs, outputs,
               type(module).__name__, flax_forward, output, train_kwarg)


def load(t, info):
  """(Given, name) of the `teacher` config group `t` with source flax."""
  given = flax_teacher(flax_module(t.module, info.num_classes),
                       [flax_variables(p) for p in t.checkpoints], t.feature_layers,
                       t.inputs, t.outputs, t.output, t.train_kwarg)
  return given, f'{t.module} ({given.description})'
