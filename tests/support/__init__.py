"""Helpers shared by the test modules (import them as `from support import ...`).

`tests/` is on `sys.path` under pytest (the rootdir's conftest puts it there), so this
package is `support`. Fixtures stay in `tests/conftest.py`; what several test modules call
lives here, in four groups:

- paths and configs: `REPO_ROOT`, `TRAIN` / `TEST` slices, `dataset_cfg`, `load_config`,
  `shrink`, `teacher_config_file`;
- files: `snapshot` of a folder, `write_idx` (gzipped IDX files as Fashion-MNIST ships);
- image folders: `CLASSES`, `make_unsplit`, `own_cfg`;
- the student trainer on synthetic data, no dataset read: `INFO`, `tiny_cfg`,
  `synthetic_batches`, `synthetic_eval`, `make_teacher`, `make_distiller`, `host`,
  `changed`, `run_phase_steps`, `interrupt_at`, `reference_target`.

Importing it imports JAX and the trainer; `tests/conftest.py` sets the environment
(CPU only, quiet TensorFlow) first.
"""
import functools
import gzip
import importlib.util
import os
import pathlib
import textwrap

import jax
import numpy as np
import pytest
from PIL import Image

from msmgan_jax import config
from msmgan_jax.core import models
from msmgan_jax.core import optim
from msmgan_jax.core import sharding
from msmgan_jax.data import datasets as data
from msmgan_jax.methods import registry
from msmgan_jax.training import workdir as workdir_lib
from msmgan_jax.training import student
from msmgan_jax.training import teacher

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]

# ---------------------------------------------------------------------------- paths, configs

TRAIN, TEST = 'train[:3%]', 'test[:10%]'  # 1800 / 1000 real examples.


def dataset_cfg(**overrides):
  """A copy of `config.defaults().dataset` with `overrides` applied.

  Raises:
    KeyError: an override names no dataset field.
  """
  cfg = config.defaults().dataset
  for k, v in overrides.items():
    if k not in cfg:
      raise KeyError(f'no dataset field {k!r}')
    cfg[k] = v
  return cfg


def load_config(repo_root, name, arg='smoke'):
  """`get_config(arg)` of `configs/<name>.py` under `repo_root` (a `pathlib.Path`)."""
  spec = importlib.util.spec_from_file_location(name, repo_root / 'configs' / f'{name}.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def shrink(cfg, data_dir):
  """`cfg` (changed in place and returned) on the small real slices `TRAIN` / `TEST` of
  Fashion-MNIST in `data_dir`, with a resnet8 teacher, batches of 64 and eval batches of 500."""
  cfg.dataset.data_dir, cfg.dataset.train_split, cfg.dataset.test_split = data_dir, TRAIN, TEST
  cfg.teacher.model = 'resnet8'
  cfg.batch_size, cfg.eval_batch_size = 64, 500
  return cfg


def teacher_config_file(tmp_path, data_dir) -> str:
  """Writes `tmp_path/teach.py` and returns its path: a config file taking 'SOURCE,PATH' as
  its argument: kd from the teacher.source SOURCE at teacher.checkpoints (PATH,) to a cnn
  student, 1 epoch on the small real slices of `data_dir`."""
  path = tmp_path / 'teach.py'
  path.write_text(textwrap.dedent(f'''
      import sys
      sys.path.insert(0, {str(REPO_ROOT / 'tests')!r})
      from support import shrink
      from configs import default


      def get_config(arg=None):
        c = shrink(default.get_config(), {data_dir!r})
        c.method, c.anchors.num, c.student.epochs = 'kd', 1, 1
        c.student.model = 'cnn'
        c.student.eval_every_phase = False
        c.teacher.source = arg.split(',')[0]
        c.teacher.checkpoints = (arg.split(',')[1],)
        return c
      '''))
  return str(path)

# ------------------------------------------------------------------------------------- files


def snapshot(root):
  """{relative path: (bytes, mtime_ns)} of every file under `root`; folders map to None
  (their path ends in '/'), so an added, removed or touched entry changes the result."""
  out = {}
  for dirpath, dirnames, filenames in os.walk(root):
    for name in dirnames + filenames:
      path = os.path.join(dirpath, name)
      rel = os.path.relpath(path, root)
      if os.path.isdir(path):
        out[rel + '/'] = None
      else:
        with open(path, 'rb') as f:
          out[rel] = (f.read(), os.stat(path).st_mtime_ns)
  return out


def write_idx(path, array):
  """Writes `array` (cast to uint8, any rank) at `path` as a gzipped IDX file."""
  array = np.asarray(array, np.uint8)
  header = bytes([0, 0, 0x08, array.ndim]) + b''.join(d.to_bytes(4, 'big') for d in array.shape)
  with gzip.open(path, 'wb') as f:
    f.write(header + array.tobytes())

# ------------------------------------------------------------------------------ image folders

CLASSES = ('ant', 'bee', 'cat')


def make_unsplit(root, per_class=10, size=(12, 12), classes=CLASSES, reverse=False):
  """root/<class>/<i>.png (no train/ or test/), made in reverse order when `reverse`; an
  image's pixels depend only on its class and name, so two such folders hold the same files."""
  made = [(label, name, i) for label, name in enumerate(classes) for i in range(per_class)]
  for label, name, i in (reversed(made) if reverse else made):
    (root / name).mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng([label, i]).integers(0, 128, size + (3,)) + 60 * label
    Image.fromarray(pixels.astype(np.uint8), 'RGB').save(root / name / f'{i}.png')
  return root


def own_cfg(folder, data_dir, **fields):
  """The dataset config reading the image folder `folder`, prepared under `data_dir`."""
  return dataset_cfg(name=str(folder), data_dir=str(data_dir), shuffle_buffer=64, **fields)

# ------------------------------------------------------------ the student on synthetic data

INFO = data.DatasetInfo('fashion_mnist', 10, (28, 28, 1), 64, 40)


def tiny_cfg(**fields):
  """The default config shrunk to seconds: resnet8 teacher, cnn student, batches of 16, 2
  anchors, 2 epochs; `fields` maps 'group.name' (or 'name') to a value. Validated."""
  cfg = config.defaults()
  cfg.teacher.model, cfg.student.model = 'resnet8', 'cnn'
  cfg.batch_size, cfg.eval_batch_size = 16, 16
  cfg.anchors.num, cfg.teacher.epochs, cfg.student.epochs = 2, 2, 2
  cfg.log_every_steps, cfg.checkpoint_every_steps = 2, 1000
  for path, value in fields.items():
    group, _, name = path.rpartition('.')
    (cfg[group] if group else cfg)[name] = value
  config.validate(cfg)
  return cfg


def synthetic_batches(seed, skip=0, with_index=False):
  """Deterministic random batches for `seed`, the first `skip` of them skipped: endless,
  each {'image': float32 [16, 28, 28, 1], 'label': int32 [16]}; with `with_index` also
  'index': int32 [16], positions in INFO's 64 training examples, each epoch of 4 batches a
  fresh permutation (drawn apart: images and labels are those without it)."""
  rng, order = np.random.default_rng(seed), np.random.default_rng([seed, 1])
  i, perm = 0, None
  while True:
    batch = {'image': rng.normal(size=(16, 28, 28, 1)).astype(np.float32),
             'label': rng.integers(0, 10, 16).astype(np.int32)}
    if with_index:
      perm = order.permutation(INFO.num_train).astype(np.int32) if i % 4 == 0 else perm
      batch['index'] = perm[16 * (i % 4):16 * (i % 4 + 1)]
    if i >= skip:
      yield batch
    i += 1


def synthetic_eval():
  """A fixed eval split of 40 random examples in padded batches of 16 (the last 8 real)."""
  rng = np.random.default_rng(123)
  for n in (16, 16, 8):
    yield data.pad_batch({'image': rng.normal(size=(n, 28, 28, 1)).astype(np.float32),
                          'label': rng.integers(0, 10, n).astype(np.int32)}, 16)


def make_teacher(cfg, num_anchors):
  """A `teacher.Teacher` of `num_anchors` randomly initialised `cfg.teacher.model` anchors,
  with BatchNorm statistics moved off their init values (so "unchanged" is not "at init")."""
  model = models.create_model(cfg.teacher.model, 10)
  anchors = []
  for m in range(num_anchors):
    v = optim.init_variables(model, jax.random.key(100 + m), INFO.image_shape)
    v = {'params': v['params'], 'batch_stats': jax.tree.map(
        lambda x: x + 0.1 * (m + 1), v['batch_stats'])}
    anchors.append(teacher.Anchor(m + 1, 0.5, f'anchor{m}', v))
  return teacher.Teacher(model, cfg.teacher.model, anchors, 0.5,
                         optim.count_params(anchors[0].variables['params']), 0.0, 0)


def make_distiller(cfg, tmp_path, num_anchors=2):
  """A `student.Distiller` for `cfg` in the workdir `tmp_path` (made if missing), trained on
  `synthetic_batches` (with 'index' for a method that reads it) and evaluated on
  `synthetic_eval`, with `make_teacher`'s anchors."""
  wd = workdir_lib.Workdir(str(tmp_path))
  os.makedirs(wd.path, exist_ok=True)
  batches = functools.partial(synthetic_batches, with_index=registry.needs_index(cfg))
  return student.Distiller(cfg, wd, INFO, batches, synthetic_eval, sharding.mesh(),
                           make_teacher(cfg, num_anchors))


def host(tree):
  """`tree` with every leaf a host numpy array."""
  return jax.tree.map(np.asarray, jax.device_get(tree))


def changed(before, after):
  """{path: whether any element differs} over the leaves of two trees of one structure."""
  assert jax.tree.structure(before) == jax.tree.structure(after)
  flat_b = jax.tree_util.tree_flatten_with_path(before)[0]
  flat_a = jax.tree.leaves(after)
  return {optim.path_str(p): not np.array_equal(b, a) for (p, b), a in zip(flat_b, flat_a)}


def run_phase_steps(d, phase, n=3):
  """Runs `n` steps of `phase` of the distiller `d` against its first anchor on synthetic
  batches; returns (states before, states after, the last step's metrics), on the host.
  Asserts the anchor itself is unchanged (anchors are never trained)."""
  anchor = d.anchors[0]
  states = d.build_states(0, d.phases[0].index(phase), d.init_carry())
  before = host(states)
  anchor_before = host(anchor.variables)
  step = d.step_fn(phase, anchor)
  batches = synthetic_batches(0, with_index=registry.needs_index(d.cfg))
  for _ in range(n):
    states, metrics = step(states, sharding.shard_batch(next(batches), d.mesh))
  np.testing.assert_equal(host(anchor.variables), anchor_before)
  return before, host(states), metrics


def interrupt_at(cfg, workdir, n: int, monkeypatch) -> None:
  """Runs `cfg`'s student in `workdir` until its `n`-th update raises KeyboardInterrupt
  (a Ctrl-C in the middle of a phase), then puts the real step back."""
  calls, real_step_fn = {'n': 0}, student.Distiller.step_fn

  def crashing_step_fn(self, phase, anchor):
    step = real_step_fn(self, phase, anchor)

    def wrapped(states, batch):
      calls['n'] += 1
      if calls['n'] == n:
        raise KeyboardInterrupt
      return step(states, batch)
    return wrapped
  monkeypatch.setattr(student.Distiller, 'step_fn', crashing_step_fn)
  with pytest.raises(KeyboardInterrupt):
    make_distiller(cfg, workdir).run()
  monkeypatch.setattr(student.Distiller, 'step_fn', real_step_fn)


def reference_target(cfg):
  """A restore target for the student's final checkpoint: freshly initialised
  {'params', 'batch_stats'} of `cfg.student.model`."""
  v = optim.init_variables(models.create_model(cfg.student.model, 10), jax.random.key(0),
                           INFO.image_shape)
  return {'params': v['params'], 'batch_stats': v['batch_stats']}
