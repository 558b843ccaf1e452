"""Data sources: what `dataset.name` may be, each source one module, behind one registry.

| source (module) | claims `dataset.name` | gives |
|---|---|---|
| `arrays_file` | an `.npz` file of `python -m msmgan_jax.arrays` | NumPy arrays |
| `fashion_mnist_local` | fashion_mnist (dataset.source auto, local) | a TFDS builder (IDX) |
| `tfds` (`tfds_source`) | a registered TFDS name | a TFDS builder |
| `tfds_dir` (`tfds_source`) | a folder holding dataset_info.json | a TFDS builder |
| `image_folder` | another folder: `DIR/{train,test}/CLASS/*.png`, `DIR/CLASS/*.png` | TFDS builder |

`datasets.load` asks the sources for the first one claiming the name: one read without
TFDS (`arrays`) gives its arrays to the device pipeline; otherwise the first claiming
source that gives a TFDS builder serves (a source may pass: `fashion_mnist_local` without
the IDX files leaves fashion_mnist to `tfds`). Sources read without TFDS are asked first,
then the others, each in the order of `SOURCES`.
A new source is one module defining a `base.DataSource` and calling `register` (it is
then asked first of its kind); `docs/extending.md` shows one.
"""
import os
from typing import Callable, Iterator, Optional

from msmgan_jax.data.sources import arrays_file, fashion_mnist_local, image_folder, tfds_source
from msmgan_jax.data.sources.base import DataSource, require  # noqa: F401

# name -> source: the order error texts list them in and (within each kind, see `_asked`)
# the order they are asked in.
SOURCES = {s.name: s for s in (fashion_mnist_local.SOURCE, tfds_source.NAMES,
                               tfds_source.DIRECTORY, image_folder.SOURCE, arrays_file.SOURCE)}


def register(source: DataSource) -> DataSource:
  """Adds `source` ahead of the sources registered before (so a source claiming folders of
  its own kind wins over `image_folder`, which takes any folder); a source of a name
  already registered is replaced (and moves ahead). Returns `source`.

  Raises:
    TypeError: `source` is not a `DataSource`.
  """
  if not isinstance(source, DataSource):
    raise TypeError(f'register takes a sources.DataSource, not {type(source).__name__}')
  rest = [(k, s) for k, s in SOURCES.items() if k != source.name]
  SOURCES.clear()
  SOURCES[source.name] = source
  SOURCES.update(rest)
  return source


def _asked() -> list:
  """The sources in the order they are asked: those read without TFDS first (their
  `claims` import no TensorFlow, so a machine without it reads them), then the others,
  each kind in the order of `SOURCES`."""
  return ([s for s in SOURCES.values() if s.arrays is not None]
          + [s for s in SOURCES.values() if s.arrays is None])


def claiming(name) -> Iterator[DataSource]:
  """The sources claiming `dataset.name` `name`, lazily, in the order they are asked
  (none for a name that is no string)."""
  if isinstance(name, str):
    yield from (s for s in _asked() if s.claims(name))


def find(name) -> Optional[DataSource]:
  """The first source claiming `dataset.name` `name` (see `claiming`), or None."""
  return next(claiming(name), None)


def own_data() -> str:
  """What `dataset.name` may be, for error messages: 'give A, B, ..., or Z'."""
  says = [s.says for s in SOURCES.values() if s.says]
  return 'give ' + (', '.join(says[:-1]) + ', or ' if len(says) > 1 else '') + says[-1]


def suggest(name: str) -> Optional[str]:
  """The first close name a source suggests for a mistyped `name`, or None."""
  for s in SOURCES.values():
    close = s.suggest(name) if s.suggest else None
    if close:
      return close
  return None


def check(dataset) -> None:
  """Every source's config checks of the dataset group (`config.validate`); ConfigError."""
  for s in SOURCES.values():
    if s.check is not None:
      s.check(dataset)


def _owner(builder) -> Optional[DataSource]:
  return next((s for s in SOURCES.values() if s.owns is not None and s.owns(builder)), None)


def reader(builder) -> Callable:
  """How to read `builder`'s splits (`DataSource.read`): its source's own, else TFDS's."""
  owner = _owner(builder)
  return owner.read if owner is not None and owner.read else tfds_source.read


def data_key(cfg, builder) -> dict:
  """What names `builder`'s data in the stats cache (`DataSource.data_key`): its source's,
  else the TFDS dataset's full name and folder."""
  owner = _owner(builder)
  if owner is not None and owner.data_key:
    return owner.data_key(cfg, builder)
  return {'dataset': builder.info.full_name, 'dir': os.path.abspath(builder.data_dir)}
