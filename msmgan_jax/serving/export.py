"""Export a run's student as a TensorFlow SavedModel (and TFLite) with its preprocessing.

The library behind `python -m msmgan_jax.export` (`msmgan_jax/export.py`: the command line,
what the export folder holds). `export(workdir, out, tflite, overwrite)` writes DIR = `out`:
the SavedModel of the student of run `workdir`, whose `serving_default` signature takes
`images`, uint8 [batch, H, W, C] in the training image shape, scales and normalises them as
training's evaluation does, and returns float32 `logits` and `probabilities` [batch,
classes]; `DIR/model.json` (class names, input shape, where the model came from) beside it,
and with `tflite` `DIR/model.tflite`. The class names, input shape and normalisation come
from what the run recorded when it trained (summary.json's `data`), never from the dataset
as it is at export time, so a run trained from an arrays file or a folder since moved
exports the same (runs older than that record read the dataset).

The conversion uses `jax.experimental.jax2tf`: it ships with jax, so it always matches the
installed version, and its native serialization embeds the student's StableHLO (for CPU and
CUDA) in one XlaCallModule op that TensorFlow runs and the TFLite converter lowers to builtin
ops. orbax-export was the other candidate: its TensorFlow path wraps the same jax2tf call,
adds dependencies and its last release (0.0.8, 2025-09) predates the installed jax.

DIR is built in a temporary folder beside it, synced, then renamed into place: DIR never
holds a partial export (a kill between moving the old export aside and renaming the new one
in leaves the old one at `.DIR.tmp<pid>.old`). Raises `BadInput` (no workdir, no finished
student, DIR not empty without `overwrite`, a checkpoint not of the config's model; nothing
written) and `OSError` when the export cannot be written.
"""
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')  # its start-up notice; XLA runs the model.

import importlib.metadata  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from jax.experimental import jax2tf  # noqa: E402

from msmgan_jax import config as config_lib  # noqa: E402
from msmgan_jax.data import datasets as data  # noqa: E402
from msmgan_jax.core import models  # noqa: E402
from msmgan_jax.data import recipe  # noqa: E402
from msmgan_jax.serving import predict  # noqa: E402
from msmgan_jax.files import checkpoints  # noqa: E402
from msmgan_jax import errors  # noqa: E402
from msmgan_jax.files import io  # noqa: E402
from msmgan_jax.core import sharding  # noqa: E402

TFLITE = 'model.tflite'


from msmgan_jax.errors import BadInput  # noqa: E402,F401 (export.BadInput)


def serving_fn(model: models.Classifier, stats: tuple):
  """`(variables, uint8 images) -> {'logits', 'probabilities'}`: training's eval preprocessing
  (x / 255, then (x - mean) / std with `stats` = (mean, std) per channel), then `model`."""
  mean, std = (np.array(s, np.float32) for s in stats)

  def fn(variables, images):
    x = recipe.normalise(recipe.to_unit(images), mean, std)
    logits, _ = model.apply(variables, x, train=False)
    return {'logits': logits, 'probabilities': jax.nn.softmax(logits)}
  return fn


def save_model(path: str, fn, variables, image_shape) -> None:
  """Writes `fn(variables, images)` as a SavedModel at `path`, the weights as variables.

  The batch dimension is symbolic, so any batch size is served by the one signature.
  """
  tf_fn = jax2tf.convert(fn, polymorphic_shapes=[None, f'(b, {", ".join(map(str, image_shape))})'],
                         with_gradient=False, native_serialization_platforms=('cpu', 'cuda'))
  module = tf.Module()
  module.weights = tf.nest.map_structure(lambda a: tf.Variable(a, trainable=False),
                                         jax.device_get(variables))

  @tf.function(autograph=False, input_signature=[
      tf.TensorSpec((None,) + tuple(image_shape), tf.uint8, name='images')])
  def serve(images):
    return tf_fn(module.weights, images)
  module.serve = serve
  tf.saved_model.save(module, path, signatures={'serving_default': serve})


def save_tflite(saved_model: str, path: str) -> None:
  """Converts the SavedModel at `saved_model` to a TFLite flatbuffer at `path`."""
  with open(path, 'wb') as f:
    f.write(tf.lite.TFLiteConverter.from_saved_model(saved_model).convert())


def check_inputs(workdir: str, out: str, overwrite: bool):
  """(config, final checkpoints) of the run, after checking that `workdir` holds a finished
  student of the config's model and that `out` may be written; BadInput otherwise."""
  if not os.path.isdir(workdir):
    raise BadInput(f'workdir {workdir} not found; give the --workdir of a finished run')
  try:
    cfg = io.read_json(os.path.join(workdir, 'config.json'))
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise BadInput(f'{workdir}/config.json is not valid JSON ({e})') from e
  if cfg is None:
    raise BadInput(f'{workdir} holds no config.json: it is not a run of msmgan_jax')
  cfg = ml_collections.ConfigDict(cfg)
  if cfg.method == 'teacher':
    raise BadInput(f'{workdir} is a teacher-only run (method teacher): it has no student')
  ckpt = checkpoints.Checkpoints(os.path.join(workdir, 'checkpoints', 'student_final'),
                           read_only=True)
  if 0 not in ckpt.steps():
    raise BadInput(f'{workdir} holds no finished student (checkpoints/student_final/0); '
                   'rerun its training command to finish the run, then export')
  try:
    held = ckpt.meta(0).get('model')
  except errors.CheckpointError as e:
    raise BadInput(str(e)) from e
  if held != cfg.student.model:
    raise BadInput(f'checkpoint {ckpt.directory}/0 holds a {held!r} but the config\'s '
                   f'student.model is {cfg.student.model!r}: it is not the student of this run')
  if os.path.exists(out) and not os.path.isdir(out):
    raise BadInput(f'--out {out} is a file; give a new or empty directory')
  if os.path.isdir(out) and os.listdir(out):
    if not overwrite:
      raise BadInput(f'--out {out} is not empty; give a new or empty directory, or add '
                     '--overwrite to replace the export there')
    try:
      predict.read_meta(out)
    except predict.BadInput as e:
      raise BadInput(f'--out {out} is not empty and holds no export ({predict.META}); '
                     '--overwrite only replaces an export: give a new or empty directory') from e
  return cfg, ckpt


def load_student(ckpt: checkpoints.Checkpoints, name: str, num_classes: int, image_shape: tuple):
  """(model, variables) of the final student in `ckpt`, a `name` model; BadInput when the
  checkpoint does not fit it (other classes or image shape)."""
  try:
    model = models.create_model(name, num_classes)
  except ValueError as e:
    raise BadInput(f'{e}: a model registered by your code must be registered here too '
                   '(export from Python after importing the module that registers it)') from e
  target = sharding.abstract_variables(model, image_shape, sharding.mesh())
  try:
    variables, _ = ckpt.restore(0, target)
  except errors.CheckpointError as e:
    raise BadInput(f'checkpoint {ckpt.directory}/0 does not fit a {name} for {num_classes} '
                   f'classes on {"x".join(map(str, image_shape))} images: {e}') from e
  return model, variables


def _from_dataset(cfg) -> tuple:
  """(image shape, (mean, std), class names) read from the run's dataset as it is now: for
  runs that did not record them (summary.json's `data`)."""
  dataset = config_lib.defaults().dataset  # a run older than a dataset field gets its default.
  dataset.update(cfg.dataset.to_dict())
  try:
    builder = data.builder_for(dataset)
    image_shape, stats = data.image_shape(dataset, builder), data.normalisation(dataset, builder)
  except data.DataError as e:
    raise BadInput(f'the class names, image shape and normalisation of {dataset.name} are '
                   f'needed and this run did not record them (it is older than that record): '
                   f'{e}') from e
  return image_shape, stats, list(builder.info.features['label'].names)


def export(workdir: str, out: str, tflite: bool = False, overwrite: bool = False) -> dict:
  """Exports the student of `workdir` to `out` (see the module docstring); returns the
  metadata written to `out/model.json`."""
  cfg, ckpt = check_inputs(workdir, out, overwrite)
  recorded = (io.read_json(os.path.join(workdir, 'summary.json')) or {}).get('data')
  if recorded and recorded.get('mean'):  # what the run recorded of its data: all we need.
    image_shape = tuple(recorded['image_shape'])
    stats = (tuple(recorded['mean']), tuple(recorded['std']))
    labels = list(recorded['class_names'])
  else:  # a run from before the record: the dataset as it is now.
    image_shape, stats, labels = _from_dataset(cfg)
  model, variables = load_student(ckpt, cfg.student.model, len(labels), image_shape)
  meta = {
      'format': predict.FORMAT, 'model': cfg.student.model, 'dataset': cfg.dataset.name,
      'input_shape': list(image_shape), 'input_dtype': 'uint8', 'labels': labels,
      'signature': 'serving_default', 'inputs': 'images',
      'outputs': ['logits', 'probabilities'], 'tflite': TFLITE if tflite else None,
      'preprocessing': {'scale': 1 / 255, 'mean': list(stats[0]), 'std': list(stats[1])},
      'source': {'workdir': os.path.abspath(workdir),
                 'checkpoint': os.path.join(ckpt.directory, '0'),
                 'test_accuracy': ((io.read_json(os.path.join(workdir, 'summary.json'))
                                    or {}).get('student') or {}).get('test_accuracy')},
      'versions': {'jax': jax.__version__, 'flax': importlib.metadata.version('flax'),
                   'tensorflow': tf.__version__},
  }
  if recorded and recorded.get('split'):  # an unsplit image folder: which files trained.
    meta['source']['split'] = recorded['split']

  def build(tmp):
    save_model(tmp, serving_fn(model, stats), variables, image_shape)
    if tflite:
      save_tflite(tmp, os.path.join(tmp, TFLITE))
    io.write_json(os.path.join(tmp, predict.META), meta)
  write_dir(out, build)
  return meta


def write_dir(out: str, build) -> None:
  """Runs `build(tmp)` on a fresh folder beside `out`, syncs it and renames it to `out`,
  replacing what is there; on any failure `out` is left as it was and `tmp` removed."""
  out = os.path.abspath(out)
  os.makedirs(os.path.dirname(out), exist_ok=True)
  tmp = os.path.join(os.path.dirname(out), f'.{os.path.basename(out)}.tmp{os.getpid()}')
  old = f'{tmp}.old'
  for leftover in (tmp, old):  # from a killed export that had this pid.
    shutil.rmtree(leftover, ignore_errors=True)
  os.mkdir(tmp)
  try:
    build(tmp)
    _sync_tree(tmp)
    if os.path.isdir(out) and os.listdir(out):
      os.rename(out, old)
    try:
      os.replace(tmp, out)  # onto a missing or empty directory.
    except OSError:
      if os.path.isdir(old):
        os.rename(old, out)
      raise
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  shutil.rmtree(old, ignore_errors=True)
  _sync_tree(os.path.dirname(out), recursive=False)


def _sync_tree(path: str, recursive: bool = True) -> None:
  """fsyncs every file and directory under `path` (only `path` itself unless `recursive`)."""
  walk = os.walk(path) if recursive else [(path, [], [])]
  for root, _, files in walk:
    for name in files + ['']:
      fd = os.open(os.path.join(root, name) if name else root, os.O_RDONLY)
      try:
        os.fsync(fd)
      finally:
        os.close(fd)
