"""Loop utilities the trainers share: the classifier and eval steps, the training loop
(logging, checkpoints, stop requests, progress bars) and the workdir contract.

The whole job (teacher, then student) is orchestrated by `train.train_and_evaluate`; this
module imports neither trainer, so `teacher` and `student` build on it without a cycle.
"""
import json
import os
import re
import shutil
import socket
import time
from typing import Callable

import filelock
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm

from msmgan_jax import config as config_lib
from msmgan_jax import faults, losses, utils


def make_classifier_step(model) -> Callable:
  """A jitted CE step `(state, batch) -> (state, metrics)` training every parameter."""
  def step(state, batch):
    def loss_fn(params):
      (logits, _), new = model.apply({'params': params, 'batch_stats': state.batch_stats},
                                     batch['image'], train=True, mutable=['batch_stats'])
      return losses.cross_entropy(logits, batch['label']), (logits, new['batch_stats'])
    (loss, (logits, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    state = state.apply_gradients(grads=grads, batch_stats=stats)
    return state, {'loss': loss, 'accuracy': jnp.mean(jnp.argmax(logits, -1) == batch['label'])}
  return jax.jit(step, donate_argnums=0)


def make_eval_step(model) -> Callable:
  """A jitted step summing correct predictions, loss and examples over a masked batch."""
  def step(variables, batch):
    logits, _ = model.apply(variables, batch['image'], train=False)
    m = batch['mask']
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch['label'])
    return {'correct': jnp.sum((jnp.argmax(logits, -1) == batch['label']) * m),
            'loss': jnp.sum(loss * m), 'count': jnp.sum(m)}
  return jax.jit(step)


def progress(**kwargs) -> tqdm.tqdm:
  """A tqdm bar with rate and ETA on a terminal (process 0), silent otherwise."""
  return tqdm.tqdm(**kwargs, dynamic_ncols=True,
                   disable=None if jax.process_index() == 0 else True)


def evaluate(eval_step, variables, eval_batches, mesh) -> dict:
  """Test accuracy and loss over every example of the eval split, each counted once.

  With several seeds' variables stacked (an `eval_step` mapped over them), accuracy and
  loss are lists, one value per seed.
  """
  totals = None
  for batch in progress(iterable=eval_batches(), desc='evaluating', unit='batch', leave=False):
    out = eval_step(variables, utils.shard_batch(batch, mesh))
    totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
    faults.point('eval')
  totals = jax.device_get(totals)
  n = np.asarray(totals['count'], np.float64)
  per_seed = lambda a: (np.asarray(a, np.float64) / n).tolist()
  return {'accuracy': per_seed(totals['correct']), 'loss': per_seed(totals['loss']),
          'count': int(np.max(n))}


def train_loop(states, step_fn, *, batches, start: int, stop: int, mesh, batch_size: int,
               log_every: int, log: Callable, after_step: Callable, save: Callable,
               save_at: Callable, where: str, window=(), epoch_steps: int = 0):
  """Runs `step_fn` for steps start..stop-1; returns (states, seconds of the first step).

  The first step includes compilation, so it is timed apart (one device sync). Every
  `log_every` steps (and at the end) `log(step, means)` gets the mean metrics of the steps
  since the last log and the throughput. Then, steps counted from 1, `after_step(step,
  states)` evaluates (or not) and `save(step, states, window)` checkpoints where
  `save_at(step)` says; `window` (the metrics of the steps since the last log, as floats)
  goes into the checkpoint, and a resumed run passes it back, so its logs are the ones an
  uninterrupted run writes.

  A progress bar (a terminal only) counts the steps of `where`, one bar per epoch of
  `epoch_steps` steps when that is given, and shows the last logged loss.

  Faults: a NaN or inf metric raises `faults.NumericalError` naming `where`, the step and
  the metric; metrics are checked before anything is saved, so no checkpoint holds a
  diverged state. A SIGTERM / SIGINT (under `faults.graceful_stop`) saves at the next
  step boundary and raises `faults.Interrupted`.
  """
  done, pending, t0, first_step_s, timed = list(window), [], time.time(), 0.0, 0
  bar = None
  try:
    for step in range(start, stop):
      if bar is None:
        bar = _step_bar(where, step, stop, epoch_steps)
      states, metrics = step_fn(states, utils.shard_batch(next(batches), mesh))
      bar.update()
      faults.point('step')
      if step == start:
        jax.block_until_ready(metrics)
        first_step_s = time.time() - t0
      pending.append(metrics)
      timed += 1
      logging_now = (step + 1) % log_every == 0 or step + 1 == stop
      signum = faults.stop_requested()
      if jax.process_count() > 1:  # every host must stop (and save) at the same step.
        signum = _agreed(signum) if logging_now or save_at(step + 1) else None
      saving = save_at(step + 1) or signum is not None
      if logging_now or saving:  # floats, or lists of one float per seed.
        host = [{k: np.asarray(v, np.float64).tolist() for k, v in m.items()}
                for m in jax.device_get(pending)]
        _check_finite(host, step + 1 - len(host), where)
        done, pending = done + host, []
      if logging_now:
        means = {k: np.mean([m[k] for m in done], axis=0).tolist() for k in done[0]}
        means['images_per_s'] = timed * batch_size / (time.time() - t0)
        log(step + 1, means)
        bar.set_postfix({k: f'{np.mean(v):.4g}' for k, v in means.items()
                         if k in ('loss', 'g_loss', 'accuracy')}, refresh=False)
        done, t0, timed = [], time.time(), 0
      if step + 1 == stop or (epoch_steps and (step + 1) % epoch_steps == 0):
        bar.close()  # before after_step prints its evaluation line.
        bar = None
      states = after_step(step + 1, states)
      if saving:
        save(step + 1, states, done)
      if signum is not None:
        raise faults.Interrupted(signum, f'{where} at step {step + 1}')
  finally:
    if bar is not None:
      bar.close()
  return states, first_step_s


def _agreed(signum):
  """The stop request of any host (the largest signal number), the same on every host."""
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  agreed = int(np.max(multihost_utils.process_allgather(np.int32(signum or 0))))
  return agreed or None


def _step_bar(where: str, step: int, stop: int, epoch_steps: int) -> tqdm.tqdm:
  """The bar from `step` on: of the whole loop, or of the epoch `step` is in."""
  if not epoch_steps:
    return progress(total=stop, initial=step, desc=where, unit='step')
  epoch = step // epoch_steps
  return progress(total=min(epoch_steps, stop - epoch * epoch_steps),
                  initial=step - epoch * epoch_steps, unit='step',
                  desc=f'{where} epoch {epoch + 1}/{-(-stop // epoch_steps)}')


def _check_finite(host_metrics: list, first_step: int, where: str) -> None:
  """Raises NumericalError naming the first step (counted from 1) with a NaN / inf metric."""
  for i, m in enumerate(host_metrics):
    bad = {k: v for k, v in m.items() if not np.all(np.isfinite(v))}
    if bad:
      raise faults.NumericalError(
          f'non-finite training loss in {where} at step {first_step + i + 1}: '
          f'{", ".join(f"{k}={v}" for k, v in sorted(bad.items()))}. The last checkpoint '
          'before it is kept. Lower the learning rate (or check the data), then rerun with '
          '--overwrite or in a new --workdir.')


class WorkdirBusy(config_lib.ConfigError):
  """Another live process holds the workdir."""


class Workdir:
  """The files of one run: config.json, metrics.jsonl, checkpoints/, summary.json.

  `claim` takes an exclusive lock (`.lock`, an flock the kernel drops when the process
  dies, so a killed run never leaves it stuck) for as long as this process runs.
  """
  LOCK, OWNER = '.lock', '.owner'  # the lock, and who holds it (pid on host).

  def __init__(self, path: str):
    self.path = path
    self.metrics = utils.MetricsWriter(path)
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
      except config_lib.ConfigError as e:
        refused = e
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      ok = int(multihost_utils.broadcast_one_to_all(np.int32(refused is None)))
      if not ok and refused is None:
        raise config_lib.ConfigError(f'process 0 refused workdir {self.path}; see its message')
    if refused is not None:
      raise refused

  def _claim(self, mine: dict, overwrite: bool) -> None:
    if os.path.exists(self.path) and not os.path.isdir(self.path):
      raise config_lib.ConfigError(f'workdir {self.path} is a file; pick a directory')
    old = self.read_config()
    if old is None and os.path.isdir(self.path) and self._contents():
      raise config_lib.ConfigError(
          f'workdir {self.path} is not empty and holds no config.json: it is not a run '
          'of ours. Pick a new or empty --workdir.')
    if old is not None and not same_run(old, mine) and not overwrite:
      diff = sorted(_diff(_what_trains(old), _what_trains(mine)))
      raise config_lib.ConfigError(
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
      utils.write_json(self.file('config.json'), mine)

  def _contents(self) -> list:
    """What is in the workdir, less our lock files and the temp files of killed writes."""
    return [n for n in os.listdir(self.path) if n not in (self.LOCK, self.OWNER)
            and not re.fullmatch(r'.+\.tmp\d+', n)]

  def read_config(self):
    """The config of the run here, fields added to the schema since it started filled in
    (so older runs still resume): with the value that reproduces the run when
    `config.BEFORE_ADDED` names one, else with their defaults; None when there is none.

    A config.json that is not one of ours (not a mapping of our fields, without method,
    dataset, teacher and student) is refused: the folder is not a run to resume or delete.
    """
    old = _read_json_or_refuse(self.file('config.json'), 'this workdir was damaged outside a '
                               'run. Move it away or pick a new --workdir.')
    if old is None:
      return None
    schema = json.loads(config_lib.defaults().to_json())
    if not (isinstance(old, dict) and {'method', 'dataset', 'teacher', 'student'} <= set(old)
            <= set(schema)):
      raise config_lib.ConfigError(
          f'{self.file("config.json")} is not the config of a msmgan_jax run: {self.path} is '
          'not a run of ours (and --overwrite will not delete it). Pick another --workdir.')
    for path, value in config_lib.BEFORE_ADDED.items():  # the way runs before it went.
      group, _, name = path.rpartition('.')
      if isinstance(old.get(group), dict) and name not in old[group]:
        old[group][name] = value
    return _with_defaults(old, schema)

  def _acquire(self) -> None:
    """Takes the workdir lock without waiting; WorkdirBusy if another process holds it."""
    try:
      os.makedirs(self.path, exist_ok=True)
      lock = filelock.FileLock(self.file(self.LOCK), timeout=0)
      lock.acquire()
    except filelock.Timeout:
      holder = _read_text(self.file(self.OWNER)).strip() or 'unknown'
      raise WorkdirBusy(
          f'workdir {self.path} is in use by another run (process {holder}); wait for it to '
          'finish or stop it, or use another --workdir') from None
    except OSError as e:
      raise config_lib.ConfigError(
          f'workdir {self.path} cannot be written ({e.strerror or e}); pick a writable '
          '--workdir') from e
    self._lock = lock
    utils.write_text(self.file(self.OWNER), f'{os.getpid()} on {socket.gethostname()}\n')

  def release(self) -> None:
    if self._lock is not None:
      self._lock.release()
      self._lock = None


def _read_json_or_refuse(path: str, fix: str):
  """The JSON in `path` (None if there is no file); ConfigError saying `fix` if damaged."""
  try:
    return utils.read_json(path)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise config_lib.ConfigError(f'{path} is not valid JSON ({e}); {fix}') from e


def _read_text(path: str) -> str:
  try:
    with open(path) as f:
      return f.read()
  except OSError:
    return ''


# A teacher-only run (method 'teacher') does not read these: a change to them (say, a new
# student default) leaves the teacher run the same run, resumable and reusable.
_NOT_THE_TEACHERS = ('student', 'kd', 'gan', 'disc', 'mutual', 'fitnets', 'at', 'dml')


def _what_trains(cfg: dict) -> dict:
  """The part of a config.json that decides what its run trains (all of it but, for a
  teacher-only run, the student's fields)."""
  if cfg.get('method') != 'teacher':
    return cfg
  out = {k: v for k, v in cfg.items() if k not in _NOT_THE_TEACHERS}
  out['stages'] = {k: v for k, v in cfg.get('stages', {}).items()
                   if k in ('num', 'teacher_epochs')}
  return out


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


def _diff(a, b, prefix=''):
  for k in set(a) | set(b):
    va, vb = a.get(k), b.get(k)
    if isinstance(va, dict) and isinstance(vb, dict):
      yield from _diff(va, vb, f'{prefix}{k}.')
    elif va != vb:
      yield f'{prefix}{k}'


def steps_per_epoch(cfg, info) -> int:
  return max(1, info.num_train // cfg.batch_size)
