"""Loop utilities the trainers share: the classifier and eval steps, the training loop
(logging, checkpoints, stop requests, progress bars), the workdir contract, and the
budgets in steps (`student.min_steps`, the teacher's `MIN_EPOCH_STEPS`, and the console lines
about too small a budget).

The whole job (teacher, then student) is orchestrated by `train.train_and_evaluate`; this
module imports neither trainer, so `teacher` and `student` build on it without a cycle.
"""
import sys
import time
import weakref
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from msmgan_jax.core import losses
from msmgan_jax.core import models
from msmgan_jax.core import sharding
from msmgan_jax.files import faults
from msmgan_jax.methods import registry


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


HEARTBEAT_S = 30.0  # off a terminal: at most this long without a progress line.
_LAST_LINE = [time.time()]  # when the last plain progress line was printed (any bar).


def progress(**kwargs):
  """A tqdm bar with rate and ETA on a terminal (process 0); off a terminal (a log file, a
  CI log) a `PlainProgress` that prints a plain line at most every `HEARTBEAT_S` seconds;
  silent on the other processes of a multi-host job."""
  if jax.process_index() != 0:
    return tqdm.tqdm(**kwargs, disable=True)
  if not sys.stderr.isatty():
    return PlainProgress(**kwargs)
  return tqdm.tqdm(**kwargs, dynamic_ncols=True)


class PlainProgress:
  """tqdm's interface off a terminal: no bar, but one plain stderr line such as
  `teacher epoch 1/15: 120/469 step (26%), 4.10 step/s, ETA 1m25s, loss=0.53` whenever
  `HEARTBEAT_S` seconds have passed since the last such line of any bar (so a user
  tailing a log can tell a slow run from a hung one). `disable` is True: no bar is drawn."""
  disable = True

  def __init__(self, iterable=None, total=None, initial=0, desc='', unit='it', **_):
    self.iterable, self.total, self.n, self.desc, self.unit = iterable, total, initial, desc, unit
    self.t0, self.n0, self.postfix = time.time(), initial, ''
    self._maybe_print()

  def __iter__(self):
    for item in self.iterable:
      yield item
      self.update()

  def update(self, n: int = 1) -> None:
    self.n += n
    self._maybe_print()

  def set_postfix(self, values: dict, refresh: bool = False) -> None:  # pylint: disable=unused-argument
    self.postfix = ', '.join(f'{k}={v}' for k, v in values.items())

  def close(self) -> None:
    pass

  def _maybe_print(self) -> None:
    now = time.time()
    if now - _LAST_LINE[0] < HEARTBEAT_S:
      return
    _LAST_LINE[0] = now
    rate = (self.n - self.n0) / max(now - self.t0, 1e-9)
    parts = [f'{self.n}' + (f'/{self.total}' if self.total else '') + f' {self.unit}']
    if self.total:
      parts[0] += f' ({100 * self.n / self.total:.0f}%)'
    if self.n > self.n0:
      parts.append(f'{rate:.2f} {self.unit}/s')
      if self.total:
        left = int((self.total - self.n) / max(rate, 1e-9))
        parts.append(f'ETA {left // 60}m{left % 60:02d}s')
    if self.postfix:
      parts.append(self.postfix)
    sys.stderr.write(f'{self.desc}: {", ".join(parts)}\n')
    sys.stderr.flush()


def evaluate(eval_step, variables, eval_batches, mesh) -> dict:
  """Test accuracy and loss over every example of the eval split, each counted once.

  With several seeds' variables stacked (an `eval_step` mapped over them), accuracy and
  loss are lists, one value per seed.
  """
  totals = None
  for batch in progress(iterable=eval_batches(), desc='evaluating', unit='batch', leave=False):
    out = eval_step(variables, sharding.shard_batch(batch, mesh))
    totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
    faults.point('eval')
  totals = jax.device_get(totals)
  n = np.asarray(totals['count'], np.float64)
  per_seed = lambda a: (np.asarray(a, np.float64) / n).tolist()
  return {'accuracy': per_seed(totals['correct']), 'loss': per_seed(totals['loss']),
          'count': int(np.max(n))}


def train_loop(states, step_fn, *, batches, start: int, stop: int, mesh, batch_size: int,
               log_every: int, log: Callable, after_step: Callable, save: Callable,
               save_at: Callable, where: str, window=(), epoch_steps: int = 0,
               multi_step: Callable = None, steps_per_dispatch: int = 1,
               event_at: Callable = None):
  """Runs `step_fn` for steps start..stop-1; returns (states, seconds of the first dispatch,
  the steps it ran).

  The first dispatch includes compilation, so it is timed apart (one device sync). Every
  `log_every` steps (and at the end) `log(step, means)` gets the mean metrics of the steps
  since the last log and the throughput. Then, steps counted from 1, `after_step(step,
  states)` evaluates (or not) and `save(step, states, window)` checkpoints where
  `save_at(step)` says; `window` (the metrics of the steps since the last log, as floats)
  goes into the checkpoint, and a resumed run passes it back, so its logs are the ones an
  uninterrupted run writes.

  Steps per dispatch: with `multi_step` ((states, batches stacked on a new leading axis of
  c) -> (states, metrics stacked on that axis), c consecutive steps in one program, e.g.
  `scanned`) and `steps_per_dispatch` k > 1, the loop hands the device up to k batches at a
  time. A dispatch never runs past a step where anything happens (a log, `save_at`,
  `event_at`, the end), so logs, evaluations and checkpoints are those of one step per
  dispatch; a dispatch of one step uses `step_fn`. Choose k dividing `log_every` (and the
  steps between evaluations) so that one program size serves every dispatch.

  A progress bar (a terminal only) counts the steps of `where`, one bar per epoch of
  `epoch_steps` steps when that is given, and shows the last logged loss.

  Faults: a NaN or inf metric raises `faults.NumericalError` naming `where`, the step and
  the metric; metrics are checked before anything is saved, so no checkpoint holds a
  diverged state. A SIGTERM / SIGINT (under `faults.graceful_stop`) saves at the next
  dispatch boundary and raises `faults.Interrupted`.
  """
  done, pending, t0, first_step_s, first_steps, timed = list(window), [], time.time(), 0.0, 0, 0
  k = steps_per_dispatch if multi_step is not None else 1

  def boundary(s: int) -> bool:
    """Something happens after step s (counted from 1): the dispatch ends there."""
    return (s % log_every == 0 or s == stop or save_at(s) or bool(event_at and event_at(s))
            or bool(epoch_steps and s % epoch_steps == 0))

  bar = None
  step = start
  try:
    while step < stop:
      if bar is None:
        bar = _step_bar(where, step, stop, epoch_steps)
      c = 1
      while c < k and not boundary(step + c):
        c += 1
      if c == 1:
        states, metrics = step_fn(states, sharding.shard_batch(next(batches), mesh))
      else:
        placed = [sharding.shard_batch(next(batches), mesh) for _ in range(c)]
        states, metrics = multi_step(states, jax.tree.map(lambda *b: jnp.stack(b), *placed))
      bar.update(c)
      for _ in range(c):
        faults.point('step')
      if step == start:
        jax.block_until_ready(metrics)
        first_step_s, first_steps = time.time() - t0, c
      pending.append((metrics, c))
      timed += c
      step += c
      logging_now = step % log_every == 0 or step == stop
      signum = faults.stop_requested()
      if jax.process_count() > 1:  # every host must stop (and save) at the same step.
        signum = _agreed(signum) if logging_now or save_at(step) else None
      saving = save_at(step) or signum is not None
      if logging_now or saving:  # floats, or lists of one float per seed.
        host = []
        for m, n in jax.device_get(pending):
          m = {key: np.asarray(v, np.float64) for key, v in m.items()}
          host += ([{key: v.tolist() for key, v in m.items()}] if n == 1 else
                   [{key: v[j].tolist() for key, v in m.items()} for j in range(n)])
        _check_finite(host, step - len(host), where)
        done, pending = done + host, []
      if logging_now:
        means = {key: np.mean([m[key] for m in done], axis=0).tolist() for key in done[0]}
        means['images_per_s'] = timed * batch_size / (time.time() - t0)
        log(step, means)
        bar.set_postfix({key: f'{np.mean(v):.4g}' for key, v in means.items()
                         if key in ('loss', 'g_loss', 'accuracy')}, refresh=False)
        done, t0, timed = [], time.time(), 0
      if step == stop or (epoch_steps and step % epoch_steps == 0):
        bar.close()  # before after_step prints its evaluation line.
        bar = None
      states = after_step(step, states)
      if saving:
        save(step, states, done)
      if signum is not None:
        raise faults.Interrupted(signum, f'{where} at step {step}')
  finally:
    if bar is not None:
      bar.close()
  return states, first_step_s, first_steps


def scanned(step_fn: Callable) -> Callable:
  """c steps of `step_fn(states, batch, *args)` in one jitted program: (states, batches
  stacked on a leading axis of c, *args) -> (states, metrics stacked on that axis), by
  `jax.lax.scan`, so the device runs them without the host between steps (compiled once per
  c). The states are donated; `args` (say, an anchor's variables) are arguments of the
  program, never constants baked into it.

  On CPU the scan is unrolled (c copies of the step in one program): XLA:CPU runs a
  convolution inside a while loop many times slower than outside one (seen in a scratch
  measurement on this project's machine, not a committed benchmark), so the unrolled form
  is taken, at the price of a compile time that grows with c. On GPU and TPU the loop stays
  rolled (one compiled step body whatever c)."""
  unroll = True if jax.devices()[0].platform == 'cpu' else 1

  def run(states, stacked, *args):
    return jax.lax.scan(lambda s, b: step_fn(s, b, *args), states, stacked, unroll=unroll)
  return jax.jit(run, donate_argnums=0)


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


def steps_per_epoch(cfg, info, teacher: bool = False) -> int:
  """Steps in one epoch of the train split: whole batches of one pass over it (the
  student's epoch, its warmups), for the teacher (`teacher`) at least `MIN_EPOCH_STEPS`
  (`teacher_epoch_steps`).

  The trainers ask for it before they train (the teacher's trainer first, with `teacher`,
  when a teacher trains here), so the first call for a run's data (`info`) also prints the
  run's `budget_notes`: the teacher's line only when the teacher's trainer asks."""
  _note_budget(cfg, info, teacher=teacher)
  if teacher:
    return teacher_epoch_steps(cfg, info.num_train)[0]
  return max(1, info.num_train // cfg.batch_size)


# The fewest steps in one of the teacher's epochs: on a small training set (240 images at
# batch_size 128 are 1 step a pass) an epoch is the fewest whole passes that give this many.
# At or below 31, the steps of a pass over 4,000 images at batch_size 128, so every
# committed config's teacher (and the test suite's, 1,200 images at 64) keeps its budget.
MIN_EPOCH_STEPS = 16


def teacher_epoch_steps(cfg, num_train: int) -> tuple:
  """(steps, passes) of one of the teacher's epochs on `num_train` training images: the
  whole batches of one pass, or, when that is under MIN_EPOCH_STEPS, of the fewest whole
  passes that give at least that many (the rule by which `student.min_steps` raises the
  student's epochs: ceil(floor x batch_size / num_train) passes). Anchors, evaluations and
  warmups count these epochs."""
  bs = cfg.batch_size
  if num_train // bs >= MIN_EPOCH_STEPS:
    return num_train // bs, 1
  passes = -(-MIN_EPOCH_STEPS * bs // num_train)
  return passes * num_train // bs, passes


# A budget below this many steps gets a warning naming a value that fits (the student's when
# student.min_steps is 0; the teacher's when it trains here). Measured on 4,000 Fashion-MNIST
# images (python tools/budget_study.py in a checkout), a resnet8 student reached 0.47 test
# accuracy in 63 steps, 0.74 in 248, 0.78 in 502, 0.80 in 998. It must stay at
# or below 703, the fewest steps of a committed comparison's runs (tests/test_budget.py).
ADVISED_MIN_STEPS = 500
_SIZED = ': the configs\' epoch budgets are sized for 60,000 images'
_WHY = ('fewer steps leave the network undertrained (a resnet8 student on 4,000 '
        'Fashion-MNIST images: 0.47 test accuracy after 63 steps, 0.78 after 502)')
_NOTED = weakref.WeakValueDictionary()  # id(info) -> the data info whose notes were printed.


student_epochs = registry.student_epochs  # the floor's rule, where phase_steps applies it.


def student_budget(cfg, num_train: int, num_classes: int = 10) -> dict:
  """The student's budget as it trains on `num_train` images: `epochs` (after
  `student.min_steps`), `steps` (epochs x num_train / batch_size, rounded down), `total`
  (the sum of every phase's steps, what trains) and `block` (the steps of each feature
  phase, e.g. msmgan's block_k, in order)."""
  method = registry.METHODS[cfg.method]
  stages = cfg.anchors.num if method.uses_teacher and method.all_anchors else 1
  k = models.create_model(cfg.student.model, num_classes).num_blocks
  steps = [(p, registry.phase_steps(cfg, p, num_train, stages, m))
           for m in range(stages) for p in registry.stage_phases(cfg, k, m)]
  epochs = student_epochs(cfg, num_train)
  return {'epochs': epochs, 'steps': epochs * num_train // cfg.batch_size,
          'total': sum(n for _, n in steps), 'block': [n for p, n in steps if p.is_feature]}


def budget_notes(cfg, num_train: int, num_classes: int = 10, teacher: bool = False) -> list:
  """The console lines about the budgets on `num_train` training images. With `teacher` (the
  teacher trains here), a `warning:` naming `teacher.epochs` and a value that fits when the
  teacher's steps are under `ADVISED_MIN_STEPS`, else a `note:` when its epochs are
  several passes (`teacher_epoch_steps`). For a student method: a `note:` when
  `student.min_steps` raised `student.epochs`, or, with no floor set (0), a `warning:` naming
  `student.min_steps` and a value that fits when the student's budget is under
  `ADVISED_MIN_STEPS` steps. None else."""
  bs, lines = cfg.batch_size, []
  per_epoch, passes = teacher_epoch_steps(cfg, num_train)
  epoch = (f'{per_epoch} batches of {num_train:,} training images' if passes == 1 else
           f'{per_epoch} batches of {passes} passes over {num_train:,} training images, the '
           f'floor of {MIN_EPOCH_STEPS} steps per epoch')
  if teacher and cfg.teacher.epochs * per_epoch < ADVISED_MIN_STEPS:
    fits = -(-ADVISED_MIN_STEPS // per_epoch)
    lines.append(
        f'warning: the teacher trains only {cfg.teacher.epochs * per_epoch} steps '
        f'(teacher.epochs={cfg.teacher.epochs} x {epoch} at batch_size {bs})'
        f'{_SIZED if num_train < 60_000 else ""}. Set --config.teacher.epochs={fits} '
        f'({fits * per_epoch} steps); {_WHY}.')
  elif teacher and passes > 1:
    lines.append(f'note: the teacher\'s epochs are {epoch} at batch_size {bs} '
                 f'({cfg.teacher.epochs * per_epoch} steps in all).')
  if cfg.method == 'teacher' or cfg.method not in registry.METHODS:
    return lines
  floor, epochs = cfg.student.get('min_steps', 0), cfg.student.epochs
  b = student_budget(cfg, num_train, num_classes)
  blocks = ''
  if b['block']:
    lo, hi = min(b['block']), max(b['block'])
    blocks = f'; block phases {lo} steps each' if lo == hi else f'; block phases {lo}-{hi} steps'
  given = f'student.epochs={epochs} x {num_train:,} training images / batch_size {bs}'
  if b['epochs'] != epochs:
    lines.append(f'note: student.min_steps={floor} raises the student\'s budget: {given} gives '
                 f'{epochs * num_train // bs} steps, fewer than the floor, so the student trains '
                 f'{b["epochs"]} epochs ({b["total"]} steps{blocks}).')
  elif not floor and b['steps'] < ADVISED_MIN_STEPS:
    fits = -(-ADVISED_MIN_STEPS * bs // num_train)
    lines.append(f'warning: the student trains only {b["total"]} steps ({given}{blocks})'
                 f'{_SIZED if num_train < 60_000 else ""}. Set --config.student.min_steps='
                 f'{ADVISED_MIN_STEPS} (here {fits} epochs) or --config.student.epochs={fits}; '
                 f'{_WHY}.')
  return lines


def _note_budget(cfg, info, teacher: bool = False) -> None:
  """Prints `budget_notes` once per run (per data `info` object), on process 0, to stderr."""
  if _NOTED.get(id(info)) is info:
    return
  try:
    _NOTED[id(info)] = info
  except TypeError:  # an info that takes no weak reference: noted at every call.
    pass
  if jax.process_index() != 0:
    return
  try:
    lines = budget_notes(cfg, info.num_train, getattr(info, 'num_classes', 10), teacher=teacher)
  except (AttributeError, KeyError, ValueError):  # a stand-in config or info (tests, tools).
    return
  for line in lines:
    sys.stderr.write(line + '\n')
  sys.stderr.flush()
