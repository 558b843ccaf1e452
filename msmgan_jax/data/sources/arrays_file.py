"""Data source `arrays_file`: an `.npz` file written by `python -m msmgan_jax.arrays`.

It claims a `dataset.name` that is an existing `.npz` file and reads it with NumPy alone
(`data.arrays.read`): no TensorFlow, so a machine without it (a lent GPU box) trains from
one. Only the device pipeline reads it.
"""
import os

from msmgan_jax.data import arrays as arrays_lib
from msmgan_jax.data.sources.base import DataSource
from msmgan_jax.errors import DataError


def claims(name: str) -> bool:
  """Whether `name` names an existing `.npz` file (see `msmgan_jax.arrays`)."""
  return name.endswith('.npz') and os.path.isfile(os.path.expanduser(name))


def read(cfg) -> dict:
  """The arrays of the file `cfg.name` (`data.arrays.read`); DataError when it is none."""
  try:
    return arrays_lib.read(cfg.name)
  except arrays_lib.ArrayError as e:
    raise DataError(str(e)) from e


SOURCE = DataSource('arrays_file', claims, arrays=read, noun='an arrays file',
                    says='an .npz file written by python -m msmgan_jax.arrays')
