"""Input pipelines from TFDS: registered datasets, an offline Fashion-MNIST builder, your own data.

`load(config.dataset, ...)` resolves `dataset.name` to a TFDS builder:
- a registered TFDS name (`fashion_mnist`, `mnist`, `cifar10`, `svhn_cropped`, ...), prepared
  in the TFDS data dir, downloaded where TFDS can; offline, `fashion_mnist` is read from the
  IDX files of Debian's `dataset-fashion-mnist` through `FashionMnistLocal`, a builder with
  the same features and splits, prepared once into the TFDS data dir;
- else an existing folder: a prepared TFDS dataset directory (holding dataset_info.json), or
  an image folder `DIR/{train,test}/CLASS/*.{png,jpg,jpeg}` read by TFDS's `ImageFolder`
  after one check that every image decodes; an unsplit one, `DIR/CLASS/*.png`, is split per
  class into train, validation and test by a seeded rule (`_split_folder`).

Image size, channels and classes come from the data; `dataset.image_size` resizes. Pixels are
normalised per channel with the training split's mean/std: known for the datasets in `STATS`,
otherwise computed once from a sample of the training split. Those stats and the image-folder
check are cached as JSON in the TFDS data dir (`msmgan_cache/`); a folder given by path is
only read.

Training batches are infinite, shuffled, augmented and sharded per host; eval
batches cover every example exactly once (the last batch is padded and carries
a `mask`). `dataset.pipeline` picks who makes them: `device` holds the splits in device
memory and makes batches with jitted code (`arrays.DevicePipeline`, epoch-exact order),
`tfdata` streams them through tf.data (large datasets, several hosts); `auto` takes
`device` on one host when the training images take at most `DEVICE_MAX_BYTES`. An `.npz`
file written by `python -m msmgan_jax.arrays` is read without TensorFlow.

TensorFlow and TFDS are imported on first use, so the `.npz` path runs where they are not
installed.
"""
from __future__ import annotations

import contextlib
import dataclasses
import difflib
import errno
import glob
import gzip
import hashlib
import json
import os
import shutil
import tempfile
import socket
import sys
import unicodedata
import urllib.parse
from typing import Callable, Iterator, Optional

import functools
import importlib

import filelock
import jax
import numpy as np

from msmgan_jax.data import arrays as arrays_lib
from msmgan_jax.data import recipe


from msmgan_jax.files import io


from msmgan_jax.core import sharding


class _Lazy:
  """A module imported on first attribute access (TensorFlow is only needed for TFDS data)."""

  def __init__(self, name: str):
    self._name = name

  def __getattr__(self, attr):
    return getattr(importlib.import_module(self._name), attr)


tf = _Lazy('tensorflow')
tfds = _Lazy('tensorflow_datasets')

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
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')  # the files tfds.folder_dataset.ImageFolder reads.
STATS_SAMPLE = 10000  # training images that computed normalisation stats come from.
CACHE_DIR = 'msmgan_cache'  # in the TFDS data dir: computed stats and image-folder checks.
HOW_TO_GET = (
    'Run where TFDS can download it (it is then cached in the TFDS data dir, '
    '`dataset.data_dir`), or copy a prepared TFDS data dir here. For fashion_mnist '
    'offline: `apt-get install dataset-fashion-mnist` (Debian) or put the four IDX .gz '
    f'files ({", ".join(f for pair in IDX_FILES.values() for f in pair)}) in a folder '
    'and set --config.dataset.manual_dir=FOLDER.')
OWN_DATA = ('give a registered TFDS name, a prepared TFDS dataset directory (holding '
            'dataset_info.json), an image folder holding train/ and test/, each with one '
            'sub-folder of images per class (or only the class sub-folders: then it is split), '
            'or an .npz file written by python -m msmgan_jax.arrays')
DEVICE_MAX_BYTES = 1 << 30  # dataset.pipeline auto: training images up to this go on the device.
PIPELINES = ('auto', 'device', 'tfdata')
SPLIT_PARTS = ('train', 'validation', 'test')  # an unsplit image folder's splits (split_fractions).
SPLIT_RULE = 'stratified-v2'  # the name its record gives the rule of `_split_folder`.
SPLIT_COPIES = 'together, across classes'  # where that rule keeps byte-identical images.
NAME_MAX = 255  # the longest file name (in bytes) of common file systems: the view's fit it.


from msmgan_jax.errors import DataError  # noqa: E402,F401 (data.DataError)


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


def __getattr__(name):
  if name == 'FashionMnistLocal':
    return _fashion_mnist_local()
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


@functools.cache
def _fashion_mnist_local():
  """The builder class, defined (and registered with TFDS) on first use."""

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


def check_name(name) -> Optional[str]:
  """None when `name` is a registered TFDS name, an existing folder or an arrays `.npz`
  file, else what is wrong."""
  if isinstance(name, str) and is_arrays_file(name):
    return None
  if isinstance(name, str) and (_registered(name) or os.path.isdir(os.path.expanduser(name))):
    return None
  close = [] if os.sep in str(name) else difflib.get_close_matches(
      str(name), tfds.list_builders(with_community_datasets=False), n=1, cutoff=0.5)
  hint = f' (did you mean {close[0]!r}?)' if close else ''
  return (f'{name!r} is not one of the registered TFDS datasets nor an existing folder{hint}; '
          f'{OWN_DATA}')


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


def _registered(name: str) -> bool:
  """Whether `name` (optionally with /config and :version) is a TFDS builder of this install."""
  try:
    dataset, _ = tfds.core.naming.parse_builder_name_kwargs(name)
    return dataset.namespace is None and bool(tfds.builder_cls(dataset.name))
  except ValueError:  # not a builder name at all, or DatasetNotFoundError.
    return False


def builder_for(cfg) -> tfds.core.DatasetBuilder:
  """A prepared TFDS builder for `cfg.name` (see the module docstring for the order tried).

  Preparation holds a file lock in the data dir: processes started together (a sweep, the
  test suite) prepare a dataset once; the others wait, then read what it wrote.
  """
  problem = check_name(cfg.name)
  if problem:
    raise DataError(f'dataset.name {problem}')
  data_dir = cfg.get('data_dir') or None
  if data_dir and os.path.exists(data_dir) and not os.path.isdir(data_dir):
    raise DataError(f'dataset.data_dir {data_dir} is a file; give a directory (or leave it '
                    'empty for the TFDS default)')
  if not _registered(cfg.name):
    folder = os.path.abspath(os.path.expanduser(cfg.name))
    if os.path.exists(os.path.join(folder, 'dataset_info.json')):
      try:
        return tfds.builder_from_directory(folder)
      except Exception as e:  # TFDS raises many types for damaged metadata.
        raise DataError(f'{folder} holds a dataset_info.json that TFDS cannot read '
                        f'({type(e).__name__}: {str(e)[:200]}); prepare the dataset again') from e
    return _image_folder(cfg, folder)
  name = canonical_name(cfg.name)  # 'Fashion_MNIST', 'FashionMNIST' -> 'fashion_mnist'.
  if name == 'fashion_mnist' and cfg.source in ('auto', 'local'):
    idx_dir = find_idx_dir(cfg.get('manual_dir') or None)
    local = _fashion_mnist_local()(data_dir=data_dir)
    if local.is_prepared():  # no lock: the data dir may be read-only.
      return local
    if idx_dir is not None:
      with _prepare_lock(data_dir, _fashion_mnist_local().name):
        local = _fashion_mnist_local()(data_dir=data_dir)  # made under the lock: sees the others' work.
        if not local.is_prepared():
          local.download_and_prepare(
              download_config=tfds.download.DownloadConfig(manual_dir=idx_dir))
      return local
    if cfg.source == 'local':
      raise DataError(f'Fashion-MNIST IDX files not found. {HOW_TO_GET}')
  builder = tfds.builder(name, data_dir=data_dir)
  if builder.is_prepared():  # no lock: the data dir may be read-only.
    return builder
  with _prepare_lock(data_dir, name):
    builder = tfds.builder(name, data_dir=data_dir)
    if builder.is_prepared():
      return builder
    if not _download_hosts_resolve(builder):
      raise DataError(f'dataset {name!r} is not prepared in the TFDS data dir '
                      f'({builder.data_dir}) and its download hosts cannot be reached from '
                      f'here. {HOW_TO_GET}')
    try:
      builder.download_and_prepare()
    except Exception as e:  # TFDS raises many types for "no network" / "no files".
      raise DataError(f'dataset {name!r} is not prepared in the TFDS data dir '
                      f'({builder.data_dir}) and could not be downloaded ({type(e).__name__}: '
                      f'{str(e)[:200]}). {HOW_TO_GET}') from e
  return builder


def _data_root(data_dir: Optional[str]) -> str:
  """The TFDS data dir: `data_dir`, or TFDS's default."""
  from tensorflow_datasets.core import constants  # pylint: disable=g-import-not-at-top
  return os.path.expanduser(data_dir or constants.DATA_DIR)


@contextlib.contextmanager
def _prepare_lock(data_dir: Optional[str], name: str):
  """Holds the inter-process lock guarding the preparation of dataset `name` in `data_dir`."""
  root = _data_root(data_dir)
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


# ------------------------------------------------------------------------------ image folders


def _split_names(cfg) -> tuple:
  """The split folders an image folder needs: those of dataset.train_split and test_split."""
  return tuple(dict.fromkeys(cfg[f].partition('[')[0] for f in ('train_split', 'test_split')))


def _ignored(name: str) -> bool:
  """Hidden and system entries: `.ipynb_checkpoints`, `.DS_Store`, `._photo.png` (macOS
  AppleDouble files), `__MACOSX`, `__pycache__`: never a class, never an image."""
  return name.startswith('.') or name.startswith('__')


def _image_files(folder: str, splits: tuple, notes: Optional[list] = None) -> dict:
  """{split: {class: [image paths]}} of an image folder; DataError when its layout is wrong.

  A class is a sub-folder of a split folder, named by its name in Unicode NFC (`_nfc`: a
  folder copied from macOS, NFD, is the same class); an image is a file in it ending in
  .png, .jpg or .jpeg (any case). Hidden and system entries (`_ignored`) are skipped, and
  named in `notes` when given. Any name the OS accepts is read (not only UTF-8 ones). A
  class with no image in the first split (training) is refused; in a later split (test) it
  gets a note: that split measures the other classes only. An entry named like an image
  that is no readable file (see `_class_files`) is a DataError naming it.
  """
  files = {}
  for split in splits:
    split_dir = os.path.join(folder, split)
    if not os.path.isdir(split_dir):
      prepared = sorted(glob.glob(os.path.join(glob.escape(folder), '*', 'dataset_info.json')))
      hint = f'; did you mean {os.path.dirname(prepared[-1])}?' if prepared else ''
      raise DataError(f'{folder} is neither a prepared TFDS dataset directory (it holds no '
                      f'dataset_info.json{hint}) nor an image folder (it has no {split}/ '
                      f'sub-folder). An image folder holds {" and ".join(f"{s}/" for s in splits)}'
                      ', each with one sub-folder of images (.png, .jpg, .jpeg) per class, or '
                      'only the class sub-folders (then it is split by dataset.split_fractions).')
    files[split] = _class_files(split_dir, f'{split}/', notes)
    empty = [c for c, paths in files[split].items() if not paths]
    if empty and split == splits[0]:
      raise DataError(f'the class folder(s) {empty} of {split_dir} hold no image (.png, .jpg, '
                      '.jpeg): a class needs training images; add some or remove the folder')
    if empty and notes is not None:
      notes.append(f'{split}/: the class folder(s) {empty} hold no image, so this split '
                   'measures the other classes only')
  for a, b in zip(splits, splits[1:]):
    only_a, only_b = sorted(set(files[a]) - set(files[b])), sorted(set(files[b]) - set(files[a]))
    if only_a or only_b:
      raise DataError(f'the class folders of {a}/ and {b}/ in {folder} differ (only in {a}/: '
                      f'{only_a}, only in {b}/: {only_b}); give both splits the same classes')
  return files


def _class_files(where: str, rel: str, notes: Optional[list]) -> dict:
  """{class: [image paths]} of the class sub-folders of `where` (`rel`: how notes name it,
  'train/' or '' for an unsplit folder), classes named in Unicode NFC (`_nfc`); DataError
  when it holds fewer than 2 classes, two folders whose names are one class in NFC, or an
  entry named like an image that is not a file (`_not_a_file`). Hidden and system entries
  are skipped (and noted, see `_image_files`)."""
  entries = sorted(os.listdir(where))
  skipped = [c for c in entries if _ignored(c) and os.path.isdir(os.path.join(where, c))]
  folders = [c for c in entries if not _ignored(c) and os.path.isdir(os.path.join(where, c))]
  if notes is not None and skipped:
    notes.append(f'{rel}: ' * bool(rel) + f'skipped the hidden or system folder(s) {skipped}, '
                 'not classes')
  if len(folders) < 2:
    also = f' (and the hidden or system folder(s) {skipped}, never classes)' if skipped else ''
    raise DataError(f'{where} holds {len(folders)} class folder(s) {folders}{also}; a '
                    'classifier needs at least 2: put the images of each class in a '
                    'sub-folder of its own')
  files = {}
  for c in folders:
    if _nfc(c) in files:
      raise DataError(f'{where} holds two class folders named {_nfc(c)!r}, one in Unicode NFC '
                      'and one in NFD (as macOS writes names): merge them into one folder')
    names = sorted(os.listdir(os.path.join(where, c)))
    files[_nfc(c)] = [os.path.join(where, c, f) for f in names
                      if not _ignored(f) and f.lower().endswith(IMAGE_EXTENSIONS)]
    for path in files[_nfc(c)]:
      if not os.path.isfile(path):  # follows links: False for a dangling one.
        raise DataError(_not_a_file(path))
    hidden = [f for f in names if _ignored(f)]
    if notes is not None and hidden:
      notes.append(f'{rel}{c}/: skipped {len(hidden)} hidden or system file(s)')
  return dict(sorted(files.items()))


def _nfc(name: str) -> str:
  """`name` in Unicode NFC (composed: 'é' one code point, as Linux and Windows write it;
  macOS writes NFD, 'e' and a combining accent), so a folder copied between them keeps its
  names; a name that is not valid UTF-8 (its bytes as surrogates) is returned unchanged."""
  try:
    name.encode('utf-8')
  except UnicodeEncodeError:
    return name
  return unicodedata.normalize('NFC', name)


def _not_a_file(path: str) -> str:
  """What is wrong with `path`, an entry named like an image that is no regular file (or no
  longer there), and the fix."""
  if os.path.islink(path) and not os.path.exists(path):
    return (f'{path} is a symbolic link to {os.readlink(path)}, which does not exist; '
            'restore what it points to or remove the link')
  if os.path.isdir(path):
    return f'{path} is a folder named like an image; rename it or move it out of its class folder'
  if os.path.lexists(path):
    return (f'{path} is named like an image but is not a regular file (a pipe, socket or '
            'device); remove it or rename it')
  return (f'{path} vanished while its folder was read; wait until whatever moves, syncs or '
          'unpacks the folder has finished, then rerun')


@contextlib.contextmanager
def _os_errors_as(explain: Callable[[OSError], str]):
  """Turns an OSError raised inside into a DataError saying `explain(error)`."""
  try:
    yield
  except OSError as e:
    raise DataError(explain(e)) from e


def _read_fault(folder: str) -> Callable[[OSError], str]:
  """`explain` (see `_os_errors_as`) for a file or folder of the image folder `folder`
  that could not be read: which one, why, and the fix."""
  def explain(e: OSError) -> str:
    path = os.fsdecode(e.filename) if e.filename is not None else folder
    if e.errno == errno.ENOENT:
      return (f'{path} vanished while {folder} was read ({e.strerror}); wait until whatever '
              'moves, syncs or unpacks the folder has finished, then rerun')
    if e.errno in (errno.EACCES, errno.EPERM):
      return (f'{path} cannot be read ({e.strerror}); make it readable (e.g. chmod -R a+rX '
              f'{folder}) or remove it')
    return (f'{path} cannot be read ({e.strerror or e}); fix or remove it (or copy the folder '
            'to a local disk), then rerun')
  return explain


def _view_fault(folder: str, root: str) -> Callable[[OSError], str]:
  """`explain` (see `_os_errors_as`) for a failure to make the clean view of `folder` in
  the TFDS data dir `root` (or the temporary folder it is made in)."""
  def explain(e: OSError) -> str:
    path = os.fsdecode(e.filename) if e.filename is not None else root
    return (f'could not make the folder of links to the images of {folder} at {path} '
            f'({e.strerror or e}); set --config.dataset.data_dir to a writable folder with '
            'free space (or free space there), then rerun')
  return explain


def _is_unsplit(folder: str, splits: tuple) -> bool:
  """Whether `folder` is an unsplit image folder (`DIR/CLASS/*.png`): it holds no split
  folder (train/, validation/, test/ or one that `splits` names), no prepared TFDS dataset
  directory and at least one visible sub-folder. Any other folder is read as split (and
  `_image_files` says what it lacks)."""
  if any(os.path.isdir(os.path.join(folder, s)) for s in SPLIT_PARTS + tuple(splits)):
    return False
  if glob.glob(os.path.join(glob.escape(folder), '*', 'dataset_info.json')):
    return False
  return any(not _ignored(e) and os.path.isdir(os.path.join(folder, e))
             for e in os.listdir(folder))


def _part_sizes(n: int, fractions: tuple) -> list:
  """How many of a class's `n` images go to each part: the largest-remainder rounding of
  n x fractions (ties to the earlier part), then one image for each part with a non-zero
  fraction that got none, taken from the largest part. Needs n >= the non-zero parts."""
  total = float(sum(fractions))
  quotas = [round(n * f / total, 9) for f in fractions]  # 9 digits: no float noise.
  sizes = [int(q) for q in quotas]
  order = sorted((i for i, f in enumerate(fractions) if f > 0),
                 key=lambda i: (-(quotas[i] - sizes[i]), i))
  for k in range(n - sum(sizes)):
    sizes[order[k % len(order)]] += 1
  for i, f in enumerate(fractions):
    if f > 0 and sizes[i] == 0:
      sizes[max(range(len(sizes)), key=lambda j: (sizes[j], -j))] -= 1
      sizes[i] = 1
  return sizes


def _split_key(seed: int, label: str, path: str) -> tuple:
  """Where image `path` of class `label` (its NFC name) comes in its class's order for the
  split with `seed`: the SHA-256 of `'{seed}/{class}/{file name}'` with the file name in
  Unicode NFC (`_nfc`; the bytes of one that is not UTF-8), then that name, then the name's
  own bytes (two names equal in NFC)."""
  raw = os.fsencode(os.path.basename(path))
  name = os.fsencode(_nfc(os.path.basename(path)))
  return hashlib.sha256(os.fsencode(f'{seed}/{label}/') + name).digest(), name, raw


def _group_parts(sizes: list, fractions: tuple, pinned: Optional[list] = None) -> list:
  """The part (index into `fractions`) of each of a class's groups of images, in their
  order (`sizes`: images in each; `pinned`: for each group the part it must go to, or None
  for a free one; all free when not given). The pinned groups count towards their part;
  the free groups fill the parts in order, a part taking the next free group until it
  holds its share of `_part_sizes`, and moving on early when the free groups left are
  just enough to give every still empty part after it one. So each part with a non-zero
  fraction gets at least one group wherever the free groups suffice, and with groups of
  one image each, none pinned, the cut is exactly that of `_part_sizes`."""
  targets = _part_sizes(sum(sizes), fractions)
  parts = [i for i, f in enumerate(fractions) if f > 0]
  pinned = pinned or [None] * len(sizes)
  filled = [0] * len(fractions)
  for size, part in zip(sizes, pinned):
    if part is not None:
      filled[part] += size
  left, j, out = pinned.count(None), 0, []
  for size, part in zip(sizes, pinned):
    if part is None:
      while j < len(parts) - 1 and filled[parts[j]] and (
          filled[parts[j]] >= targets[parts[j]]
          or left <= sum(not filled[p] for p in parts[j + 1:])):
        j += 1
      part, left = parts[j], left - 1
      filled[part] += size
    out.append(part)
  return out


def _split_folder(cfg, folder: str, notes: Optional[list] = None) -> tuple:
  """({part: {class: [image paths]}}, the split's record) of an unsplit image folder
  (`DIR/CLASS/*.png`): each class's images divided into the SPLIT_PARTS by
  dataset.split_fractions (train, validation, test) with dataset.split_seed.

  The rule (SPLIT_RULE: stratified, the same files in each part on every machine, whatever
  order the files were made or listed in, whatever Unicode form their names were written
  in): byte-identical images of a class (the same SHA-256 of their bytes, e.g. `img001.png`
  and `img001 (1).png`) form one group, every other image a group of its own; an image's
  key is the SHA-256 of `'{seed}/{class}/{file name}'` (class and file names in Unicode NFC,
  `_split_key`), a group's the smallest key of its images. The classes are split one after
  the other in the order of their NFC names: a class's groups, in the order of their keys,
  fill train, then validation, then test to the sizes of `_part_sizes` (`_group_parts`),
  except that a group byte-identical to images of an earlier class (the same picture
  under two labels) is pinned to the part those went to, and counts towards it. So no
  two byte-identical images are ever in two parts, within a class or across classes;
  without copies across classes every class is split on its own, as this rule did before
  it kept them together, and without any copies each class's cut is that of `_part_sizes`
  exactly. A part with fraction 0 is left out; every other part gets at least one group
  of every class, unless that class's pinned groups leave too few free ones to give it
  one; then the copies still stay together (a test image trained on would make the test
  wrong): a class left without a training image is a DataError naming it and its copies
  (relabel or remove them), one left without a validation or test image gets a note (that
  part measures the other classes only), as for a split folder (`_image_files`). A
  `note:` in `notes` says how many copies were grouped, and which images sit in more than
  one class and the part each was kept in. The split's cache key holds SPLIT_COPIES, so a
  split cached before copies across classes were kept together is not reused (and the
  clean view's name holds the split's digest, `_image_folder`).

  The record (`DatasetInfo.split`, in summary.json and the export): {'rule', 'names':
  'NFC', 'copies': SPLIT_COPIES, 'seed', 'fractions', 'counts': {part: images},
  'grouped': copies kept with their image of the same class, 'pinned': images kept in the
  part of a byte-identical image of an earlier class, 'digest': a SHA-256 of every file's
  'part/class/file name' (NFC), so two runs can tell they saw the same split}.
  Every image is read once for its SHA-256: the split (and its notes) is cached while the
  files stay the same, and nothing is written when it fails. DataError when there are
  fewer than 2 classes, a class has fewer distinct images than the parts with a non-zero
  fraction (naming it), or one gets no training image (above); an OSError reading a file
  is raised as it is.
  """
  fractions = tuple(float(f) for f in cfg.get('split_fractions', (0.8, 0.1, 0.1)))
  seed = int(cfg.get('split_seed', 0))
  classes = _class_files(folder, '', notes)
  key = {'folder': folder, 'files': _fingerprint({'': classes}), 'rule': SPLIT_RULE,
         'copies': SPLIT_COPIES, 'seed': seed, 'fractions': list(fractions)}
  split = _cached(cfg, 'split', key, lambda: _split_classes(folder, classes, seed, fractions))
  if notes is not None:
    notes.extend(split['notes'])
  return split['files'], split['record']


def _split_classes(folder: str, classes: dict, seed: int, fractions: tuple) -> dict:
  """{'files', 'record', 'notes'} of the split of `classes` ({class: [paths]}) of the
  unsplit image folder `folder` (see `_split_folder`)."""
  contents = {}
  for path in (p for paths in classes.values() for p in paths):
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
      for chunk in iter(functools.partial(f.read, 1 << 20), b''):
        digest.update(chunk)
    contents[path] = digest.hexdigest()
  groups = {c: _groups(seed, c, paths, contents) for c, paths in classes.items()}
  needed = sum(f > 0 for f in fractions)
  parts = [p for p, f in zip(SPLIT_PARTS, fractions) if f > 0]
  few = {c: (len(classes[c]), len(g)) for c, g in groups.items() if len(g) < needed}
  if few:
    nested = any(os.path.isdir(os.path.join(folder, e, f)) for e in os.listdir(folder)
                 if _nfc(e) in few for f in os.listdir(os.path.join(folder, e)))
    also = (' (a class folder holding folders: were these meant as the splits? Name them '
            'train/ and test/)') if nested else ''
    one = len(few) == 1
    raise DataError(
        f'{folder} has no train/ and test/ folders, so every class is split into '
        f'{", ".join(parts)} (dataset.split_fractions {fractions}), which needs at least '
        f'{needed} images in every class, but class ' + ', '.join(
            f'{c!r} has {n}' + (f' ({g} distinct: byte-identical copies stay together)'
                                if g < n else '') for c, (n, g) in few.items()) +
        f'{also}: add images to {"it" if one else "them"} or remove '
        f'{"its folder" if one else "their folders"} (or leave a split out with a fraction of 0)')
  files = {p: {c: [] for c in classes} for p in parts}
  placed = {}  # content -> (class, image, part index) of the first class holding it.
  for c in sorted(groups):
    pinned = [placed[contents[g[0]]][2] if contents[g[0]] in placed else None
              for g in groups[c]]
    for group, part in zip(groups[c], _group_parts(list(map(len, groups[c])), fractions, pinned)):
      placed.setdefault(contents[group[0]], (c, group[0], part))
      files[SPLIT_PARTS[part]][c] += group
  gaps = {c: [p for p in parts if not files[p][c]] for c in classes}
  said = {c: _pinned_gap(c, ps, groups[c], contents, placed) for c, ps in gaps.items() if ps}
  untrained = [said[c] for c in said if gaps[c][0] == parts[0]]
  if untrained:
    raise DataError(f'{folder} has no train/ and test/ folders, so it is split per class, '
                    'and byte-identical images stay in one part, across classes too: '
                    f'{"; ".join(untrained)}. A class needs training images: remove or '
                    'relabel the copies (the same picture under two labels), or add images')
  digest = hashlib.sha256()
  for part, part_classes in files.items():
    for c, paths in part_classes.items():
      for name in sorted(os.fsencode(_nfc(os.path.basename(p))) for p in paths):
        digest.update(os.fsencode(f'{part}/{c}/') + name + b'\n')
  record = {'rule': SPLIT_RULE, 'names': 'NFC', 'copies': SPLIT_COPIES, 'seed': seed,
            'fractions': list(fractions),
            'counts': {p: sum(map(len, files[p].values())) for p in parts},
            'grouped': sum(len(g) - 1 for gs in groups.values() for g in gs),
            'pinned': sum(len(g) for c, gs in groups.items() for g in gs
                          if placed[contents[g[0]]][0] != c),
            'digest': digest.hexdigest()}
  notes = _copy_notes(groups, contents, placed) + [
      f'{said[c]}, so {" and ".join(gaps[c])} measure{"s" * (len(gaps[c]) == 1)} the other '
      'classes only' for c in said]
  return {'files': files, 'record': record, 'notes': notes}


def _groups(seed: int, label: str, paths: list, contents: dict) -> list:
  """The groups of class `label`'s images for its split (see `_split_folder`): lists of
  byte-identical images (`contents`: path -> SHA-256), each in `_split_key` order, the
  groups in the order of their first image's key."""
  key = functools.partial(_split_key, seed, label)
  by_content = {}
  for path in sorted(paths, key=key):
    by_content.setdefault(contents[path], []).append(path)
  return sorted(by_content.values(), key=lambda group: key(group[0]))


def _image_name(c: str, path: str) -> str:
  """How notes name image `path` of class `c`: 'class/file name' (the file's own name)."""
  return f'{c}/{os.path.basename(path)}'


def _pinned_gap(c: str, missing: list, class_groups: list, contents: dict, placed: dict) -> str:
  """What left class `c` without an image in the parts `missing` (see `_split_folder`):
  how many of its groups were pinned by byte-identical images of earlier classes
  (`placed`: content -> (class, image, part index)), naming the first three and their
  part."""
  pinned = [(g[0], placed[contents[g[0]]]) for g in class_groups
            if placed[contents[g[0]]][0] != c]
  named = '; '.join(f'{_image_name(c, p)} = {_image_name(d, q)} in {SPLIT_PARTS[part]}'
                    for p, (d, q, part) in pinned[:3]) + '; ...' * (len(pinned) > 3)
  return (f'class {c!r} has no image in {" or ".join(missing)}: {len(pinned)} of its '
          f'{len(class_groups)} distinct images are byte-identical to images of classes '
          f'before it and kept in their part ({named})')


def _copy_notes(groups: dict, contents: dict, placed: dict) -> list:
  """The notes on copies among an unsplit folder's images (`groups`: {class: groups}, see
  `_groups`; `placed`: content -> (class, image, part index) where it went): how many
  byte-identical copies were kept with their image, and which images sit in more than one
  class (a labelling problem the split cannot mend) and the part each was kept in."""
  lines = []
  copies = [g for class_groups in groups.values() for g in class_groups if len(g) > 1]
  if copies:
    c = next(c for c, gs in groups.items() if copies[0] in gs)
    lines.append(f'{sum(len(g) - 1 for g in copies)} file(s) are byte-identical copies of '
                 f'another image of their class (e.g. {_image_name(c, copies[0][1])} = '
                 f'{_image_name(c, copies[0][0])}); each is kept in the split of its image, '
                 'so no test image is trained on')
  classes_of = {}
  for c in sorted(groups):
    for g in groups[c]:
      classes_of.setdefault(contents[g[0]], []).append(_image_name(c, g[0]))
  shared = [(names, placed[h][2]) for h, names in classes_of.items() if len(names) > 1]
  if shared:
    kept = '; '.join(f'{" = ".join(names)} in {SPLIT_PARTS[part]}' for names, part in shared[:5])
    lines.append(f'{len(shared)} image(s) are in more than one class folder (e.g. '
                 f'{" = ".join(shared[0][0])}): the same picture under two labels; check the '
                 'labelling. Each stays in one part with all its copies (where the first of '
                 f'its classes by name put it), so no test image is trained on: {kept}'
                 + f'; and {len(shared) - 5} more' * (len(shared) > 5))
  return lines


def _fingerprint(files: dict) -> str:
  """A digest of the paths, sizes and modification times of `files` (see `_image_files`)."""
  digest = hashlib.sha256()
  for paths in files.values():
    for path in (p for ps in paths.values() for p in ps):
      st = os.stat(path)
      digest.update(f'{path}\0{st.st_size}\0{st.st_mtime_ns}\n'.encode('utf-8', 'surrogateescape'))
  return digest.hexdigest()


def _link_name(path: str) -> str:
  """The file name an image (or class folder) gets in the clean view: its own when that is
  plain UTF-8, else a readable stand-in (the bytes TFDS cannot take replaced by `_`, and a
  tag of 8 hex digits of the name's SHA-256 that keeps it distinct), its stem shortened
  where needed so the stand-in fits NAME_MAX bytes."""
  name = os.path.basename(path)
  try:
    name.encode('utf-8')
    return name
  except UnicodeEncodeError:
    raw = name.encode('utf-8', 'surrogateescape')
    tag = hashlib.sha256(raw).hexdigest()[:8]
    stem, ext = os.path.splitext(raw.decode('utf-8', 'replace').replace('\ufffd', '_'))
    room = NAME_MAX - len(f'_{tag}{ext}'.encode())
    stem = stem.encode()[:room].decode('utf-8', 'ignore')  # whole characters only.
    return f'{stem}_{tag}{ext}'


def _clean_view(cfg, folder: str, files: dict, split: Optional[dict] = None) -> tuple:
  """A folder of symbolic links holding exactly the classes and images of `files` (the
  splits the run reads, or the parts of an unsplit folder), for TFDS's ImageFolder, which
  would take every sub-folder (a hidden one too) for a class and cannot open non-UTF-8
  names. Its place is in the TFDS data dir, named by the files' fingerprint (and `split`,
  the split's record, for an unsplit folder). Returns (path, {link: original file}, the
  place it goes to, or None when it is already there): a new view is made in a temporary
  folder first (removed again when making it fails), and `_place` puts it in place once
  its images are known to be good. DataError when it cannot be made (`_view_fault`)."""
  named = {'folder': folder, 'files': _fingerprint(files)}
  if split is not None:
    named['split'] = split
  key = hashlib.sha256(json.dumps(named).encode('utf-8', 'surrogateescape')).hexdigest()[:16]
  view = os.path.join(_data_root(cfg.get('data_dir') or None), CACHE_DIR, 'folders', key)
  with _os_errors_as(_view_fault(folder, os.path.dirname(view))):
    where = view if os.path.isdir(view) else tempfile.mkdtemp(prefix='msmgan_view_')
    try:
      origin = {}
      for split, classes in files.items():
        for c, paths in classes.items():
          os.makedirs(os.path.join(where, split, _link_name(c)), exist_ok=True)  # empty: kept.
          for p in paths:
            link = os.path.join(where, split, _link_name(c), _link_name(p))
            origin[link] = p
            if where != view:
              os.symlink(os.path.abspath(p), link)
    except BaseException:
      if where != view:
        shutil.rmtree(where, ignore_errors=True)
      raise
  return where, origin, (None if where == view else view)


def _place(made: str, view: str) -> str:
  """Moves a view made in a temporary folder to its place (another process may have put
  the same view there first: then theirs is kept). The temporary folder is gone after,
  also when the OSError of a view that cannot be placed is raised."""
  tmp = view + f'.tmp{os.getpid()}'
  try:
    os.makedirs(os.path.dirname(view), exist_ok=True)
    shutil.move(made, tmp)
    os.rename(tmp, view)
  except OSError:
    shutil.rmtree(tmp, ignore_errors=True)
    if not os.path.isdir(view):  # nor another process's: this view cannot be placed.
      raise
  finally:
    shutil.rmtree(made, ignore_errors=True)
  return view


def _image_folder(cfg, folder: str) -> tfds.folder_dataset.ImageFolder:
  """TFDS's ImageFolder over a clean view of `folder` (`_clean_view`), decoding to the
  channels and size its images share.

  An unsplit folder (`_is_unsplit`) is split by `_split_folder` into the splits train,
  validation and test of the view (`split_record(builder)` is the split's record); a
  split that dataset.train_split or test_split names and the split leaves out (fraction
  0) is a DataError.

  Every image is decoded once first (cached while the files stay the same): a file that
  does not decode, or (with dataset.image_size 0) images of different sizes, are DataErrors,
  and then nothing is left behind. What was skipped (hidden folders and files) or is
  missing (a test class without images) is said on stderr. A file or folder that cannot be
  read, or vanishes while it is read, is a DataError naming it (`_read_fault`), and so is a
  view that cannot be written (`_view_fault`); no temporary folder is left behind.
  """
  notes, split = [], None
  with _os_errors_as(_read_fault(folder)):
    if _is_unsplit(folder, _split_names(cfg)):
      files, split = _split_folder(cfg, folder, notes)
    else:
      files = _image_files(folder, _split_names(cfg), notes)
    for note in notes:
      sys.stderr.write(f'note: {folder}: {note}\n')
    for field in ('train_split', 'test_split') if split else ():
      name = cfg[field].partition('[')[0]
      if name not in files:
        raise DataError(
            f'dataset.{field} {cfg[field]!r}: {folder} has no train/ and test/ folders, so it '
            f'is split into {", ".join(files)} (dataset.split_fractions '
            f'{tuple(split["fractions"])}), and {name!r} is none of them; name one of those, '
            'or give that part a fraction above 0')
    key = {'folder': folder, 'files': _fingerprint(files), 'resized': cfg.image_size > 0}
    named = split and {k: split[k] for k in ('rule', 'seed', 'fractions', 'digest')}
    view, origin, place = _clean_view(cfg, folder, files, named)
  try:
    scan = _cached(cfg, 'scan', key, lambda: _scan_images(folder, view, origin, cfg.image_size))
  except BaseException:
    if place:
      shutil.rmtree(view, ignore_errors=True)
    raise
  if place:
    with _os_errors_as(_view_fault(folder, os.path.dirname(place))):
      view = _place(view, place)
  builder = tfds.folder_dataset.ImageFolder(view, shape=(*scan['size'], scan['channels']))
  if split:
    builder.msmgan_split = split
  return builder


def split_record(builder) -> Optional[dict]:
  """The record of the split `_split_folder` made of an unsplit image folder (see there),
  for the builder `builder_for` returned for it; None for any other data."""
  return getattr(builder, 'msmgan_split', None)


def _scan_images(folder: str, view: str, origin: dict, image_size: int) -> dict:
  """{'size': [H, W] (or [None, None] when they differ), 'channels': 1 or 3} of the images
  of a clean view (`origin`: its links and the files they stand for).

  Decoded by TFDS's own decoder, in their native channels: all grayscale stays 1 channel;
  anything else (RGB, RGBA, palette, a mix) is read as RGB, alpha dropped.
  """
  native = tfds.folder_dataset.ImageFolder(view, shape=(None, None, None))
  shapes = {}
  for split in sorted({os.path.relpath(l, view).split(os.sep)[0] for l in origin}):
    ds = native.as_dataset(split=split).map(
        lambda ex: (ex['image/filename'], tf.shape(ex['image']))).ignore_errors()
    shapes.update({origin.get(p.decode(), p.decode()): tuple(int(x) for x in s)
                   for p, s in ds.as_numpy_iterator()})
  bad = [p for p in origin.values() if p not in shapes]
  for path in bad:
    with _os_errors_as(_read_fault(folder)):  # unreadable (or vanished): said as such.
      with open(path, 'rb') as f:
        f.read(1)
  if bad:
    raise DataError(f'{len(bad)} image file(s) cannot be decoded: {", ".join(bad[:5])}'
                    f'{", ..." if len(bad) > 5 else ""}; replace or remove them')
  sizes = {}
  for path in sorted(shapes):
    sizes.setdefault(shapes[path][:2], path)
  if len(sizes) > 1 and not image_size:
    examples = ', '.join(f'{h}x{w}: {p}' for (h, w), p in list(sizes.items())[:3])
    raise DataError(f'the images in {folder} have different sizes ({examples}); set '
                    'dataset.image_size (e.g. --config.dataset.image_size=32) to resize every '
                    'image to that size')
  return {'size': list(next(iter(sizes))) if len(sizes) == 1 else [None, None],
          'channels': 1 if all(s[2] == 1 for s in shapes.values()) else 3}


def _cached(cfg, kind: str, key: dict, compute: Callable[[], dict]) -> dict:
  """`compute()`, or what it returned before for the same `key` (JSON in the TFDS data dir).

  Written atomically, so processes racing here each compute the same value and a reader sees
  a whole file; nothing is written when `compute` raises. An unwritable data dir only costs
  computing again next time.
  """
  name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
  path = os.path.join(_data_root(cfg.get('data_dir') or None), CACHE_DIR, f'{kind}-{name}.json')
  try:
    with open(path) as f:
      cached = json.load(f)
    if cached['key'] == key:
      return cached['value']
  except (OSError, ValueError, KeyError, TypeError):
    pass  # not cached yet, or a damaged file: computed again and replaced.
  value = compute()
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    io.write_json(path, {'key': key, 'value': value})
  except OSError as e:
    sys.stderr.write(f'warning: could not cache the dataset {kind} in {path} ({e})\n')
  return value


# -------------------------------------------------------------------------------- pipelines


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the trainer needs to know about a dataset: its name, class count, image shape
  (H, W, C), split sizes, and (for the record a run keeps, `record`) the class names,
  the per-channel normalisation (mean, std on [0, 1] pixels) and, for an unsplit image
  folder, the split made of it (`_split_folder`'s record; None for any other data)."""
  name: str
  num_classes: int
  image_shape: tuple
  num_train: int
  num_test: int
  # The record (not compared: two loads of one dataset are equal whatever they recorded).
  class_names: tuple = dataclasses.field(default=(), compare=False)
  mean: tuple = dataclasses.field(default=(), compare=False)
  std: tuple = dataclasses.field(default=(), compare=False)
  split: Optional[dict] = dataclasses.field(default=None, compare=False)

  def record(self) -> dict:
    """What a run and its teacher's anchors record of the data they trained on, so that a
    teacher is checked against a student's data and a student exported without the data;
    `split` only for an unsplit image folder (rule, seed, fractions, counts, digest)."""
    out = {'name': self.name, 'num_classes': int(self.num_classes),
           'class_names': [str(n) for n in self.class_names],
           'image_shape': [int(d) for d in self.image_shape],
           'mean': [float(x) for x in self.mean], 'std': [float(x) for x in self.std]}
    if self.split is not None:
      out['split'] = self.split
    return out


def _read(builder, split: str, shard: tuple = (0, 1),
          shuffle_seed: Optional[int] = None) -> tf.data.Dataset:
  """Part `shard[0]` of `shard[1]` even parts of `split` (slicing allowed); the files of a
  prepared dataset are shuffled with `shuffle_seed` unless it is None."""
  index, count = shard
  if isinstance(builder, tfds.folder_dataset.ImageFolder):
    # ImageFolder reads whole splits only, in an order it shuffled deterministically (its own
    # file shuffling is unseeded, so it is not used: the caller's seeded shuffle suffices).
    (part,) = tfds.core.ReadInstruction.from_spec(split).to_absolute(builder.info.splits)
    start = part.from_ or 0
    n = (builder.info.splits[part.splitname].num_examples if part.to is None else part.to) - start
    first, stop = start + n * index // count, start + n * (index + 1) // count
    return builder.as_dataset(split=part.splitname).skip(first).take(stop - first)
  return builder.as_dataset(split=tfds.even_splits(split, n=count)[index],
                            shuffle_files=shuffle_seed is not None,
                            read_config=tfds.ReadConfig(shuffle_seed=shuffle_seed))


def _preprocess(cfg, stats: tuple, train: bool, seed: int = 0):
  mean, std = (np.array(s, np.float32) for s in stats)

  def fn(index, ex):
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(
        tf.stack([tf.cast(seed, tf.int64), tf.cast(index, tf.int64)]), 2))
    image = recipe.tf_example(ex['image'], mean, std, cfg.crop_padding, cfg.flip, train,
                              crop_seed, flip_seed, cfg.image_size)
    return {'image': image, 'label': tf.cast(ex['label'], tf.int32)}
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


def image_shape(cfg, builder) -> tuple:
  """(H, W, C) of the images the pipeline yields; DataError when the data is not image
  classification, or its images have no fixed size and dataset.image_size is 0."""
  features = builder.info.features
  if not ('image' in features and isinstance(features['image'], tfds.features.Image) and
          'label' in features and isinstance(features['label'], tfds.features.ClassLabel)):
    raise DataError(f'dataset {cfg.name} has no Image feature "image" and ClassLabel feature '
                    f'"label" (it has {sorted(features.keys())}); give an image classification '
                    'dataset')
  h, w, c = features['image'].shape
  if cfg.image_size:
    h = w = cfg.image_size
  if None in (h, w, c):
    raise DataError(f'the images of {cfg.name} have no fixed size {(h, w, c)}; set '
                    'dataset.image_size (e.g. --config.dataset.image_size=32) to resize them')
  return (h, w, c)


def normalisation(cfg, builder) -> tuple:
  """Per-channel (mean, std) on [0, 1] pixels: from STATS for the datasets there, else
  computed from the training split once (cached) as the pipeline sees it (resized)."""
  if canonical_name(cfg.name) in STATS:
    return STATS[canonical_name(cfg.name)]
  if isinstance(builder, tfds.folder_dataset.ImageFolder):
    with _os_errors_as(_read_fault(builder.data_dir)):  # its view: a link whose image vanished.
      data = {'folder': builder.data_dir,
              'files': _fingerprint(_image_files(builder.data_dir, _split_names(cfg)))}
  else:
    data = {'dataset': builder.info.full_name, 'dir': os.path.abspath(builder.data_dir)}
  key = {**data, 'split': cfg.train_split, 'image_size': cfg.image_size, 'sample': STATS_SAMPLE}
  stats = _cached(cfg, 'stats', key, lambda: _compute_stats(cfg, builder))
  return tuple(stats['mean']), tuple(stats['std'])


def _compute_stats(cfg, builder) -> dict:
  """Mean and std per channel of the first STATS_SAMPLE training images, in file order."""
  ds = _read(builder, cfg.train_split).take(STATS_SAMPLE)
  ds = ds.map(lambda ex: recipe.tf_to_unit(ex['image'], cfg.image_size), num_parallel_calls=tf.data.AUTOTUNE)
  total = total_sq = count = 0
  for images in ds.batch(64).as_numpy_iterator():
    total = total + images.sum((0, 1, 2), dtype=np.float64)
    total_sq = total_sq + np.square(images).sum((0, 1, 2), dtype=np.float64)
    count += images[..., 0].size
  mean = total / count
  std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 0))
  # A constant channel would divide by zero: its std is floored at one grey level.
  return {'mean': mean.tolist(), 'std': np.maximum(std, 1 / 255).tolist()}


def is_arrays_file(name: str) -> bool:
  """Whether `name` names an existing `.npz` file (see `msmgan_jax.arrays`)."""
  return name.endswith('.npz') and os.path.isfile(os.path.expanduser(name))


def to_arrays(cfg) -> dict:
  """Both splits of `cfg` as NumPy arrays, in file order, with their normalisation, laid
  out as an arrays file holds them (`arrays.KEYS`, and `split`, the record of an unsplit
  image folder's split, where there is one). Images stay uint8 unless `image_size`
  resizes them (then float32 on [0, 1], as the tf.data pipeline sees them)."""
  builder = builder_for(cfg)
  image_shape(cfg, builder)  # DataError when the data is not fixed-size image classification.
  mean, std = normalisation(cfg, builder)

  def split(name):
    num_examples(builder, name)
    ds = _read(builder, name)
    if cfg.image_size:
      ds = ds.map(lambda ex: {'image': recipe.tf_to_unit(ex['image'], cfg.image_size), 'label': ex['label']},
                  num_parallel_calls=tf.data.AUTOTUNE)
    images, labels = [], []
    for batch in tfds.as_numpy(ds.batch(4096)):
      images.append(batch['image'])
      labels.append(batch['label'])
    return np.concatenate(images), np.concatenate(labels).astype(np.int32)
  (train_images, train_labels), (test_images, test_labels) = (split(cfg.train_split),
                                                              split(cfg.test_split))
  out = {'name': cfg.name, 'num_classes': builder.info.features['label'].num_classes,
         'class_names': list(builder.info.features['label'].names),
         'train_images': train_images, 'train_labels': train_labels,
         'test_images': test_images, 'test_labels': test_labels, 'mean': mean, 'std': std}
  if split_record(builder) is not None:
    out['split'] = split_record(builder)
  return out


def load(cfg, *, batch_size: int, eval_batch_size: int, mesh=None):
  """Returns `(info, train_batches, eval_fn)`.

  `train_batches(seed, skip)` yields this host's share of each global batch of
  `batch_size` forever, the same sequence for the same seed (so a resumed run skips
  the batches it has seen);
  `eval_fn()` yields padded eval batches with a `mask` over this host's test share.
  The pipeline is `dataset.pipeline`'s (see the module docstring).
  """
  mesh = mesh if mesh is not None else sharding.mesh()
  if is_arrays_file(cfg.name):
    if cfg.pipeline == 'tfdata':
      raise DataError(f'{cfg.name} is an arrays file, read only by the device pipeline; set '
                      'dataset.pipeline to auto or device')
    try:
      arrays = arrays_lib.read(cfg.name)
    except arrays_lib.ArrayError as e:
      raise DataError(str(e)) from e
    return _device(cfg, arrays, batch_size, eval_batch_size, mesh)
  builder = builder_for(cfg)
  shape = image_shape(cfg, builder)
  num_train = num_examples(builder, cfg.train_split)
  pipeline = cfg.pipeline
  if pipeline == 'auto':
    pixel_bytes = num_train * int(np.prod(shape)) * (4 if cfg.image_size else 1)
    pipeline = 'device' if jax.process_count() == 1 and pixel_bytes <= DEVICE_MAX_BYTES \
        else 'tfdata'
  if pipeline == 'device':
    if jax.process_count() > 1:
      raise DataError('dataset.pipeline device runs on one host only; use tfdata (or auto) '
                      'with several hosts')
    return _device(cfg, to_arrays(cfg), batch_size, eval_batch_size, mesh, sliced=True)
  return _tfdata(cfg, builder, shape, num_train, batch_size, eval_batch_size)


def _device(cfg, arrays, batch_size, eval_batch_size, mesh, sliced=False):
  """The in-memory pipeline; `sliced`: the arrays already hold just the configured splits."""
  try:
    pipe = arrays_lib.DevicePipeline(
        arrays, cfg, batch_size=batch_size, eval_batch_size=eval_batch_size, mesh=mesh,
        train_split='train' if sliced else cfg.train_split,
        test_split='test' if sliced else cfg.test_split)
  except arrays_lib.ArrayError as e:
    raise DataError(str(e)) from e
  shape = tuple(int(d) for d in arrays['train_images'].shape[1:])
  if cfg.image_size and shape[:2] != (cfg.image_size, cfg.image_size):
    raise DataError(f'{cfg.name} holds {shape[0]}x{shape[1]} images but dataset.image_size is '
                    f'{cfg.image_size}; save the arrays with --image-size {cfg.image_size} or set '
                    'dataset.image_size to 0')
  info = DatasetInfo(str(arrays['name']), int(arrays['num_classes']), shape, pipe.num_train,
                     pipe.num_test, tuple(arrays_lib.class_names(arrays)),
                     tuple(float(x) for x in np.ravel(arrays['mean'])),
                     tuple(float(x) for x in np.ravel(arrays['std'])),
                     arrays_lib.split_record(arrays))
  return info, pipe.train_batches, pipe.eval_batches


def _tfdata(cfg, builder, shape, num_train, batch_size, eval_batch_size):
  """The tf.data pipeline: per-host shards, a shuffle buffer, augmentation in tf.data."""
  stats = normalisation(cfg, builder)
  info = DatasetInfo(cfg.name, builder.info.features['label'].num_classes, shape,
                     num_train, num_examples(builder, cfg.test_split),
                     tuple(builder.info.features['label'].names), tuple(stats[0]),
                     tuple(stats[1]), split_record(builder))
  per_host = batch_size // jax.process_count()
  per_host_eval = eval_batch_size // jax.process_count()
  shard = (jax.process_index(), jax.process_count())

  def train_batches(seed: int, skip: int = 0) -> Iterator[dict]:
    """This host's training batches for `seed`, deterministic, after skipping `skip` of them."""
    ds = _read(builder, cfg.train_split, shard, shuffle_seed=seed)
    ds = ds.cache().repeat().shuffle(cfg.shuffle_buffer, seed=seed)
    ds = ds.enumerate().map(_preprocess(cfg, stats, True, seed),
                            num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(per_host, drop_remainder=True).skip(skip).prefetch(tf.data.AUTOTUNE)
    return iter(tfds.as_numpy(ds))

  eval_ds = _read(builder, cfg.test_split, shard).enumerate()
  eval_ds = eval_ds.map(_preprocess(cfg, stats, False), num_parallel_calls=tf.data.AUTOTUNE).cache()

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
