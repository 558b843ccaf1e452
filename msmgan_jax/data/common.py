"""What the data sources and the pipelines share: TensorFlow imported on first use, TFDS's
names, the TFDS data dir, the JSON cache of values computed from the data, and the
preparation lock.

The cache holds normalisation stats (`datasets.normalisation`) and, for image folders, the
split and the decode check (`sources.image_folder`), as JSON under `CACHE_DIR` in the TFDS
data dir (`dataset.data_dir`, or TFDS's default).
"""
import contextlib
import hashlib
import importlib
import json
import os
import sys
from typing import Callable, Optional

import filelock

from msmgan_jax.errors import DataError
from msmgan_jax.files import io

CACHE_DIR = 'msmgan_cache'  # in the TFDS data dir: computed stats and image-folder checks.


class Lazy:
  """A module imported on first attribute access (TensorFlow is only needed for TFDS data)."""

  def __init__(self, name: str):
    self._name = name

  def __getattr__(self, attr):
    return getattr(importlib.import_module(self._name), attr)


tf = Lazy('tensorflow')
tfds = Lazy('tensorflow_datasets')


def canonical_name(name: str) -> str:
  """TFDS's own name of a registered dataset, as TFDS reads a name: 'Fashion_MNIST' and
  'FashionMNIST' are 'fashion_mnist' (config and version kept); other names unchanged."""
  try:
    dataset, _ = tfds.core.naming.parse_builder_name_kwargs(name)
    canonical = tfds.builder_cls(dataset.name).name
  except Exception:  # pylint: disable=broad-except  (not a builder name; TFDS raises many types)
    return name
  rest = name[name.index('/'):] if '/' in name else (name[name.index(':'):] if ':' in name else '')
  return canonical + rest


def registered(name: str) -> bool:
  """Whether `name` (optionally with /config and :version) is a TFDS builder of this install."""
  try:
    dataset, _ = tfds.core.naming.parse_builder_name_kwargs(name)
    return dataset.namespace is None and bool(tfds.builder_cls(dataset.name))
  except ValueError:  # not a builder name at all, or DatasetNotFoundError.
    return False


def data_root(data_dir: Optional[str]) -> str:
  """The TFDS data dir: `data_dir`, or TFDS's default."""
  from tensorflow_datasets.core import constants  # pylint: disable=g-import-not-at-top
  return os.path.expanduser(data_dir or constants.DATA_DIR)


@contextlib.contextmanager
def prepare_lock(data_dir: Optional[str], name: str):
  """Holds the inter-process lock guarding the preparation of dataset `name` in `data_dir`.

  Raises:
    DataError: the data dir cannot be made or written (it says which and the fix).
  """
  root = data_root(data_dir)
  try:
    os.makedirs(root, exist_ok=True)
    lock = filelock.FileLock(os.path.join(root, f'.{name}.prepare.lock'))
    lock.acquire()
  except OSError as e:
    raise DataError(f'dataset {name} is not prepared in {root} and that folder cannot be '
                    f'written ({e.strerror or e}); set --config.dataset.data_dir to a writable '
                    'folder (or prepare it there once where it is writable)') from e
  try:
    yield
  finally:
    lock.release()


def cached(cfg, kind: str, key: dict, compute: Callable[[], dict]) -> dict:
  """`compute()`, or what it returned before for the same `key` (JSON in the TFDS data dir).

  Written atomically, so processes racing here each compute the same value and a reader sees
  a whole file; nothing is written when `compute` raises. An unwritable data dir only costs
  computing again next time.

  Args:
    cfg: the dataset config (its `data_dir` places the cache).
    kind: the file name's prefix ('stats', 'split', 'scan').
    key: JSON-able; the file is named by its SHA-256 and holds it, so a changed key
      (other files, another rule) computes again.
    compute: makes the JSON-able value.
  """
  name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
  path = os.path.join(data_root(cfg.get('data_dir') or None), CACHE_DIR, f'{kind}-{name}.json')
  try:
    with open(path) as f:
      value = json.load(f)
    if value['key'] == key:
      return value['value']
  except (OSError, ValueError, KeyError, TypeError):
    pass  # not cached yet, or a damaged file: computed again and replaced.
  value = compute()
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    io.write_json(path, {'key': key, 'value': value})
  except OSError as e:
    sys.stderr.write(f'warning: could not cache the dataset {kind} in {path} ({e})\n')
  return value
