"""Data source `fashion_mnist_local`: Fashion-MNIST offline, from Debian's IDX files.

It claims `dataset.name` fashion_mnist (as TFDS reads the name: 'Fashion_MNIST' too) with
`dataset.source` auto or local, and builds `FashionMnistLocal`, a TFDS builder with the
features and splits of TFDS's `fashion_mnist`, from the four gzipped IDX files of Debian's
`dataset-fashion-mnist` (or of `dataset.manual_dir`), prepared once into the TFDS data dir.
Where neither it is prepared nor the files are there, `auto` leaves the name to the TFDS
source (a download); `local` is a DataError saying how to get the files.
"""
import functools
import gzip
import os
from typing import Optional

import numpy as np

from msmgan_jax.data.common import canonical_name, prepare_lock, registered, tfds
from msmgan_jax.data.sources.base import DataSource, require
from msmgan_jax.errors import DataError

DEBIAN_FASHION_MNIST = '/usr/share/datasets/fashion-mnist'
IDX_FILES = {
    'train': ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz'),
    'test': ('t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz'),
}
FASHION_MNIST_LABELS = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal',
                        'Shirt', 'Sneaker', 'Bag', 'Ankle boot')
HOW_TO_GET = (
    'Run where TFDS can download it (it is then cached in the TFDS data dir, '
    '`dataset.data_dir`), or copy a prepared TFDS data dir here. For fashion_mnist '
    'offline: `apt-get install dataset-fashion-mnist` (Debian) or put the four IDX .gz '
    f'files ({", ".join(f for pair in IDX_FILES.values() for f in pair)}) in a folder '
    'and set --config.dataset.manual_dir=FOLDER.')


def read_idx(path: str) -> np.ndarray:
  """Reads one gzipped IDX file (MNIST format) into a uint8 array; DataError when it is
  no readable gzip, no unsigned-byte IDX file, or shorter than its header says."""
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


@functools.cache
def builder_class():
  """The builder class `FashionMnistLocal`, defined (and registered with TFDS) on first use."""

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
  return FashionMnistLocal


def claims(name: str) -> bool:
  """Whether `name` is TFDS's fashion_mnist, as TFDS reads names."""
  return registered(name) and canonical_name(name) == 'fashion_mnist'


def build(cfg):
  """The prepared `FashionMnistLocal` builder (prepared here, under the data dir's lock,
  when the IDX files are found), or None to leave fashion_mnist to the TFDS source
  (`dataset.source` tfds, or auto without the files). DataError with `dataset.source`
  local and no files."""
  if cfg.source not in ('auto', 'local'):
    return None
  data_dir = cfg.get('data_dir') or None
  idx_dir = find_idx_dir(cfg.get('manual_dir') or None)
  local = builder_class()(data_dir=data_dir)
  if local.is_prepared():  # no lock: the data dir may be read-only.
    return local
  if idx_dir is not None:
    with prepare_lock(data_dir, builder_class().name):
      local = builder_class()(data_dir=data_dir)  # made under the lock: sees the others' work.
      if not local.is_prepared():
        local.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=idx_dir))
    return local
  if cfg.source == 'local':
    raise DataError(f'Fashion-MNIST IDX files not found. {HOW_TO_GET}')
  return None


SOURCE_VALUES = ('auto', 'tfds', 'local')


def check(dataset) -> None:
  """`dataset.source`: auto, tfds or local, and local only for fashion_mnist (ConfigError)."""
  require(dataset.source in SOURCE_VALUES, 'dataset.source',
          f'{dataset.source!r} is not one of {SOURCE_VALUES}: use auto, tfds or local')
  require(dataset.source != 'local' or claims(dataset.name), 'dataset.source',
          "'local' exists only for fashion_mnist; use auto or tfds")


SOURCE = DataSource('fashion_mnist_local', claims, build=build, check=check)
