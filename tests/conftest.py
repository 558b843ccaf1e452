"""Shared test setup: quiet TensorFlow, CPU-only JAX, the real TFDS data dir, config helpers."""
import os

# Before TensorFlow / JAX are imported anywhere in the test session.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('CUDA_VISIBLE_DEVICES', '')
os.environ.setdefault('TFDS_DISABLE_PROGRESS_BAR', '1')
os.environ.setdefault('KERAS_BACKEND', 'jax')  # as msmgan_jax sets it; TF imports Keras below.
# Cheap XLA compiles: the tests run tiny models once, so optimisation passes only cost time.
if 'XLA_FLAGS' not in os.environ:
  os.environ['XLA_FLAGS'] = ('--xla_backend_optimization_level=0 '
                             '--xla_llvm_disable_expensive_passes=true')

# One XLA compile per distinct program in the whole session, subprocesses and pytest-xdist
# workers included (they inherit this environment from the process that loads this file
# first): many tests compile the same tiny steps, and a cache hit replaces a compile by a file
# read. A fresh directory per session, removed at its end: timings stay a clean checkout's.
_XLA_CACHE_OWNER = 'JAX_COMPILATION_CACHE_DIR' not in os.environ
if _XLA_CACHE_OWNER:
  import tempfile  # pylint: disable=g-import-not-at-top
  os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(prefix='msmgan_jax_test_xla_')
  os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
  os.environ['JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES'] = '0'
  # A size limit (never reached) turns on JAX's file lock around each entry's read and write:
  # two workers compiling one program at once must not read each other's half-written entry.
  os.environ['JAX_COMPILATION_CACHE_MAX_SIZE'] = str(1 << 40)

import importlib.util  # noqa: E402
import pathlib  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
# The configs package (`from configs import compare_lowdata_v2` in the comparison configs),
# as `python -m pytest` from the root gives it and `msmgan_jax.cli` does for the commands:
# a bare `pytest`, or one run from another directory, finds it too.
if str(REPO_ROOT) not in sys.path:
  sys.path.insert(0, str(REPO_ROOT))


def _quiet_tf():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.get_logger().setLevel('ERROR')
  tf.config.set_visible_devices([], 'GPU')
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  tfds.disable_progress_bar()
  from absl import logging  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.ERROR)


_quiet_tf()


def pytest_sessionfinish(session):
  """Removes the XLA cache this process made (xdist's controller: after its workers end)."""
  del session
  if _XLA_CACHE_OWNER:
    shutil.rmtree(os.environ['JAX_COMPILATION_CACHE_DIR'], ignore_errors=True)


def dataset_cfg(**overrides):
  """A copy of `config.defaults().dataset` with `overrides` applied (unknown keys are errors)."""
  from msmgan_jax import config  # pylint: disable=g-import-not-at-top
  cfg = config.defaults().dataset
  for k, v in overrides.items():
    if k not in cfg:
      raise KeyError(f'no dataset field {k!r}')
    cfg[k] = v
  return cfg


@pytest.fixture(scope='session')
def repo_root() -> pathlib.Path:
  return REPO_ROOT


@pytest.fixture(scope='session')
def tfds_data_dir() -> str:
  """The default TFDS data dir, with the offline Fashion-MNIST builder prepared in it.

  Preparing reads Debian's IDX files once (about 10 s); later sessions reuse it.
  """
  from tensorflow_datasets.core import constants  # pylint: disable=g-import-not-at-top
  from msmgan_jax.data import datasets as data  # pylint: disable=g-import-not-at-top
  data_dir = os.path.expanduser(constants.DATA_DIR)
  local = data.FashionMnistLocal(data_dir=data_dir)
  if not local.is_prepared() and data.find_idx_dir(None) is None:
    pytest.skip(f'Fashion-MNIST is neither prepared in {data_dir} nor installed at '
                f'{data.DEBIAN_FASHION_MNIST} (apt-get install dataset-fashion-mnist)')
  data.builder_for(dataset_cfg(data_dir=data_dir, source='local'))
  return data_dir


TRAIN, TEST = 'train[:3%]', 'test[:10%]'  # 1800 / 1000 real examples.


def load_config(repo_root, name, arg='smoke'):
  """`get_config(arg)` of configs/<name>.py."""
  spec = importlib.util.spec_from_file_location(name, repo_root / 'configs' / f'{name}.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def shrink(cfg, data_dir):
  """A config on small real slices, with a resnet8 teacher."""
  cfg.dataset.data_dir, cfg.dataset.train_split, cfg.dataset.test_split = data_dir, TRAIN, TEST
  cfg.teacher.model = 'resnet8'
  cfg.batch_size, cfg.eval_batch_size = 64, 500
  return cfg


@pytest.fixture(scope='session')
def teacher_run(repo_root, tfds_data_dir, tmp_path_factory):
  """A finished 2-epoch resnet8 teacher run: (config, workdir, summary)."""
  from msmgan_jax.training import train  # pylint: disable=g-import-not-at-top
  cfg = shrink(load_config(repo_root, 'teacher_fmnist'), tfds_data_dir)
  workdir = str(tmp_path_factory.mktemp('teacher'))
  return cfg, workdir, train.train_and_evaluate(cfg, workdir)


def teacher_config_file(tmp_path, data_dir) -> str:
  """A config file taking 'SOURCE,PATH' as its argument: kd from the teacher.source SOURCE
  at teacher.checkpoints (PATH,) to a cnn student, 1 epoch on the small real slices."""
  import textwrap  # pylint: disable=g-import-not-at-top
  config = tmp_path / 'teach.py'
  config.write_text(textwrap.dedent(f'''
      import sys
      sys.path.insert(0, {str(REPO_ROOT / 'tests')!r})
      from conftest import shrink
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
  return str(config)
