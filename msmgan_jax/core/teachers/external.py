"""A teacher from outside the library seen as a `core.models.Classifier`: `External`, and
`Given` (a teacher handed over from Python), and the layer table that error messages and
`python -m msmgan_jax.teachers` show.
"""
import copy
import dataclasses
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from msmgan_jax.errors import CheckpointError, ConfigError

# The pixel conventions a teacher may expect (`teacher.inputs`): the students' normalised
# images, [0, 1], 0..255, and the three of Keras's `imagenet_utils.preprocess_input` modes
# that ImageNet models use: 'tf' ([-1, 1], here `signed`), 'caffe' (BGR 0..255 less the
# ImageNet mean) and 'torch' ([0, 1] standardised by the ImageNet mean and std). The last
# two take RGB images (`RGB_ONLY`).
INPUTS = ('normalised', 'unit', 'raw', 'signed', 'caffe', 'torch')
RGB_ONLY = ('caffe', 'torch')
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # RGB, [0, 1] (torchvision; Keras 'torch' mode).
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)  # Keras 'caffe' mode, 0..255, BGR order.
OUTPUTS = ('logits', 'probabilities')


@dataclasses.dataclass
class Given:
  """A teacher given from Python (`train_and_evaluate(..., teacher=...)`; build it with
  `flax_teacher` or `keras_teacher`): the network, one variables object per anchor (weakest
  first), and how to read it (the `teacher.*` fields of the same names).

  `build(info)` (a `data.DatasetInfo`) gives the model the trainer runs: a `Classifier` as
  it is, else an `External` made by the source's `forward` factory (`make_forward(network,
  feature_layers, output, train_kwarg) -> forward`, see `External`). Raises ConfigError
  for unknown `inputs`/`outputs` or no variables.
  """
  source: str                 # flax | keras.
  network: object             # a Linen module, or a Keras model.
  variables: list             # one per anchor.
  feature_layers: tuple = ()
  inputs: str = 'normalised'
  outputs: str = 'logits'
  description: str = ''
  make_forward: Optional[Callable] = None
  output: str = ''            # which of several outputs holds the logits (name or index).
  train_kwarg: str = ''       # a Flax module's inference switch ('' = found in its signature).

  def __post_init__(self):
    if not self.variables:
      raise ConfigError('a teacher needs at least one set of variables (one per anchor)')
    for field, value, allowed in (('inputs', self.inputs, INPUTS),
                                  ('outputs', self.outputs, OUTPUTS)):
      if value not in allowed:
        raise ConfigError(f'teacher {field} {value!r} is not one of {allowed}')

  def build(self, info):
    """The model the trainer runs for data `info`: a `Classifier` as it is, else an
    `External` (CheckpointError/ConfigError when the network cannot run on the data)."""
    from msmgan_jax.core import models  # pylint: disable=g-import-not-at-top
    if self.source == 'flax' and isinstance(self.network, models.Classifier):
      if self.feature_layers:
        raise ConfigError('config field teacher.feature_layers: a Classifier teacher gives '
                          "its blocks' features; leave it empty")
      if (self.inputs, self.outputs) != ('normalised', 'logits'):
        raise ConfigError(
            f'config fields teacher.inputs={self.inputs!r}, teacher.outputs={self.outputs!r}: '
            'a msmgan_jax Classifier teacher runs as the students do, on normalised images, '
            'and returns logits, so these fields would be ignored; leave them at normalised '
            'and logits (a network of another pixel scale or output: give it as a plain '
            'Flax module, which reads them)')
      return self.network
    forward = self.make_forward(self.network, self.feature_layers, self.output,
                                self.train_kwarg)
    return External(forward, self.variables[0], info.image_shape, self.feature_layers,
                    self.inputs, self.outputs, info.mean, info.std,
                    f'the {self.source} teacher {self.description}')


@dataclasses.dataclass(frozen=True)
class Layer:
  """One layer of a teacher as `layers` lists it: its path (what `teacher.feature_layers`
  takes), the shape of its output for one image (batch dimension 1) and, for an NHWC map
  whose height divides the image's, its downsampling factor (image height / map height;
  0 for any other output)."""
  path: str
  shape: tuple
  factor: int


def layer_rows(paths_and_shapes, image_height: int) -> list:
  """`Layer`s of (path, output shape) pairs, in the order given."""
  rows = []
  for path, shape in paths_and_shapes:
    shape = tuple(int(d) for d in shape)
    square = len(shape) == 4 and shape[1] and image_height % shape[1] == 0
    rows.append(Layer(path, shape, image_height // shape[1] if square else 0))
  return rows


def fitting(rows: Sequence[Layer], strides: Sequence[int]) -> list:
  """For each student block's downsampling factor in `strides`, the deepest listed layer
  whose output is a map downsampled by it, or None: the `teacher.feature_layers` to try."""
  return [next((r.path for r in reversed(rows) if r.factor == s), None) for s in strides]


def layer_table(rows: Sequence[Layer], strides: Sequence[int] = (), limit: int = 60) -> str:
  """The layers as text lines 'path  (1, H, W, C)  /factor', and, given the student's block
  `strides`, which ones fit (`fitting`)."""
  shown = list(rows)[-limit:]
  lines = [f'  {r.path}  {r.shape}' + (f'  /{r.factor}' if r.factor else '') for r in shown]
  if len(rows) > limit:
    lines.insert(0, f'  ... ({len(rows) - limit} earlier layers)')
  text = '\n'.join(lines)
  if strides:
    picks = fitting(rows, strides)
    if all(picks):
      text += ('\nthe deepest layers downsampled like the student\'s blocks '
               f'{tuple(strides)}: teacher.feature_layers={tuple(picks)}')
    else:
      missing = [s for s, p in zip(strides, picks) if p is None]
      text += (f'\nno layer\'s output is an NHWC map downsampled by {missing}: this teacher '
               'cannot give block features for this student (use a logit method, or a '
               'student whose blocks it matches)')
  return text


class External:
  """A non-`Classifier` teacher seen as one (see the package docstring).

  `forward(variables, x) -> (logits (B, C), [maps (B, H_k, W_k, C_k)])` on images `x`
  (B, H, W, C) float32 as the teacher expects them (`inputs`: normalised, unit [0, 1] or
  raw 0..255). `layers(variables, image_shape) -> [(path, shape)]` (optional, a function
  attribute of `forward`) lists the network's layers for messages; `input_shape` (optional,
  another attribute: (H, W, C), None where free) is the image shape the network declares,
  and another shape than the data's is a CheckpointError naming the fix. Shapes are read
  once with `jax.eval_shape` on `sample_variables` and `image_shape`; a network that cannot
  run on the images, or a feature output that is not an NHWC map dividing the image size,
  raises CheckpointError (the message names the cause: shape, training mode, layers).
  `output_dtype` is the dtype the network computes its outputs in (`raw` returns float32).
  """
  splittable = False

  def __init__(self, forward: Callable, sample_variables, image_shape: Sequence[int],
               feature_layers: Sequence[str] = (), inputs: str = 'normalised',
               outputs: str = 'logits', mean: Sequence[float] = (),
               std: Sequence[float] = (), description: str = 'external teacher'):
    self._forward, self.feature_layers = forward, tuple(feature_layers)
    self.inputs, self.outputs, self.description = inputs, outputs, description
    self.image_shape = tuple(image_shape)
    self._mean = np.asarray(mean or (0.0,), np.float32)
    self._std = np.asarray(std or (1.0,), np.float32)
    self._sample = sample_variables
    if not self.takes(inputs):
      raise ConfigError(f'config field teacher.inputs: {inputs} (an ImageNet convention) takes '
                        f'RGB images, and this data\'s have {self.image_shape[-1]} channel(s)')
    self._check_declared(getattr(forward, 'input_shape', None))
    x = jax.ShapeDtypeStruct((1,) + self.image_shape, jnp.float32)
    try:  # as the network computes them (`raw` casts to float32): one trace for both.
      logits, feats = jax.eval_shape(
          lambda v, y: self._forward(v, self.to_inputs(y)), sample_variables, x)
    except (CheckpointError, ConfigError):
      raise
    except Exception as e:  # the user's network cannot run on this data's images.
      raise CheckpointError(self._why_not(e)) from e
    if len(logits.shape) != 2:
      raise CheckpointError(f'{description} returns an output of shape {logits.shape}; a '
                            'teacher must return logits of shape (batch, classes)')
    # A bfloat16 softmax's rows sum to 1 only within its precision (`diagnosis`).
    self.output_dtype = jnp.dtype(getattr(logits, 'dtype', jnp.float32))
    self.num_classes = int(logits.shape[-1])
    for name, f in zip(self.feature_layers, feats):
      if len(f.shape) != 4 or f.shape[1] == 0 or self.image_shape[0] % f.shape[1]:
        raise CheckpointError(
            f'{description}: feature layer {name!r} gives shape {tuple(f.shape)}; a block '
            'feature must be an NHWC map (batch, height, width, channels) whose size divides '
            f'the image size {self.image_shape[:2]}. Its layers:\n{self.layer_table()}')
    self.block_channels = tuple(int(f.shape[-1]) for f in feats)
    self.block_strides = tuple(int(self.image_shape[0] // f.shape[1]) for f in feats)

  def _check_declared(self, declared) -> None:
    """CheckpointError when the network declares an input shape ((H, W, C), None where
    free) that this data's images do not have: a fully convolutional network would run on
    them anyway, on images of another size than it learnt, and teach from them."""
    if not declared or len(declared) != 3:
      return
    wrong = [i for i, (want, have) in enumerate(zip(declared, self.image_shape))
             if want is not None and int(want) != int(have)]
    if not wrong:
      return
    shown = tuple('any' if d is None else int(d) for d in declared)
    if wrong == [2]:
      fix = (f'give a teacher for {self.image_shape[2]}-channel images (this data\'s), or '
             f'data with {declared[2]} channels')
    else:
      fix = (f'set dataset.image_size={declared[0]} (the images are resized to the size it '
             'was trained on)' if declared[0] is not None and declared[0] == declared[1]
             else 'give a teacher for images of this shape')
    raise CheckpointError(
        f'{self.description} declares images of shape {shown} (height, width, channels) '
        f'and this data\'s are {self.image_shape}: it would run on images unlike those it '
        f'learnt from. {fix[0].upper() + fix[1:]}')

  def _why_not(self, e: Exception) -> str:
    """The message for a network that failed to run on one image: a Flax module that tried
    to update its statistics, or asked for a random key, ran in training mode; one that
    found no variables where it looked was given another variables layout (params without
    their 'params' wrapper); anything else is the images' shape."""
    text = f'{type(e).__name__}: {str(e)[:300]}'
    kind = type(e).__name__
    eval_module = ("teacher.train_kwarg to the keyword of its __call__ that turns training "
                   "off (say 'is_train', or 'deterministic=True'); where a module field "
                   'switches it (nn.Dropout(deterministic=self.deterministic)), give '
                   'teacher.module as a function returning the module in inference mode '
                   '(mynets:make_eval_teacher)')
    if 'immutable' in str(e) or 'mutable' in kind.lower():
      return (f'{self.description} tried to update its variables ({text}): it ran in '
              f'training mode. Set {eval_module}')
    if kind == 'InvalidRngError' or 'rng' in kind.lower():
      return (f'{self.description} asked for a random key ({text}): a Dropout (or another '
              f'random layer) ran in training mode. Set {eval_module}')
    if kind.startswith('Scope') and ('NotFound' in kind or 'Collection' in kind):
      top = list(self._sample) if isinstance(self._sample, dict) else []
      return (f'{self.description}: its variables do not fit the module ({text}). They '
              f'hold {top[:8]} at their top level; a Flax variables dict holds the '
              "collections there ('params', and 'batch_stats' with BatchNorm): save "
              "module.init(...) or {'params': params, ...}, not the params alone")
    return (f'{self.description} does not run on this data\'s images {self.image_shape} '
            f'(NHWC, float32): {text}. Give a teacher for images of this shape, or set '
            'dataset.image_size to the size it was trained on.')

  @property
  def num_blocks(self) -> int:
    return len(self.block_channels)

  @property
  def block_names(self) -> tuple:
    return self.feature_layers

  @property
  def input_dtype(self) -> str:
    """The dtype the network takes its images in (a SavedModel's signature may ask uint8)."""
    return getattr(self._forward, 'input_dtype', 'float32')

  def takes(self, inputs: str) -> bool:
    """Whether `inputs` can convert this data's images (the ImageNet modes need RGB)."""
    return inputs not in RGB_ONLY or self.image_shape[-1] == 3

  def with_inputs(self, inputs: str) -> 'External':
    """The same teacher reading its images as `inputs` (for the load-time diagnosis)."""
    other = copy.copy(self)
    other.inputs = inputs
    return other

  def layers(self) -> list:
    """The network's `Layer`s (empty where its source cannot list them)."""
    lister = getattr(self._forward, 'layers', None)
    if lister is None:
      return []
    return layer_rows(lister(self._sample, (1,) + self.image_shape), self.image_shape[0])

  def layer_table(self, strides: Sequence[int] = ()) -> str:
    rows = self.layers()
    return layer_table(rows, strides) if rows else '  (this source cannot list its layers)'

  def raw(self, variables, x):
    """(outputs as the network returns them, before `outputs=probabilities` takes their
    log; [block maps]) for normalised images `x` (B, H, W, C), converted to `inputs`."""
    logits, feats = self._forward(variables, self.to_inputs(x))
    return jnp.asarray(logits, jnp.float32), [jnp.asarray(f, jnp.float32) for f in feats]

  def to_inputs(self, x):
    """Normalised images `x` (B, H, W, C) as the teacher takes them (`inputs`, see
    `INPUTS`): 'caffe' and 'torch' as Keras's `preprocess_input` modes of those names
    make them of RGB 0..255 pixels."""
    x = x.astype(jnp.float32)
    if self.inputs == 'normalised':
      return x
    unit = x * self._std + self._mean
    if self.inputs == 'raw':
      return unit * 255.0
    if self.inputs == 'signed':
      return unit * 2.0 - 1.0
    if self.inputs == 'caffe':
      return unit[..., ::-1] * 255.0 - jnp.asarray(CAFFE_MEAN_BGR, jnp.float32)
    if self.inputs == 'torch':
      return (unit - jnp.asarray(IMAGENET_MEAN, jnp.float32)) / jnp.asarray(IMAGENET_STD,
                                                                          jnp.float32)
    return unit  # 'unit'.

  def to_logits(self, raw):
    """The logits (B, C) the trainer uses of outputs `raw` as `raw` gives them: their log
    under `outputs=probabilities` (the same softmax as the teacher's logits), else `raw`."""
    if self.outputs == 'probabilities':
      return jnp.log(jnp.clip(raw, 1e-12, None))
    return raw

  def _call(self, variables, x):
    logits, feats = self.raw(variables, x)
    return self.to_logits(logits), feats

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


def pick_output(outputs: dict, output: str, where: str) -> str:
  """The key of `outputs` ({name: shape}, in the network's order) that holds the logits:
  `output` (a name, or an index into that order) when given, else the only one, else
  the one named 'logits'. CheckpointError listing them otherwise."""
  names = list(outputs)
  listing = ', '.join(f'{i}: {n!r} {tuple(outputs[n])}' for i, n in enumerate(names))
  if output:
    if output in outputs:
      return output
    if output.lstrip('-').isdigit() and -len(names) <= int(output) < len(names):
      return names[int(output)]
    raise ConfigError(f'config field teacher.output: {output!r} names none of the outputs of '
                      f'{where} ({listing}); give one of those names or indices')
  if len(names) == 1:
    return names[0]
  if 'logits' in outputs:
    return 'logits'
  raise CheckpointError(
      f'{where} has {len(names)} outputs ({listing}); say which holds the class scores with '
      'teacher.output (a name or an index), and set teacher.outputs=probabilities if it is '
      'a softmax')
