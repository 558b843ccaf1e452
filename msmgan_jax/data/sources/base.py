"""What a data source is: the record each source module fills in and the registry keeps.

A source claims values of `dataset.name` (a TFDS name, a folder, a file) and either builds
a prepared TFDS builder for them (`build`: both pipelines read it) or reads them into
NumPy arrays (`arrays`: the device pipeline holds them). Everything else is optional: its
config checks, a suggestion for a mistyped name, and, for builders that TFDS's
`as_dataset` does not read as the pipelines need, its own `read` and cache key.
"""
import dataclasses
from typing import Callable, Optional

from msmgan_jax.errors import ConfigError

# The attribute a source sets on a builder it made from data it split itself (an unsplit
# image folder): the split's record (`datasets.split_record`).
SPLIT_ATTR = 'msmgan_split'


@dataclasses.dataclass(frozen=True)
class DataSource:
  """One data source (see the module docstring); registered with `sources.register`.

  Attributes:
    name: the registry's key ('tfds', 'image_folder', ...).
    claims: `claims(dataset_name: str) -> bool`, cheap and without side effects: whether
      this source reads that `dataset.name` (`datasets.check_name` accepts a name some
      source claims). Sources are asked in the registry's order; the first claiming one
      that gives data wins.
    says: how the list of what `dataset.name` may be names it ('a registered TFDS name');
      '' leaves it out (a source for names another one already covers).
    noun: what an error calls one of its datasets ('an arrays file').
    build: `build(dataset_cfg) -> tfds.core.DatasetBuilder | None`, a prepared builder (the
      pipelines read its `train_split` and `test_split`), or None to leave the name to the
      next claiming source. Raises DataError saying what is wrong and the fix.
    arrays: `arrays(dataset_cfg) -> dict`, for a source read without TFDS: the whole
      splits as an arrays file holds them (`data.arrays.KEYS` but `format`: uint8 or
      float32 [0, 1] NHWC `train_images`/`test_images`, int `*_labels`, per-channel `mean`
      and `std` on [0, 1] pixels, `num_classes`, `name`; optionally `class_names`); the
      device pipeline slices `train_split`/`test_split` out of them. Raises DataError.
    check: `check(dataset_cfg) -> None`, run by `config.validate` on every config whatever
      its data: ConfigError ('config field dataset.X: ...', see `require`) for a wrong
      field this source reads.
    suggest: `suggest(dataset_name) -> str | None`, a name it claims close to a mistyped one.
    owns: `owns(builder) -> bool`, whether a builder is one of this source's that needs
      its own `read` and `data_key` (TFDS's own reading serves the others).
    read: `read(builder, split, shard=(0, 1), shuffle_seed=None, positions=False) ->
      tf.data.Dataset` of part `shard[0]` of `shard[1]` even parts of `split` (a TFDS split
      spec, slicing allowed), each example a dict with 'image' and 'label' (and, with
      `positions`, 'position', int64: the example's position in `split`, 0 .. examples - 1,
      in the order one part read without shuffling gives), its files shuffled with
      `shuffle_seed` unless None.
    data_key: `data_key(dataset_cfg, builder) -> dict`, what names the data in the
      normalisation stats' cache key (changes when the data does).
  """
  name: str
  claims: Callable[[str], bool]
  says: str = ''
  noun: str = ''
  build: Optional[Callable] = None
  arrays: Optional[Callable] = None
  check: Optional[Callable] = None
  suggest: Optional[Callable] = None
  owns: Optional[Callable] = None
  read: Optional[Callable] = None
  data_key: Optional[Callable] = None

  def __post_init__(self):
    if (self.build is None) == (self.arrays is None):
      raise ValueError(f'data source {self.name!r} needs exactly one of build (a TFDS '
                       'builder) and arrays (NumPy arrays)')


def require(ok: bool, field: str, msg: str) -> None:
  """Raises ConfigError('config field {field}: {msg}') unless `ok` (for `DataSource.check`)."""
  if not ok:
    raise ConfigError(f'config field {field}: {msg}')
