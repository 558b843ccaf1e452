"""Data sources `tfds` and `tfds_dir`: TFDS's registered datasets and prepared dataset dirs.

`tfds` claims a registered TFDS name (`fashion_mnist`, `mnist`, `cifar10`, `svhn_cropped`,
...; optionally with /config and :version) and builds it in the TFDS data dir, downloading
it where TFDS can (one process prepares it, under a lock; offline, a DataError at once
instead of TFDS's minutes of retries). `tfds_dir` claims a folder holding a prepared TFDS
dataset (its dataset_info.json) and reads it as it is.

`read` is how both pipelines read a TFDS builder's split: even per-host parts, files
shuffled with a seed, and on request each example's position in the split (from TFDS's
`tfds_id`, its file and its index there, and the order TFDS reads the files in).
"""
import difflib
import os
import socket
import urllib.parse
from typing import Optional

import numpy as np

from msmgan_jax.data.common import canonical_name, prepare_lock, registered, tf, tfds
from msmgan_jax.data.sources.base import DataSource
from msmgan_jax.data.sources.fashion_mnist_local import HOW_TO_GET
from msmgan_jax.errors import DataError


def download_hosts_resolve(builder) -> bool:
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


def build(cfg):
  """The prepared TFDS builder of the registered name `cfg.name`, prepared here (under the
  data dir's lock) when it is not yet; DataError (with how to get it) when it cannot be."""
  data_dir = cfg.get('data_dir') or None
  name = canonical_name(cfg.name)  # 'Fashion_MNIST', 'FashionMNIST' -> 'fashion_mnist'.
  builder = tfds.builder(name, data_dir=data_dir)
  if builder.is_prepared():  # no lock: the data dir may be read-only.
    return builder
  with prepare_lock(data_dir, name):
    builder = tfds.builder(name, data_dir=data_dir)
    if builder.is_prepared():
      return builder
    if not download_hosts_resolve(builder):
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


def suggest(name: str) -> Optional[str]:
  """The registered TFDS name closest to a mistyped `name` (not a path), if any is close."""
  if os.sep in name:
    return None
  close = difflib.get_close_matches(
      name, tfds.list_builders(with_community_datasets=False), n=1, cutoff=0.5)
  return close[0] if close else None


def _folder(name: str) -> str:
  return os.path.abspath(os.path.expanduser(name))


def claims_directory(name: str) -> bool:
  """Whether `name` is a folder holding a prepared TFDS dataset (its dataset_info.json)."""
  return os.path.isfile(os.path.join(_folder(name), 'dataset_info.json'))


def build_directory(cfg):
  """The TFDS builder of the prepared dataset folder `cfg.name`; DataError when TFDS cannot
  read its metadata."""
  folder = _folder(cfg.name)
  try:
    return tfds.builder_from_directory(folder)
  except Exception as e:  # TFDS raises many types for damaged metadata.
    raise DataError(f'{folder} holds a dataset_info.json that TFDS cannot read '
                    f'({type(e).__name__}: {str(e)[:200]}); prepare the dataset again') from e


def read(builder, split: str, shard: tuple = (0, 1), shuffle_seed: Optional[int] = None,
         positions: bool = False):
  """Part `shard[0]` of `shard[1]` even parts of `split` (slicing allowed) as a
  tf.data.Dataset of example dicts; the files of the dataset are shuffled with
  `shuffle_seed` unless it is None. With `positions`, each example also carries
  'position' (int64): its position in `split` in the order `read` gives with no shuffle
  and one part (`_position_table`), whatever part and file order it comes in."""
  index, count = shard
  ds = builder.as_dataset(split=tfds.even_splits(split, n=count)[index],
                          shuffle_files=shuffle_seed is not None,
                          read_config=tfds.ReadConfig(shuffle_seed=shuffle_seed,
                                                      add_tfds_id=positions))
  if not positions:
    return ds
  files, starts, flat = _position_table(builder, split)
  table = tf.lookup.StaticHashTable(
      tf.lookup.KeyValueTensorInitializer(tf.constant(files), tf.constant(starts, tf.int64)), -1)
  flat = tf.constant(flat, tf.int64)

  def with_position(ex):
    tfds_id = ex.pop('tfds_id')  # '{file name}__{index in the file}'.
    file = tf.strings.regex_replace(tfds_id, '__[0-9]+$', '')
    index_in_file = tf.strings.to_number(tf.strings.regex_replace(tfds_id, '^.*__', ''), tf.int64)
    return {**ex, 'position': tf.gather(flat, table.lookup(file) + index_in_file)}
  return ds.map(with_position, num_parallel_calls=tf.data.AUTOTUNE)


def _position_table(builder, split: str) -> tuple:
  """([file name as tfds_id names it], [start per file], flat positions): the position in
  `split` of example j of file f (j counted from the file's start, as tfds_id counts) is
  `flat[start[f] + j]`.

  Positions count the order TFDS reads the split in without shuffling: its files (the
  split's file instructions, each a skip and a take) interleaved `cycle` at a time in
  blocks of `block` examples, as TFDS's reader does (one file at a time for a dataset
  written in order). That order is found by running the same interleave over the files'
  example numbers alone: no data is read.
  """
  instructions = builder.info.splits[split].file_instructions
  files = [os.path.basename(i.filename) for i in instructions]
  if len(set(files)) != len(files):
    raise DataError(f'split {split!r} of {builder.name} reads two files of one name; its '
                    'example positions cannot be told apart')
  takes = np.array([i.take for i in instructions], np.int64)
  read_config = tfds.ReadConfig()
  cycle = read_config.interleave_cycle_length
  if not isinstance(cycle, int):  # TFDS's default, as its reader picks it.
    cycle = 1 if builder.info.disable_shuffling else 16
  order = tf.data.Dataset.from_tensor_slices((np.arange(len(files)), takes)).interleave(
      lambda f, n: tf.data.Dataset.range(n).map(lambda j: (f, j)), cycle_length=cycle,
      block_length=read_config.interleave_block_length)
  offsets = np.concatenate([[0], np.cumsum(takes)[:-1]])
  flat, position = np.zeros(int(takes.sum()), np.int64), 0
  for f, j in order.batch(1 << 16).as_numpy_iterator():
    flat[offsets[f] + j] = np.arange(position, position + len(f))
    position += len(f)
  starts = offsets - np.array([i.skip for i in instructions], np.int64)
  return files, starts.tolist(), flat


NAMES = DataSource('tfds', registered, says='a registered TFDS name', build=build,
                   suggest=suggest, read=read)
DIRECTORY = DataSource(
    'tfds_dir', claims_directory, build=build_directory, read=read,
    says='a prepared TFDS dataset directory (holding dataset_info.json)')
