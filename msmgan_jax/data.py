"""Input pipelines from TFDS, with an offline Fashion-MNIST builder.

`load(config.dataset, ...)` resolves a dataset name to a prepared TFDS builder:
plain TFDS names (`fashion_mnist`, `mnist`, `cifar10`, `cifar100`) work unchanged
where TFDS can download; offline, `fashion_mnist` is read from the IDX files of
Debian's `dataset-fashion-mnist` through `FashionMnistLocal`, a builder with the
same features and splits, prepared once into the TFDS data dir.

Training batches are infinite, shuffled, augmented and sharded per host; eval
batches cover every example exactly once (the last batch is padded and carries
a `mask`).
"""
import dataclasses
import gzip
import os
import socket
import urllib.parse
from typing import Iterator, Optional

import filelock
import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

DEBIAN_FASHION_MNIST = '/usr/share/datasets/fashion-mnist'
IDX_FILES = {
    'train': ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz'),
    'test': ('t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz'),
}
FASHION_MNIST_LABELS = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal',
                        'Shirt', 'Sneaker', 'Bag', 'Ankle boot')
# Per-channel mean/std of the training split (on [0, 1] pixels).
STATS = {
    'fashion_mnist': ((0.2860,), (0.3530,)),
    'mnist': ((0.1307,), (0.3081,)),
    'cifar10': ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    'cifar100': ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
SUPPORTED = tuple(STATS)
HOW_TO_GET = (
    'Run where TFDS can download it (it is then cached in the TFDS data dir, '
    '`dataset.data_dir`), or copy a prepared TFDS data dir here. For fashion_mnist '
    'offline: `apt-get install dataset-fashion-mnist` (Debian) or put the four IDX .gz '
    f'files ({", ".join(f for pair in IDX_FILES.values() for f in pair)}) in a folder '
    'and set --config.dataset.manual_dir=FOLDER.')


class DataError(RuntimeError):
  """A dataset could not be found or prepared; the message says how to get it."""


def read_idx(path: str) -> np.ndarray:
  """Reads one gzipped IDX file (MNIST format) into a uint8 array."""
  try:
    with gzip.open(path, 'rb') as f:
      raw = f.read()
  except (OSError, EOFError) as e:  # BadGzipFile is an OSError; a cut stream an EOFError.
    raise DataError(f'{path} is not a readable gzip file ({e}); reinstall '
                    'dataset-fashion-mnist or replace the file') from e
  if len(raw) < 4 or raw[:2] != b'\0\0' or raw[2] != 0x08:
    raise DataError(f'{path} is not an unsigned-byte IDX file')
  ndim = raw[3]
  dims = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], 'big') for i in range(ndim))
  data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
  if data.size != int(np.prod(dims)):
    raise DataError(f'{path} is truncated: header says {dims}, found {data.size} bytes')
  return data.reshape(dims)


def find_idx_dir(manual_dir: Optional[str]) -> Optional[str]:
  """The first of `manual_dir` and Debian's install path that holds all four IDX files."""
  for d in (manual_dir, DEBIAN_FASHION_MNIST):
    if d and all(os.path.exists(os.path.join(d, f)) for p in IDX_FILES.values() for f in p):
      return d
  return None


class FashionMnistLocal(tfds.core.GeneratorBasedBuilder):
  """Fashion-MNIST from local IDX files; same features and splits as TFDS's `fashion_mnist`."""
  VERSION = tfds.core.Version('3.0.1')
  MANUAL_DOWNLOAD_INSTRUCTIONS = HOW_TO_GET

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description='Fashion-MNIST read from the IDX files of Debian\'s dataset-fashion-mnist.',
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(28, 28, 1)),
            'label': tfds.features.ClassLabel(names=FASHION_MNIST_LABELS),
        }),
        supervised_keys=('image', 'label'),
        homepage='https://github.com/zalandoresearch/fashion-mnist')

  def _split_generators(self, dl_manager):
    src = find_idx_dir(str(dl_manager.manual_dir) if dl_manager.manual_dir else None)
    if src is None:
      raise DataError(f'Fashion-MNIST IDX files not found. {HOW_TO_GET}')
    return {split: self._generate_examples(os.path.join(src, img), os.path.join(src, lab))
            for split, (img, lab) in IDX_FILES.items()}

  def _generate_examples(self, images_path, labels_path):
    images, labels = read_idx(images_path), read_idx(labels_path)
    if len(images) != len(labels):
      raise DataError(f'{images_path} and {labels_path} hold different numbers of examples')
    for i, (image, label) in enumerate(zip(images, labels)):
      yield i, {'image': image[..., None], 'label': int(label)}


def builder_for(cfg) -> tfds.core.DatasetBuilder:
  """A prepared TFDS builder for `cfg.name` (see the module docstring for the order tried).

  Preparation holds a file lock in the data dir: processes started together (a sweep, the
  test suite) prepare a dataset once; the others wait, then read what it wrote.
  """
  if cfg.name not in SUPPORTED:
    raise DataError(f'unknown dataset {cfg.name!r}; supported: {SUPPORTED}')
  data_dir = cfg.get('data_dir') or None
  if data_dir and os.path.exists(data_dir) and not os.path.isdir(data_dir):
    raise DataError(f'dataset.data_dir {data_dir} is a file; give a directory (or leave it '
                    'empty for the TFDS default)')
  if cfg.name == 'fashion_mnist' and cfg.source in ('auto', 'local'):
    idx_dir = find_idx_dir(cfg.get('manual_dir') or None)
    if idx_dir is not None or FashionMnistLocal(data_dir=data_dir).is_prepared():
      with _prepare_lock(data_dir, FashionMnistLocal.name):
        local = FashionMnistLocal(data_dir=data_dir)  # made under the lock: sees the others' work.
        if not local.is_prepared():
          local.download_and_prepare(
              download_config=tfds.download.DownloadConfig(manual_dir=idx_dir))
      return local
    if cfg.source == 'local':
      raise DataError(f'Fashion-MNIST IDX files not found. {HOW_TO_GET}')
  if tfds.builder(cfg.name, data_dir=data_dir).is_prepared():
    return tfds.builder(cfg.name, data_dir=data_dir)
  with _prepare_lock(data_dir, cfg.name):
    builder = tfds.builder(cfg.name, data_dir=data_dir)
    if builder.is_prepared():
      return builder
    if not _download_hosts_resolve(builder):
      raise DataError(f'dataset {cfg.name!r} is not prepared in the TFDS data dir '
                      f'({builder.data_dir}) and its download hosts cannot be reached from '
                      f'here. {HOW_TO_GET}')
    try:
      builder.download_and_prepare()
    except Exception as e:  # TFDS raises many types for "no network" / "no files".
      raise DataError(f'dataset {cfg.name!r} is not prepared in the TFDS data dir '
                      f'({builder.data_dir}) and could not be downloaded ({type(e).__name__}: '
                      f'{str(e)[:200]}). {HOW_TO_GET}') from e
  return builder


def _prepare_lock(data_dir: Optional[str], name: str) -> filelock.FileLock:
  """The inter-process lock guarding the preparation of dataset `name` in `data_dir`."""
  from tensorflow_datasets.core import constants  # pylint: disable=g-import-not-at-top
  root = os.path.expanduser(data_dir or constants.DATA_DIR)
  os.makedirs(root, exist_ok=True)
  return filelock.FileLock(os.path.join(root, f'.{name}.prepare.lock'))


def _download_hosts_resolve(builder) -> bool:
  """False when none of the builder's download hosts resolves (offline): fail fast, since
  TFDS would otherwise retry for minutes. True when the builder names no URLs."""
  hosts = {urllib.parse.urlparse(u).hostname for u in (builder.url_infos or {})}
  for host in hosts:
    try:
      socket.getaddrinfo(host, 443)
      return True
    except OSError:
      pass
  return not hosts


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the trainer needs to know about a dataset."""
  name: str
  num_classes: int
  image_shape: tuple
  num_train: int
  num_test: int


def _host_split(split: str) -> str:
  """This host's share of `split` (all of it on one host)."""
  return tfds.even_splits(split, n=jax.process_count())[jax.process_index()]


def _preprocess(cfg, train: bool, seed: int = 0):
  mean, std = (np.array(s, np.float32) for s in STATS[cfg.name])

  def fn(index, ex):
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(
        tf.stack([tf.cast(seed, tf.int64), tf.cast(index, tf.int64)]), 2))
    image = tf.cast(ex['image'], tf.float32) / 255.0
    if train and cfg.crop_padding > 0:
      shape = tf.shape(image)
      p = cfg.crop_padding
      image = tf.pad(image, [[p, p], [p, p], [0, 0]], mode='CONSTANT')
      image = tf.image.stateless_random_crop(image, shape, crop_seed)
    if train and cfg.flip:
      image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    return {'image': (image - mean) / std, 'label': tf.cast(ex['label'], tf.int32)}
  return fn


def num_examples(builder, split: str) -> int:
  """Examples in a (possibly sliced) split, as TFDS counts them; DataError if none."""
  try:
    n = builder.info.splits[split].num_examples
  except (KeyError, ValueError, AssertionError) as e:
    raise DataError(f'split {split!r} of {builder.name} cannot be read ({e}); its splits are '
                    f'{sorted(builder.info.splits)}, sliced like train[:10%]') from e
  if n <= 0:
    raise DataError(f'split {split!r} of {builder.name} holds no examples; fix the slice')
  return n


def load(cfg, *, batch_size: int, eval_batch_size: int):
  """Returns `(info, train_batches, eval_fn)`.

  `train_batches(seed, skip)` yields this host's share of each global batch of
  `batch_size` forever, the same sequence for the same seed (so a resumed run skips
  the batches it has seen);
  `eval_fn()` yields padded eval batches with a `mask` over this host's test share.
  """
  builder = builder_for(cfg)
  features = builder.info.features
  info = DatasetInfo(cfg.name, features['label'].num_classes, tuple(features['image'].shape),
                     num_examples(builder, cfg.train_split), num_examples(builder, cfg.test_split))
  per_host = batch_size // jax.process_count()
  per_host_eval = eval_batch_size // jax.process_count()

  train_split = _host_split(cfg.train_split)

  def train_batches(seed: int, skip: int = 0) -> Iterator[dict]:
    """This host's training batches for `seed`, deterministic, after skipping `skip` of them."""
    ds = builder.as_dataset(split=train_split, shuffle_files=True,
                            read_config=tfds.ReadConfig(shuffle_seed=seed))
    ds = ds.cache().repeat().shuffle(cfg.shuffle_buffer, seed=seed)
    ds = ds.enumerate().map(_preprocess(cfg, True, seed), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(per_host, drop_remainder=True).skip(skip).prefetch(tf.data.AUTOTUNE)
    return iter(tfds.as_numpy(ds))

  eval_ds = builder.as_dataset(split=_host_split(cfg.test_split), shuffle_files=False)
  eval_ds = eval_ds.enumerate().map(_preprocess(cfg, False), num_parallel_calls=tf.data.AUTOTUNE).cache()

  def eval_fn() -> Iterator[dict]:
    for batch in tfds.as_numpy(eval_ds.batch(per_host_eval).prefetch(tf.data.AUTOTUNE)):
      yield pad_batch(batch, per_host_eval)
  return info, train_batches, eval_fn


def pad_batch(batch: dict, size: int) -> dict:
  """Pads a batch to `size` examples with zeros and adds a 0/1 `mask`."""
  n = len(batch['label'])
  out = {k: np.concatenate([v, np.zeros((size - n,) + v.shape[1:], v.dtype)])
         for k, v in batch.items()}
  out['mask'] = (np.arange(size) < n).astype(np.float32)
  return out
