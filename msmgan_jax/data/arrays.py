"""Datasets held in device memory: splits as arrays, batches made by jitted code.

For datasets that fit in memory (MNIST-class, CIFAR) the training split is put on the
device once; every step's batch is gathered, cropped, flipped and normalised by one
jitted function, so the host does no per-example work and no TensorFlow runs during
training. The example order is epoch-exact: batch s holds positions
s*B .. (s+1)*B - 1 of the stream perm_0 ++ perm_1 ++ ..., where perm_e is a fresh seeded
permutation of the split (computed on the device), so every epoch visits every example
exactly once and a resumed run recomputes the same batches from the step number.

Splits can be saved to an `.npz` file (`python -m msmgan_jax.arrays NAME OUT.npz`, which
needs TFDS) and a run given that file as `dataset.name` reads it with NumPy alone: this is
how a machine without TensorFlow (a lent GPU box) trains.
"""
import json
import os
import re
from typing import Iterator, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from msmgan_jax.core import sharding
from msmgan_jax.data import recipe

FORMAT = 'msmgan_jax arrays v1'
KEYS = ('train_images', 'train_labels', 'test_images', 'test_labels', 'mean', 'std',
        'num_classes', 'name', 'format')


from msmgan_jax.errors import ArrayError  # noqa: E402,F401 (arrays.ArrayError)


def save(path: str, arrays: dict) -> None:
  """Writes `arrays` (the `KEYS` but `format`: uint8 or float32 [0, 1] NHWC images, int
  labels, per-channel mean and std, the class count and the dataset's name; and the class
  names, `class_names`, where it has them; and `split`, the record of the split made of an
  unsplit image folder, as JSON, where it has one)."""
  tmp = f'{path}.tmp.npz'
  split = split_record(arrays)
  extra = {'split': np.str_(json.dumps(split))} if split is not None else {}
  np.savez_compressed(
      tmp, train_images=arrays['train_images'],
      train_labels=np.asarray(arrays['train_labels'], np.int32),
      test_images=arrays['test_images'], test_labels=np.asarray(arrays['test_labels'], np.int32),
      mean=np.asarray(arrays['mean'], np.float32), std=np.asarray(arrays['std'], np.float32),
      num_classes=np.int32(arrays['num_classes']), name=np.str_(arrays['name']),
      class_names=np.asarray(class_names(arrays), np.str_), format=np.str_(FORMAT), **extra)
  os.replace(tmp, path)


def class_names(arrays: dict) -> list:
  """The class names an arrays dict holds (`class_names`, written since they are recorded),
  else the class indices as names ('0', '1', ...)."""
  if 'class_names' in arrays and len(arrays['class_names']) == int(arrays['num_classes']):
    return [str(n) for n in arrays['class_names']]
  return [str(i) for i in range(int(arrays['num_classes']))]


def split_record(arrays: dict) -> Optional[dict]:
  """The record of an unsplit image folder's split an arrays dict holds (`split`: a dict,
  or the JSON `save` wrote), else None."""
  split = arrays.get('split')
  if split is None or isinstance(split, dict):
    return split
  try:
    return json.loads(str(split))
  except ValueError:
    return None


def read(path: str) -> dict:
  """The arrays of a file written by `save`; ArrayError when it is not one."""
  try:
    with np.load(os.path.expanduser(path), allow_pickle=False) as f:
      out = {k: f[k] for k in f.files}
  except (OSError, ValueError, EOFError) as e:
    raise ArrayError(f'{path} cannot be read as a msmgan_jax arrays file ({e}); write it again '
                     'with python -m msmgan_jax.arrays') from e
  missing = [k for k in KEYS if k not in out]
  if missing or str(out['format']) != FORMAT:
    raise ArrayError(f'{path} is not a msmgan_jax arrays file (missing {missing}); write it with '
                     'python -m msmgan_jax.arrays NAME OUT.npz')
  for split in ('train', 'test'):
    images, labels = out[f'{split}_images'], out[f'{split}_labels']
    if images.ndim != 4 or len(images) != len(labels) or not len(images):
      raise ArrayError(f'{path}: {split} images {images.shape} and labels {labels.shape} do not '
                       'match; write the file again')
    _check_split(path, split, images, labels, out)
  return out


def _check_split(path: str, split: str, images, labels, out: dict) -> None:
  """ArrayError unless a split of an arrays file holds what training reads: labels (N,)
  integer class indices in [0, num_classes), images NHWC with as many channels (1 or 3)
  as `mean` and `std` give, uint8 or floats in [0, 1]. A file made by hand in another
  convention (one-hot or 1-based labels, NCHW images, float pixels in 0..255) would train
  wrong without a word, or stop later with a cause that names none of it."""
  classes = int(out['num_classes'])
  where = f'{path}: {split}_labels'
  if labels.ndim == 2 and labels.shape[1] == classes:
    raise ArrayError(f'{where} {labels.shape} look one-hot; give class indices of shape '
                     f'({len(labels)},) (labels.argmax(-1)) and write the file again')
  if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
    raise ArrayError(f'{where} are {labels.dtype} of shape {labels.shape}; give integer class '
                     f'indices of shape ({len(labels)},)')
  low, high = int(labels.min()), int(labels.max())
  if low < 0 or high >= classes:
    hint = ' (they look 1-based: subtract 1)' if (low, high) == (1, classes) else ''
    raise ArrayError(f'{where} run from {low} to {high}, outside 0..{classes - 1} '
                     f'(num_classes {classes}){hint}; write the file again')
  channels = images.shape[-1]
  mean, std = np.ravel(out['mean']), np.ravel(out['std'])
  if channels not in (1, 3) or len(mean) != channels or len(std) != channels:
    nchw = ' (they look channels-first, NCHW: transpose to NHWC)' if images.shape[1] in (1, 3) \
        else ''
    raise ArrayError(f'{path}: {split}_images {images.shape} must be NHWC with 1 or 3 channels, '
                     f'as many as mean {mean.shape} and std {std.shape} give{nchw}; write the '
                     'file again')
  if not np.all(std > 0):
    raise ArrayError(f'{path}: std {std.tolist()} must be above 0 in every channel')
  if images.dtype == np.uint8:
    return
  if not np.issubdtype(images.dtype, np.floating):
    raise ArrayError(f'{path}: {split}_images are {images.dtype}; give uint8 (0..255) or '
                     'floats in [0, 1]')
  low, high = float(images.min()), float(images.max())
  if low < 0 or high > 1:
    hint = ' (0..255 as floats: divide by 255, or store uint8)' if high > 1 and low >= 0 else ''
    raise ArrayError(f'{path}: {split}_images are floats in [{low:.4g}, {high:.4g}]; float '
                     f'pixels must lie in [0, 1]{hint}')


def slice_split(n: int, spec: str) -> slice:
  """The examples of `spec` ('train', 'train[:10%]', 'test[100:200]') in a split of n."""
  m = re.fullmatch(r'[a-z_]+(?:\[(-?\d*)(%?):(-?\d*)(%?)\])?', spec)
  if not m:
    raise ArrayError(f'split {spec!r} is not NAME or NAME[a:b] (a, b counts or percents)')

  def bound(v, pct, default):
    if not v:
      return default
    v = int(v)
    return int(round(n * v / 100)) if pct else v
  start, stop = bound(m.group(1), m.group(2), 0), bound(m.group(3), m.group(4), n)
  return slice(start, stop)


class DevicePipeline:
  """Training and eval batches of in-memory splits, made on the device by jitted code."""

  def __init__(self, arrays: dict, dataset_cfg, *, batch_size: int, eval_batch_size: int, mesh,
               train_split: str = 'train', test_split: str = 'test', with_index: bool = False):
    """Puts the training split `train_split` of `arrays` (sliced like 'train[:10%]') on the
    devices of `mesh`; with `with_index`, training batches also carry 'index' (B,) int32,
    each example's position in that split. ArrayError when it holds fewer than one batch."""
    self.cfg, self.mesh, self.with_index = dataset_cfg, mesh, with_index
    self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
    train = slice_split(len(arrays['train_labels']), train_split)
    test = slice_split(len(arrays['test_labels']), test_split)
    images, labels = arrays['train_images'][train], arrays['train_labels'][train]
    if len(labels) < batch_size:
      spec = dataset_cfg.get('train_split', train_split) if dataset_cfg else train_split
      whole = spec.partition('[')[0]
      sliced = (f' (dataset.train_split {spec!r} is a slice of it: a :smoke config takes '
                f'train[:20%]; give the whole split with --config.dataset.train_split={whole} '
                'or a larger slice)') if '[' in spec else ''
      raise ArrayError(f'the training split {spec} holds {len(labels)} examples, fewer than '
                       f'one batch of {batch_size}{sliced}; lower batch_size or use more data')
    rep = NamedSharding(mesh, P())
    # Every host holds the whole split (replicated on its devices) and draws the same
    # permutation: the global batches, and so the students, do not depend on how many
    # hosts share the devices.
    self.images, self.labels = sharding.put(images, rep), sharding.put(labels, rep)
    self.test_images = arrays['test_images'][test]
    self.test_labels = arrays['test_labels'][test]
    self.num_train, self.num_test = len(labels), len(self.test_labels)
    self.mean = jnp.asarray(arrays['mean'], jnp.float32)
    self.std = jnp.asarray(arrays['std'], jnp.float32)
    self._batch_sharding = NamedSharding(mesh, P('data'))
    self._perm = jax.jit(lambda key: jax.random.permutation(key, self.num_train),
                         out_shardings=rep)
    self._train_batch = jax.jit(self._make_train_batch, out_shardings=self._batch_sharding)
    self._eval_batch = jax.jit(
        lambda images, mask: jnp.where(mask[:, None, None, None] > 0, self._normalise(images), 0),
        out_shardings=self._batch_sharding)

  # Jitted pieces: the input recipe (`data.recipe`) on device arrays --------------------
  def _normalise(self, images):
    return recipe.normalise(recipe.to_unit(images), self.mean, self.std)

  def _make_train_batch(self, images, labels, perm_a, perm_b, offset, key):
    idx = jax.lax.dynamic_slice(jnp.concatenate([perm_a, perm_b]), (offset,), (self.batch_size,))
    x = recipe.to_unit(images[idx])
    crop_key, flip_key = jax.random.split(key)
    p = self.cfg.crop_padding
    if p > 0:
      corners = jax.random.randint(crop_key, (x.shape[0], 2), 0, 2 * p + 1)
      x = recipe.pad_crop(x, corners, p)
    if self.cfg.flip:
      x = recipe.flip(x, jax.random.bernoulli(flip_key, 0.5, (x.shape[0],)))
    batch = {'image': recipe.normalise(x, self.mean, self.std), 'label': labels[idx]}
    if self.with_index:  # a Python switch: without it the program is the same as ever.
      batch['index'] = idx.astype(jnp.int32)
    return batch

  # Iterators -------------------------------------------------------------------------
  def train_batches(self, seed: int, skip: int = 0) -> Iterator[dict]:
    """Batches skip, skip+1, ... of the epoch-exact stream for `seed` (see the module doc):
    'image' (B, H, W, C) float32 and 'label' (B,) int32 (and 'index' (B,) int32, the
    positions in the training split they come from, with `with_index`)."""
    base = jax.random.key(seed)
    perm_key, aug_key = jax.random.fold_in(base, 0), jax.random.fold_in(base, 1)
    perms = {}

    def perm(e):
      if e not in perms:
        for old in [k for k in perms if k < e - 1]:
          del perms[old]
        perms[e] = self._perm(jax.random.fold_in(perm_key, e))
      return perms[e]

    step = skip
    while True:
      epoch, offset = divmod(step * self.batch_size, self.num_train)
      yield self._train_batch(self.images, self.labels, perm(epoch), perm(epoch + 1),
                              np.int32(offset), jax.random.fold_in(aug_key, step))
      step += 1

  def eval_batches(self) -> Iterator[dict]:
    """Every test example once, in order; the last batch padded, with a 0/1 `mask`."""
    n, size = self.num_test, self.eval_batch_size
    for start in range(0, n, size):
      images = self.test_images[start:start + size]
      k = len(images)
      if k < size:
        images = np.concatenate([images, np.zeros((size - k,) + images.shape[1:], images.dtype)])
      labels = np.zeros(size, np.int32)
      labels[:k] = self.test_labels[start:start + k]
      mask = (np.arange(size) < k).astype(np.float32)
      place = lambda x: sharding.put(x, self._batch_sharding)
      mask = place(mask)
      yield {'image': self._eval_batch(place(images), mask), 'label': place(labels),
             'mask': mask}
