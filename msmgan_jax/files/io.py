"""Atomic writes of a run's files, and JSON reads that refuse damaged files plainly.

Light to import (no JAX until a write asks which process this is), so that the commands
that read and tabulate results (`report`, `compare --help`) answer at once.
"""
import json
import os
from typing import Any, Optional

from msmgan_jax.errors import ConfigError, WriteError


def write_text(path: str, text: str) -> None:
  """Writes `text` atomically: a reader sees the old file or the whole new one, never a part
  (temp file, fsync, rename, fsync of the directory). On process 0 only."""
  import jax  # pylint: disable=g-import-not-at-top (JAX loads only when a file is written)
  if jax.process_index() != 0:
    return
  tmp = f'{path}.tmp{os.getpid()}'
  try:
    with open(tmp, 'w') as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
      os.fsync(fd)
    finally:
      os.close(fd)
  except OSError as e:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise WriteError(e.errno, f'could not write {path} ({e.strerror or e}); '
                     'the previous version, if any, is intact') from e


def write_json(path: str, obj) -> None:
  """Writes `obj` as indented JSON atomically (see `write_text`)."""
  write_text(path, json.dumps(obj, indent=2, sort_keys=False) + '\n')


def read_json(path: str) -> Optional[Any]:
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def read_json_or_refuse(path: str, fix: str):
  """The JSON in `path` (None if there is no file); ConfigError saying `fix` if damaged."""
  try:
    return read_json(path)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ConfigError(f'{path} is not valid JSON ({e}); {fix}') from e


def read_text(path: str) -> str:
  """The text in `path`, or '' when it cannot be read."""
  try:
    with open(path) as f:
      return f.read()
  except OSError:
    return ''
