"""Several runs whose hyperparameters differ, trained in one program (`candidates`).

A run config may name `candidates`: settings such as 'student.lr=0.2; kd.tau=2.0', each
one applied on top of the config. The program then trains every candidate with every seed
(runs ordered candidate by candidate, seeds inside), on the same compiled step: the fields
in which the candidates differ are not compile-time constants of the step but per-run
inputs, a float32 scalar per run held in the run's states under `hp` and bound while its
step is traced (`bound`; with vmap the bound values are batched tracers). Inside the step:

- the loss reads `view.cfg` (`core.phase.StepView`), a `ConfigView` that returns the bound
  run's value for such a field and the config's own value for every other field;
- the student's learning rate (`student.lr`) scales every schedule built from it
  (`per_run_lr`): the head's and the fine-tuned blocks' groups, and the optimizers a
  method trains beside the student at its rate (`core.phase.StateContext.student_lr_fn`).

Only the fields a method registers as `run_fields` (`methods.registry.register_method`),
plus `student.lr` (and an old name a method copied into one of them, such as kd.beta for
msmgan, which it no longer reads: `config.run_fields`), may differ: those its losses read
only as numbers, or by their sign alone (no shapes). A weight that switches a term off (0)
in one candidate must be 0 in all of them, since whether a term is computed is part of
the program (`config._check_candidates`). Each run
trains as its own run of that candidate and seed would, up to float rounding: the values
enter the program as data instead of constants (the tests compare them,
tests/test_candidates.py).
"""
import contextlib
from typing import Optional

import jax.numpy as jnp

COMMON_FIELDS = ('student.lr',)

_BOUND: list = []  # the values of the run whose step is being traced (innermost last).


@contextlib.contextmanager
def bound(values: Optional[dict]):
  """Binds {dotted field: traced float32 scalar} while one run's step is traced (no-op for
  None: a program without candidates)."""
  if values is None:
    yield
    return
  _BOUND.append(values)
  try:
    yield
  finally:
    _BOUND.pop()


def current() -> dict:
  """The bound run's values ({} outside a step of a program with candidates)."""
  return _BOUND[-1] if _BOUND else {}


def get(cfg, path: str):
  """The value of dotted field `path`: the bound run's, else `cfg`'s."""
  values = current()
  if path in values:
    return values[path]
  node = cfg
  for part in path.split('.'):
    node = node[part]
  return node


class ConfigView:
  """A read-only view of a ConfigDict in which the bound run's fields (`current`) read as
  that run's traced values; every other field reads as the config's. Attribute and item
  access, `get` and `in` work as on the ConfigDict."""

  def __init__(self, cfg, prefix: str = ''):
    object.__setattr__(self, '_cfg', cfg)
    object.__setattr__(self, '_prefix', prefix)

  def __getattr__(self, name):
    if name.startswith('__'):
      raise AttributeError(name)
    path = self._prefix + name
    values = current()
    if path in values:
      return values[path]
    value = getattr(self._cfg, name)
    if hasattr(value, 'items') and hasattr(value, 'to_dict'):  # a sub-ConfigDict.
      return ConfigView(value, path + '.')
    return value

  __getitem__ = __getattr__

  def get(self, name, default=None):
    return getattr(self, name) if name in self._cfg else default

  def __contains__(self, name):
    return name in self._cfg

  def __setattr__(self, name, value):
    raise AttributeError('a step reads the config; it does not change it')


def per_run_lr(schedule, base_lr: float):
  """`schedule` (step count -> rate) times the bound run's `student.lr` / `base_lr` (the
  rate the schedule was built with); `schedule` itself outside a step or without that field
  bound. The rate is linear in the peak for every schedule we build (warmup + cosine), so
  the run gets its own peak's schedule up to float rounding."""
  def scaled(count):
    lr = current().get('student.lr')
    if lr is None:
      return schedule(count)
    return schedule(count) * (lr / jnp.float32(base_lr))
  return scaled
