"""Training entry point: teacher with anchors, then the configured student method.

`train_and_evaluate(config, workdir)` validates the config, claims the workdir
(refusing one that holds a different run), trains or reuses the teacher and its
anchor checkpoints, then trains the student for `config.method`, and writes
`summary.json`. Rerunning the same command resumes; a finished run is not redone.
"""
import json
import os
import time
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from msmgan_jax import config as config_lib
from msmgan_jax import data, losses, utils


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


def evaluate(eval_step, variables, eval_batches, mesh) -> dict:
  """Test accuracy and loss over every example of the eval split, each counted once."""
  totals = None
  for batch in eval_batches():
    out = eval_step(variables, utils.shard_batch(batch, mesh))
    totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
  totals = jax.device_get(totals)
  n = float(totals['count'])
  return {'accuracy': float(totals['correct']) / n, 'loss': float(totals['loss']) / n,
          'count': int(n)}


def train_loop(states, step_fn, *, batches, start: int, stop: int, mesh, batch_size: int,
               log_every: int, log: Callable, after_step: Callable):
  """Runs `step_fn` for steps start..stop-1; returns (states, seconds of the first step).

  The first step includes compilation, so it is timed apart (one device sync). Every `log_every` steps (and at the end) `log(step, means)` gets the mean metrics and
  the throughput; `after_step(step, states)` (steps counted from 1) decides on
  evaluation and checkpoints. A non-finite metric raises instead of training on.
  """
  pending, t0, first_step_s = [], time.time(), 0.0
  for step in range(start, stop):
    states, metrics = step_fn(states, utils.shard_batch(next(batches), mesh))
    if step == start:
      jax.block_until_ready(metrics)
      first_step_s = time.time() - t0
    pending.append(metrics)
    if (step + 1) % log_every == 0 or step + 1 == stop:
      host = jax.device_get(pending)
      means = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
      if not all(np.isfinite(v) for v in means.values()):
        raise FloatingPointError(f'non-finite training metrics {means} at step {step + 1}; '
                                 'lower the learning rate or check the data')
      means['images_per_s'] = len(pending) * batch_size / (time.time() - t0)
      log(step + 1, means)
      pending, t0 = [], time.time()
    states = after_step(step + 1, states)
  return states, first_step_s


class Workdir:
  """The files of one run: config.json, metrics.jsonl, checkpoints/, summary.json."""

  def __init__(self, path: str):
    self.path = path
    self.metrics = utils.MetricsWriter(path)

  def file(self, *parts) -> str:
    return os.path.join(self.path, *parts)

  def claim(self, cfg: ml_collections.ConfigDict) -> None:
    """Writes config.json, or checks that the one there is this config (then resumes)."""
    mine = json.loads(cfg.to_json())
    old = utils.read_json(self.file('config.json'))
    if old is not None and old != mine:
      diff = sorted(_diff(old, mine))
      raise config_lib.ConfigError(
          f'workdir {self.path} holds a run with another config (fields differ: '
          f'{", ".join(diff[:8])}). Use a new --workdir, or rerun with the same config to resume.')
    if old is None:
      if os.path.exists(self.path) and not os.path.isdir(self.path):
        raise config_lib.ConfigError(f'workdir {self.path} is a file; pick a directory')
      if os.path.isdir(self.path) and os.listdir(self.path):
        raise config_lib.ConfigError(
            f'workdir {self.path} is not empty and holds no config.json: it is not a run '
            'of ours. Pick a new or empty --workdir.')
      os.makedirs(self.path, exist_ok=True)
      utils.write_json(self.file('config.json'), mine)


def _diff(a, b, prefix=''):
  for k in set(a) | set(b):
    va, vb = a.get(k), b.get(k)
    if isinstance(va, dict) and isinstance(vb, dict):
      yield from _diff(va, vb, f'{prefix}{k}.')
    elif va != vb:
      yield f'{prefix}{k}'


def steps_per_epoch(cfg, info) -> int:
  return max(1, info.num_train // cfg.batch_size)


def train_and_evaluate(cfg: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs the whole job described by `cfg` in `workdir`; returns the summary."""
  from msmgan_jax import teacher as teacher_lib  # pylint: disable=g-import-not-at-top
  config_lib.validate(cfg)
  teacher_lib.check_anchor_paths(cfg)
  info, batches, eval_batches = data.load(cfg.dataset, batch_size=cfg.batch_size,
                                          eval_batch_size=cfg.eval_batch_size)
  wd = Workdir(workdir)
  wd.claim(cfg)
  done = utils.read_json(wd.file('summary.json'))
  if done is not None:
    print(f'{workdir} already holds a finished run (summary.json); nothing to do.')
    return done
  t0 = time.time()
  mesh = utils.mesh()
  # The `ce` baseline needs no teacher; given checkpoints, it is loaded for reference only.
  teacher = None
  if cfg.method != 'ce' or cfg.teacher.checkpoints:
    teacher = teacher_lib.train_teacher(cfg, wd, info, batches, eval_batches, mesh)
  summary = {'method': cfg.method, 'dataset': cfg.dataset.name,
             'teacher': teacher.summary() if teacher else None}
  if cfg.method != 'teacher':
    from msmgan_jax import phases, student  # pylint: disable=g-import-not-at-top
    summary['variant'] = phases.variant(cfg)
    summary['student'] = student.Distiller(cfg, wd, info, batches, eval_batches, mesh,
                                           teacher).run()
  summary['wall_s'] = round(time.time() - t0, 2)
  utils.write_json(wd.file('summary.json'), summary)
  return summary
