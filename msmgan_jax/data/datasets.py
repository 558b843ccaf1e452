"""Input pipelines: the data a `dataset.name` gives, read by one of two pipelines.

`load(config.dataset, ...)` asks the data sources (`data.sources`, one module each, behind
one registry) which one claims `dataset.name`:
- a registered TFDS name (`fashion_mnist`, `mnist`, `cifar10`, `svhn_cropped`, ...), prepared
  in the TFDS data dir, downloaded where TFDS can (`sources.tfds_source`); offline,
  `fashion_mnist` is read from the IDX files of Debian's `dataset-fashion-mnist` through
  `FashionMnistLocal` (`sources.fashion_mnist_local`), a builder with the same features and
  splits, prepared once into the TFDS data dir;
- else an existing folder: a prepared TFDS dataset directory (holding dataset_info.json), or
  an image folder `DIR/{train,test}/CLASS/*.{png,jpg,jpeg}` read by TFDS's `ImageFolder`
  after one check that every image decodes; an unsplit one, `DIR/CLASS/*.png`, is split per
  class into train, validation and test by a seeded rule (`sources.image_folder`);
- an `.npz` file written by `python -m msmgan_jax.arrays`, read without TensorFlow
  (`sources.arrays_file`);
- whatever a source registered with `sources.register` claims (docs/extending.md).

Image size, channels and classes come from the data; `dataset.image_size` resizes. Pixels are
normalised per channel with the training split's mean/std: known for the datasets in `STATS`,
otherwise computed once from a sample of the training split. Those stats and the image-folder
check are cached as JSON in the TFDS data dir (`msmgan_cache/`); a folder given by path is
only read.

Training batches are infinite, shuffled and augmented; eval batches cover every example
exactly once (the last batch is padded and carries a `mask`). Both are global batches: each
host makes its slice of every one, and the global stream for a seed is the same on any
number of hosts, so N hosts of D devices train the student one host of N x D devices
trains. `dataset.pipeline` picks who makes them: `device` holds the splits in device memory
(every host the whole split) and makes batches with jitted code (`arrays.DevicePipeline`,
epoch-exact order), `tfdata` streams them through tf.data (large datasets; every host reads
the stream and augments its own slice); `auto` takes `device` when the training images
take at most `DEVICE_MAX_BYTES`. Data a source reads without TFDS (an `.npz` file) goes to
the device pipeline. With `load(..., with_index=True)` every training batch also carries
`index`, each example's position in the training split.

TensorFlow and TFDS are imported on first use, so the `.npz` path runs where they are not
installed.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Iterator, Optional

import jax
import numpy as np

from msmgan_jax.core import sharding
from msmgan_jax.data import arrays as arrays_lib
from msmgan_jax.data import recipe
from msmgan_jax.data import sources
from msmgan_jax.data.common import CACHE_DIR, cached, canonical_name, tf, tfds  # noqa: F401
from msmgan_jax.data.sources import arrays_file, fashion_mnist_local, image_folder
from msmgan_jax.data.sources.base import SPLIT_ATTR
from msmgan_jax.errors import DataError  # noqa: F401 (data.DataError)

# The names other modules and tests read here, from the sources that own them now.
DEBIAN_FASHION_MNIST = fashion_mnist_local.DEBIAN_FASHION_MNIST
FASHION_MNIST_LABELS = fashion_mnist_local.FASHION_MNIST_LABELS
HOW_TO_GET = fashion_mnist_local.HOW_TO_GET
IDX_FILES = fashion_mnist_local.IDX_FILES
find_idx_dir = fashion_mnist_local.find_idx_dir
read_idx = fashion_mnist_local.read_idx
IMAGE_EXTENSIONS = image_folder.IMAGE_EXTENSIONS
NAME_MAX = image_folder.NAME_MAX
SPLIT_COPIES = image_folder.SPLIT_COPIES
SPLIT_PARTS = image_folder.SPLIT_PARTS
SPLIT_RULE = image_folder.SPLIT_RULE
is_arrays_file = arrays_file.claims

# Per-channel mean/std of the training split (on [0, 1] pixels).
STATS = {
    'fashion_mnist': ((0.2860,), (0.3530,)),
    'mnist': ((0.1307,), (0.3081,)),
    'cifar10': ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    'cifar100': ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
STATS_SAMPLE = 10000  # training images that computed normalisation stats come from.
DEVICE_MAX_BYTES = 1 << 30  # dataset.pipeline auto: training images up to this go on the device.
PIPELINES = ('auto', 'device', 'tfdata')


def __getattr__(name):
  """`FashionMnistLocal` (the builder class, made on first use) and `OWN_DATA` (what
  `dataset.name` may be, as the registered sources say it)."""
  if name == 'FashionMnistLocal':
    return fashion_mnist_local.builder_class()
  if name == 'OWN_DATA':
    return sources.own_data()
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def check_name(name) -> Optional[str]:
  """None when a data source claims `name` (a registered TFDS name, an existing folder, an
  arrays `.npz` file, or what a registered source reads), else what is wrong."""
  if sources.find(name) is not None:
    return None
  close = sources.suggest(str(name))
  hint = f' (did you mean {close!r}?)' if close else ''
  return (f'{name!r} is not one of the registered TFDS datasets nor an existing folder{hint}; '
          f'{sources.own_data()}')


def builder_for(cfg) -> tfds.core.DatasetBuilder:
  """A prepared TFDS builder for `cfg.name`: the first data source claiming it that gives
  one (see the module docstring for the order tried).

  Preparation holds a file lock in the data dir: processes started together (a sweep, the
  test suite) prepare a dataset once; the others wait, then read what it wrote.

  Raises:
    DataError: no source claims the name, `data_dir` is a file, the data cannot be
      prepared or read (the source says why and the fix), or the first claiming source
      reads it without TFDS (an arrays file: it has no builder).
  """
  problem = check_name(cfg.name)
  if problem:
    raise DataError(f'dataset.name {problem}')
  data_dir = cfg.get('data_dir') or None
  if data_dir and os.path.exists(data_dir) and not os.path.isdir(data_dir):
    raise DataError(f'dataset.data_dir {data_dir} is a file; give a directory (or leave it '
                    'empty for the TFDS default)')
  for source in sources.claiming(cfg.name):
    if source.arrays is not None:
      raise DataError(f'dataset.name {cfg.name} is {_noun(source)}, read without TensorFlow '
                      'by the device pipeline only: it has no TFDS builder')
    builder = source.build(cfg)
    if builder is not None:
      return builder
  names = [s.name for s in sources.claiming(cfg.name)]
  raise DataError(f'dataset.name {cfg.name!r}: the data sources claiming it ({names}) give no '
                  'data for it')


def _noun(source) -> str:
  return source.noun or f'data of the source {source.name}'


def split_record(builder) -> Optional[dict]:
  """The record of the split a source made of data it split itself (an unsplit image
  folder, see `sources.image_folder._split_folder`), for the builder `builder_for`
  returned for it; None for any other data."""
  return getattr(builder, SPLIT_ATTR, None)


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


def _read(builder, split: str, shard: tuple = (0, 1), shuffle_seed: Optional[int] = None,
          positions: bool = False) -> tf.data.Dataset:
  """Part `shard[0]` of `shard[1]` even parts of `split` (slicing allowed); the files of a
  prepared dataset are shuffled with `shuffle_seed` unless it is None; with `positions`,
  each example carries 'position', its position in `split`. Read as the builder's source
  reads it (`sources.reader`, `DataSource.read`)."""
  return sources.reader(builder)(builder, split, shard, shuffle_seed, positions)


def _preprocess(cfg, stats: tuple, train: bool, seed: int = 0, with_index: bool = False):
  """`fn(n, example)` making the n-th example of a stream (n seeds its augmentation) into
  {'image', 'label'} (and 'index', int32, its 'position', `with_index`)."""
  mean, std = (np.array(s, np.float32) for s in stats)

  def fn(index, ex):
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(
        tf.stack([tf.cast(seed, tf.int64), tf.cast(index, tf.int64)]), 2))
    image = recipe.tf_example(ex['image'], mean, std, cfg.crop_padding, cfg.flip, train,
                              crop_seed, flip_seed, cfg.image_size)
    out = {'image': image, 'label': tf.cast(ex['label'], tf.int32)}
    if with_index:
      out['index'] = tf.cast(ex['position'], tf.int32)
    return out
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
  key = {**sources.data_key(cfg, builder), 'split': cfg.train_split,
         'image_size': cfg.image_size, 'sample': STATS_SAMPLE}
  stats = cached(cfg, 'stats', key, lambda: _compute_stats(cfg, builder))
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


def to_arrays(cfg, builder: Optional[tfds.core.DatasetBuilder] = None) -> dict:
  """Both splits of `cfg` as NumPy arrays, in file order, with their normalisation, laid
  out as an arrays file holds them (`arrays.KEYS`, and `split`, the record of an unsplit
  image folder's split, where there is one). Images stay uint8 unless `image_size`
  resizes them (then float32 on [0, 1], as the tf.data pipeline sees them).

  `builder`: `builder_for(cfg)` where the caller already has it (then the source's notes on
  stderr, an image folder's skipped files and copies, are said once, not twice)."""
  builder = builder if builder is not None else builder_for(cfg)
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


def load(cfg, *, batch_size: int, eval_batch_size: int, mesh=None, with_index: bool = False):
  """Returns `(info, train_batches, eval_fn)`.

  `train_batches(seed, skip)` yields this host's share of each global batch of
  `batch_size` forever, the same sequence for the same seed (so a resumed run skips
  the batches it has seen): dicts of 'image' (B, H, W, C) float32, normalised and
  augmented, and 'label' (B,) int32; with `with_index`, also 'index' (B,) int32, each
  example's position in the training split (`dataset.train_split`, 0 .. num_train - 1),
  the example whose image and label it is, the same after a resume (without it the
  batches hold no 'index' and nothing compiled changes);
  `eval_fn()` yields padded eval batches with a `mask` over this host's test share.
  The pipeline is `dataset.pipeline`'s (see the module docstring).

  Raises:
    DataError: the data cannot be found, read or batched (the message says the fix).
  """
  mesh = mesh if mesh is not None else sharding.mesh()
  source = sources.find(cfg.name)
  if source is not None and source.arrays is not None:
    if cfg.pipeline == 'tfdata':
      raise DataError(f'{cfg.name} is {_noun(source)}, read only by the device pipeline; set '
                      'dataset.pipeline to auto or device')
    return _device(cfg, source.arrays(cfg), batch_size, eval_batch_size, mesh,
                   with_index=with_index)
  builder = builder_for(cfg)
  shape = image_shape(cfg, builder)
  num_train = num_examples(builder, cfg.train_split)
  pipeline = cfg.pipeline
  if pipeline == 'auto':
    pixel_bytes = num_train * int(np.prod(shape)) * (4 if cfg.image_size else 1)
    pipeline = 'device' if pixel_bytes <= DEVICE_MAX_BYTES else 'tfdata'
  if pipeline == 'device':
    return _device(cfg, to_arrays(cfg, builder), batch_size, eval_batch_size, mesh, sliced=True,
                   with_index=with_index)
  return _tfdata(cfg, builder, shape, num_train, batch_size, eval_batch_size, with_index)


def _device(cfg, arrays, batch_size, eval_batch_size, mesh, sliced=False, with_index=False):
  """The in-memory pipeline; `sliced`: the arrays already hold just the configured splits."""
  try:
    pipe = arrays_lib.DevicePipeline(
        arrays, cfg, batch_size=batch_size, eval_batch_size=eval_batch_size, mesh=mesh,
        train_split='train' if sliced else cfg.train_split,
        test_split='test' if sliced else cfg.test_split, with_index=with_index)
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


def _tfdata(cfg, builder, shape, num_train, batch_size, eval_batch_size, with_index=False):
  """The tf.data pipeline, the same global stream on any number of hosts: every host reads
  the split in one seeded order (files shuffled with the seed, a seeded shuffle buffer),
  numbers the examples of that stream, and keeps its own slice of each global batch
  (positions `process_index * B / hosts` on); only those are augmented, seeded by their
  number in the stream. So N hosts of D devices train the student one host of N x D
  devices trains. With `with_index`, each example's position in the split travels with it
  into 'index'."""
  stats = normalisation(cfg, builder)
  num_test = num_examples(builder, cfg.test_split)
  info = DatasetInfo(cfg.name, builder.info.features['label'].num_classes, shape,
                     num_train, num_test,
                     tuple(builder.info.features['label'].names), tuple(stats[0]),
                     tuple(stats[1]), split_record(builder))
  hosts, me = jax.process_count(), jax.process_index()
  per_host = batch_size // hosts
  per_host_eval = eval_batch_size // hosts

  def mine(size, part):
    """Keeps this host's slice of every global batch of `size` in an enumerated stream."""
    return lambda n, ex: tf.equal((n % size) // part, me)

  def train_batches(seed: int, skip: int = 0) -> Iterator[dict]:
    """This host's training batches for `seed`, deterministic, after skipping `skip` of them."""
    ds = _read(builder, cfg.train_split, shuffle_seed=seed, positions=with_index)
    ds = ds.cache().repeat().shuffle(cfg.shuffle_buffer, seed=seed).enumerate()
    if hosts > 1:
      ds = ds.filter(mine(batch_size, per_host))
    ds = ds.map(_preprocess(cfg, stats, True, seed, with_index),
                num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(per_host, drop_remainder=True).skip(skip).prefetch(tf.data.AUTOTUNE)
    return iter(tfds.as_numpy(ds))

  eval_ds = _read(builder, cfg.test_split).enumerate()
  if hosts > 1:
    eval_ds = eval_ds.filter(mine(eval_batch_size, per_host_eval))
  eval_ds = eval_ds.map(_preprocess(cfg, stats, False), num_parallel_calls=tf.data.AUTOTUNE).cache()
  num_eval_batches = -(-num_test // eval_batch_size)

  def eval_fn() -> Iterator[dict]:
    """This host's slice of every global eval batch; where the last global batch leaves it
    nothing, an all-masked batch, so every host runs the same number of eval steps."""
    made = 0
    for batch in tfds.as_numpy(eval_ds.batch(per_host_eval).prefetch(tf.data.AUTOTUNE)):
      made += 1
      yield pad_batch(batch, per_host_eval)
    for _ in range(num_eval_batches - made):
      empty = {'image': np.zeros((0,) + tuple(shape), np.float32), 'label': np.zeros(0, np.int32)}
      yield pad_batch(empty, per_host_eval)
  return info, train_batches, eval_fn


def pad_batch(batch: dict, size: int) -> dict:
  """Pads a batch to `size` examples with zeros and adds a 0/1 `mask`."""
  n = len(batch['label'])
  out = {k: np.concatenate([v, np.zeros((size - n,) + v.shape[1:], v.dtype)])
         for k, v in batch.items()}
  out['mask'] = (np.arange(size) < n).astype(np.float32)
  return out
