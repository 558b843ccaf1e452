"""Shared test setup: quiet TensorFlow, CPU-only JAX, a session XLA cache, and the fixtures
(the real TFDS data dir, a trained teacher). Helpers the test modules share: `tests/support`."""
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

import os.path  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402

# The configs package (`from configs import compare_lowdata_v2` in the comparison configs),
# as `python -m pytest` from the root gives it and `msmgan_jax.cli` does for the commands:
# a bare `pytest`, or one run from another directory, finds it too.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)


def _quiet_tf():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.get_logger().setLevel('ERROR')
  tf.config.set_visible_devices([], 'GPU')
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  tfds.disable_progress_bar()
  from absl import logging  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.ERROR)


_quiet_tf()

# After the environment above and TensorFlow's settings: support imports JAX and the package.
from support import REPO_ROOT, dataset_cfg, load_config, shrink  # noqa: E402


def pytest_sessionfinish(session):
  """Removes the XLA cache this process made (xdist's controller: after its workers end)."""
  del session
  if _XLA_CACHE_OWNER:
    shutil.rmtree(os.environ['JAX_COMPILATION_CACHE_DIR'], ignore_errors=True)


@pytest.fixture(scope='session')
def repo_root():
  """The repository's root folder (a `pathlib.Path`)."""
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


@pytest.fixture(scope='session')
def teacher_run(repo_root, tfds_data_dir, tmp_path_factory):
  """A finished 2-epoch resnet8 teacher run: (config, workdir, summary)."""
  from msmgan_jax.training import train  # pylint: disable=g-import-not-at-top
  cfg = shrink(load_config(repo_root, 'teacher_fmnist'), tfds_data_dir)
  workdir = str(tmp_path_factory.mktemp('teacher'))
  return cfg, workdir, train.train_and_evaluate(cfg, workdir)
