"""The workdir contract: one run's folder (config.json, metrics.jsonl, checkpoints/,
summary.json), its lock, and the rule for when a config is the same run."""
import json
import os
import re
import shutil
import socket

import filelock
import jax
import ml_collections
import numpy as np

from msmgan_jax import config as config_lib
from msmgan_jax.methods import registry
from msmgan_jax.errors import ConfigError, WorkdirBusy
from msmgan_jax.files import io, metrics


class Workdir:
  """The files of one run: config.json, metrics.jsonl, checkpoints/, summary.json.

  `claim` takes an exclusive lock (`.lock`, an flock the kernel drops when the process
  dies, so a killed run never leaves it stuck) for as long as this process runs.
  """
  LOCK, OWNER = '.lock', '.owner'  # the lock, and who holds it (pid on host).

  def __init__(self, path: str):
    self.path = path
    self.metrics = metrics.MetricsWriter(path)
    self._lock = None

  def file(self, *parts) -> str:
    return os.path.join(self.path, *parts)

  def claim(self, cfg: ml_collections.ConfigDict, overwrite: bool = False) -> None:
    """Locks the workdir and writes config.json, or checks that the one there is this config
    (then the run resumes). With `overwrite`, a run of ours there is deleted first.

    Refused (ConfigError, nothing written): a file, a non-empty folder that is not a run
    of ours, a run of another config (unless `overwrite`), a workdir another process holds.
    Process 0 decides and writes; the other processes follow its decision.
    """
    refused = None
    if jax.process_index() == 0:
      try:
        self._claim(json.loads(cfg.to_json()), overwrite)
      except ConfigError as e:
        refused = e
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      ok = int(multihost_utils.broadcast_one_to_all(np.int32(refused is None)))
      if not ok and refused is None:
        raise ConfigError(f'process 0 refused workdir {self.path}; see its message')
    if refused is not None:
      raise refused

  def _claim(self, mine: dict, overwrite: bool) -> None:
    if os.path.exists(self.path) and not os.path.isdir(self.path):
      raise ConfigError(f'workdir {self.path} is a file; pick a directory')
    old = self.read_config()
    if old is None and os.path.isdir(self.path) and self._contents():
      raise ConfigError(
          f'workdir {self.path} is not empty and holds no config.json: it is not a run '
          'of ours. Pick a new or empty --workdir.')
    if old is not None and not same_run(old, mine) and not overwrite:
      diff = differing_fields(old, mine)
      raise ConfigError(
          f'workdir {self.path} holds a run with another config (fields differ: '
          f'{", ".join(diff[:8])}). Use a new --workdir, rerun with the same config to '
          'resume, or add --overwrite to delete that run and start this one.')
    self._acquire()
    for name in set(os.listdir(self.path)) - set(self._contents()) - {self.LOCK, self.OWNER}:
      os.remove(self.file(name))  # a temporary file of a write that was killed.
    if old is not None and overwrite:
      # summary.json first (the run stops being finished), config.json last (until then a
      # killed deletion still leaves a run of ours, which --overwrite can delete again).
      names = sorted(self._contents(), key=lambda n: (n != 'summary.json', n == 'config.json'))
      for name in names:
        target = self.file(name)
        shutil.rmtree(target) if os.path.isdir(target) else os.remove(target)
      old = None
    if old is None:
      io.write_json(self.file('config.json'), mine)

  def _contents(self) -> list:
    """What is in the workdir, less our lock files and the temp files of killed writes."""
    return [n for n in os.listdir(self.path) if n not in (self.LOCK, self.OWNER)
            and not re.fullmatch(r'.+\.tmp\d+', n)]

  def read_config(self):
    """The config of the run here as the schema has it now, so older runs still resume:
    fields that moved since it started read where they went, fields added since filled in
    with the value that reproduces the run where one was recorded, else with their defaults
    (`methods.registry.migrate`); None when there is none.

    A config.json that is not one of ours (not a mapping of our fields, without method,
    dataset, teacher and student) is refused: the folder is not a run to resume or delete.
    """
    old = io.read_json_or_refuse(self.file('config.json'), 'this workdir was damaged outside a '
                               'run. Move it away or pick a new --workdir.')
    if old is None:
      return None
    schema = json.loads(config_lib.defaults().to_json())
    if not (isinstance(old, dict) and {'method', 'dataset', 'teacher', 'student'}
            <= set(registry.migrate(old)) <= set(schema)):
      raise ConfigError(
          f'{self.file("config.json")} is not the config of a msmgan_jax run: {self.path} is '
          'not a run of ours (and --overwrite will not delete it). Pick another --workdir.')
    return as_schema_now(old)

  def _acquire(self) -> None:
    """Takes the workdir lock without waiting; WorkdirBusy if another process holds it."""
    try:
      os.makedirs(self.path, exist_ok=True)
      lock = filelock.FileLock(self.file(self.LOCK), timeout=0)
      lock.acquire()
    except filelock.Timeout:
      holder = io.read_text(self.file(self.OWNER)).strip() or 'unknown'
      raise WorkdirBusy(
          f'workdir {self.path} is in use by another run (process {holder}); wait for it to '
          'finish or stop it, or use another --workdir') from None
    except OSError as e:
      raise ConfigError(
          f'workdir {self.path} cannot be written ({e.strerror or e}); pick a writable '
          '--workdir') from e
    self._lock = lock
    io.write_text(self.file(self.OWNER), f'{os.getpid()} on {socket.gethostname()}\n')

  def release(self) -> None:
    if self._lock is not None:
      self._lock.release()
      self._lock = None


def as_schema_now(recorded: dict) -> dict:
  """A config dict recorded by an earlier version (a config.json, or a comparison's base),
  as `Workdir.read_config` reads it: fields moved and added since filled in as those runs
  trained, the rest with today's defaults."""
  return _with_defaults(registry.migrate(recorded),
                        json.loads(config_lib.defaults().to_json()))


def not_the_teachers() -> tuple:
  """The groups a teacher-only run (method 'teacher') does not read: a change to them (say, a
  new student default) leaves the teacher run the same run, resumable and reusable. The
  student's, and every method's own (`methods.registry.GROUPS`)."""
  return ('student',) + tuple(registry.GROUPS)


def _what_trains(cfg: dict) -> dict:
  """The part of a config.json that decides what its run trains (all of it but, for a
  teacher-only run, the student's and every method's groups)."""
  if cfg.get('method') != 'teacher':
    return cfg
  return {k: v for k, v in cfg.items() if k not in not_the_teachers()}


def differing_fields(old: dict, mine: dict) -> list:
  """The dotted fields in which two config.json dicts train different runs, sorted. When
  one is a teacher-only run and the other not, `method` and the fields a teacher reads:
  not every student and method group the teacher-only run never had a say in."""
  if (old.get('method') == 'teacher') != (mine.get('method') == 'teacher'):
    as_teacher = lambda c: _what_trains({**c, 'method': 'teacher'})
    return sorted(set(config_diff(as_teacher(old), as_teacher(mine))) | {'method'})
  return sorted(config_diff(_what_trains(old), _what_trains(mine)))


def same_run(a: dict, b: dict) -> bool:
  """Whether two config.json dicts train the same run (see `_what_trains`)."""
  return _what_trains(a) == _what_trains(b)


def _with_defaults(old: dict, defaults: dict) -> dict:
  """`old` with the fields it lacks taken from `defaults` (recursively)."""
  out = dict(defaults)
  for k, v in old.items():
    out[k] = _with_defaults(v, defaults[k]) if isinstance(v, dict) and isinstance(
        defaults.get(k), dict) else v
  return out


def config_diff(a: dict, b: dict, prefix: str = ''):
  """The dotted names of the fields whose values differ between config dicts `a` and `b`."""
  for k in set(a) | set(b):
    va, vb = a.get(k), b.get(k)
    if isinstance(va, dict) and isinstance(vb, dict):
      yield from config_diff(va, vb, f'{prefix}{k}.')
    elif va != vb:
      yield f'{prefix}{k}'
