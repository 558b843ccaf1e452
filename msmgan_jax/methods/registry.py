"""The method registry: what makes a name in `config.method` a distillation method.

A method is one module under `msmgan_jax/methods/` that calls `register_method` (and, for
its own settings, `register_group`). It gives:
- `stage_phases(cfg, num_blocks, stage)`: the `core.phase.Phase`s of each stage (0-based);
- whether it needs the teacher, and which anchors guide it (every anchor, one stage each,
  or the final teacher in a single stage);
- its config group(s): defaults with one comment per field (the README's config
  reference is read from them) and a `check(cfg)` of their ranges;
- a `check(cfg)` run only when it is the chosen method;
- its ablations: name -> config overrides, and `variant(cfg)`, the ablations a config is;
- optionally a `core.phase.Monitor` of its logged metrics;
- whether its losses read each example's index in the training split (`needs_index`: the
  trainer then asks the data pipeline for batches that carry it);
- where fields of its groups went (`Moved`) and when fields were added (`register_history`):
  configs recorded before (`migrate`) and settings written before (`current_fields`) keep
  their meaning.
The trainer, the config schema, the workdir rule (a teacher-only run ignores method
groups) and the comparison runner read everything from here; none of them names a method.
"""
import dataclasses
import inspect
import math
import re
import tokenize
from typing import Callable, Optional

import ml_collections

from msmgan_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Method:
  """A registered distillation method (see the module docstring)."""
  name: str
  stage_phases: Callable  # (cfg, num_blocks, stage) -> list of Phase.
  uses_teacher: bool = True
  all_anchors: bool = True
  check: Optional[Callable] = None      # (cfg) -> None; raises ConfigError.
  ablations: tuple = ()                  # ((name, {field: value}), ...).
  variant: Optional[Callable] = None    # (cfg) -> list of ablation names.
  needs_features: bool = False           # its phases read the teacher's block features.
  # (cfg) -> why this config runs the teacher's upper blocks on student maps or trains a
  # copy of the teacher ('' when it does neither): only a Flax `Classifier` teacher can.
  needs_network: Optional[Callable] = None
  monitor: Optional[type] = None         # a `core.phase.Monitor` subclass, built per phase.
  needs_index: bool = False              # its training batches carry 'index' (StepView.index).
  # Fields (dotted) its steps read only as numbers, which may differ between the runs of one
  # program (`candidates`, `core.runs`); `student.lr` may for every method.
  run_fields: tuple = ()


@dataclasses.dataclass(frozen=True)
class Group:
  """A config group a method owns: `defaults(c)` adds `c.<name>`, one field a line with a
  trailing comment; `check(cfg)` validates it (whatever the method, as a config holds every
  group)."""
  name: str
  defaults: Callable
  check: Optional[Callable] = None


@dataclasses.dataclass(frozen=True)
class Moved:
  """Field `old` (dotted) is now `new`. With `copy`, `old` is still a field and `new` took
  its value only in runs of `method` (a method that read another's field before it had its
  own); else `old` is gone, for runs of every method (or of `method` alone)."""
  old: str
  new: str
  method: Optional[str] = None
  copy: bool = False


METHODS = {}  # name -> Method; `config.method` must name one (or 'teacher').
GROUPS = {}   # name -> Group, in registration order.
MOVED = []    # `Moved` entries, in registration order.
ADDED = {}    # dotted field -> the value under which runs recorded before it existed trained.


def register_method(name: str, stage_phases: Callable, uses_teacher: bool = True,
                    all_anchors: bool = True, per_stage: bool = False,
                    check: Optional[Callable] = None, ablations: Optional[dict] = None,
                    variant: Optional[Callable] = None, needs_features: bool = False,
                    needs_network: Optional[Callable] = None,
                    monitor: Optional[type] = None, needs_index: bool = False,
                    run_fields: tuple = ()) -> Method:
  """Adds a method. `stage_phases(cfg, num_blocks)` returns the phases of one stage (with
  `per_stage`, `stage_phases(cfg, num_blocks, stage)`: stages may differ); with
  `all_anchors` False the final teacher alone guides a single stage; `needs_features`:
  its phases read the teacher's block maps; `needs_network(cfg)`: why the config runs the
  teacher's upper blocks or trains a copy of it ('' if not); `monitor`: a
  `core.phase.Monitor` subclass the trainer builds for each phase; `needs_index`: its
  training batches carry each example's index in the training split ('index', int32 (B,);
  `core.phase.StepView.index`); `run_fields`: dotted config fields its steps read only as
  numbers, or by their sign alone (a term on or off: `config._check_candidates` makes the
  candidates of one program share it), never in a shape, which the candidates of one program
  may set apart (`core.runs`; tests/test_candidates.py checks them against separate runs).
  Raises ValueError for a name that is not an identifier,
  is 'teacher', or is taken."""
  if not name.isidentifier() or name == 'teacher':
    raise ValueError(f'method name {name!r} must be an identifier other than teacher')
  if name in METHODS:
    raise ValueError(f'method {name!r} is already registered')
  phases = stage_phases if per_stage else (lambda cfg, k, stage: stage_phases(cfg, k))
  METHODS[name] = Method(name, phases, uses_teacher, all_anchors, check,
                         tuple((ablations or {}).items()), variant, needs_features,
                         needs_network, monitor, needs_index, tuple(run_fields))
  return METHODS[name]


def register_group(name: str, defaults: Callable, check: Optional[Callable] = None) -> Group:
  """Adds config group `name` (see `Group`); raises ValueError when it is taken."""
  if name in GROUPS:
    raise ValueError(f'config group {name!r} is already registered')
  GROUPS[name] = Group(name, defaults, check)
  return GROUPS[name]


def register_history(moved=(), added=None) -> None:
  """Records where fields went (`Moved` entries) and fields added since runs were recorded
  ({dotted field: the value those runs trained with}); see `migrate`, `current_fields`.
  Raises ValueError for a field given twice."""
  for entry in moved:
    if any((m.old, m.method) == (entry.old, entry.method) and m.new == entry.new
           for m in MOVED):
      raise ValueError(f'{entry.old} -> {entry.new} is already recorded')
    MOVED.append(entry)
  for field, value in (added or {}).items():
    if field in ADDED:
      raise ValueError(f'field {field} is already recorded as added')
    ADDED[field] = value


def _entries(field: str, method: Optional[str]) -> list:
  return [m for m in MOVED if m.old == field and m.method in (None, method)]


def current_fields(overrides: dict, method: Optional[str]) -> dict:
  """Overrides ({dotted field: value}) written for a run of `method`, with their fields as
  the schema names them now: a field that moved is set where it went (a copied one in
  both places). Fields that never moved are as given; the order is kept."""
  out = {}
  for field, value in overrides.items():
    moved = _entries(field, method)
    if not moved or any(m.copy for m in moved):
      out[field] = value
    out.update({m.new: value for m in moved})
  return out


def moved_to(field: str) -> Optional[str]:
  """Where the field `field` (dotted) that is no longer in the schema went (None: it did
  not move)."""
  return next((m.new for m in MOVED if m.old == field and not m.copy), None)


def migrate(recorded: dict) -> dict:
  """A config.json recorded before fields moved or were added, as the schema has it now:
  each moved field where it went (when the recorded config lacks the new one; a copied
  field for its method's runs only), and an added field, where its group was recorded
  without it, with the value those runs trained with (`register_history`). Fields the
  recorded config lacks otherwise stay missing (the caller fills in defaults). A copy."""
  out = {k: dict(v) if isinstance(v, dict) else v for k, v in recorded.items()}
  for m in MOVED:
    (g_old, name_old), (g_new, name_new) = m.old.split('.'), m.new.split('.')
    old_group = out.get(g_old)
    if not isinstance(old_group, dict) or name_old not in old_group:
      continue
    if m.method not in (None, out.get('method')):
      continue
    new_group = out.setdefault(g_new, {})
    if isinstance(new_group, dict) and name_new not in new_group:
      new_group[name_new] = old_group[name_old]
    if not m.copy:
      del old_group[name_old]
  for field, value in ADDED.items():
    group, _, name = field.rpartition('.')
    if isinstance(out.get(group), dict) and name not in out[group]:
      out[group][name] = value
  return out


def get(name: str) -> Method:
  """The method `name`; ConfigError naming the registered ones otherwise."""
  if name not in METHODS:
    raise ConfigError(f'config field method: {name!r} is not one of '
                      f'{("teacher",) + tuple(METHODS)}')
  return METHODS[name]


def stage_phases(cfg, num_blocks: int, stage: int = 0) -> list:
  """The phases of stage `stage` (0-based) for `cfg.method`."""
  if cfg.method not in METHODS:
    raise ValueError(f'method {cfg.method!r} trains no student')
  return METHODS[cfg.method].stage_phases(cfg, num_blocks, stage)


def uses_teacher(cfg) -> bool:
  """Whether `cfg.method` needs the teacher's anchors."""
  return cfg.method == 'teacher' or METHODS[cfg.method].uses_teacher


def needs_index(cfg) -> bool:
  """Whether `cfg.method`'s training batches must carry each example's index (False for
  'teacher')."""
  return cfg.method in METHODS and METHODS[cfg.method].needs_index


def stage_share(cfg, stage: int, num_stages: int) -> float:
  """Stage `stage`'s (0-based) part of the student's image budget: `student.stage_shares`,
  or equal parts when it is empty (and the whole budget for a single stage)."""
  if num_stages == 1 or not cfg.student.stage_shares:
    return 1 / num_stages
  return cfg.student.stage_shares[stage]


def student_epochs(cfg, num_train: int) -> int:
  """The student's budget in epochs of the `num_train` training images: `student.epochs`,
  or, when that gives fewer than `student.min_steps` steps (epochs x num_train /
  batch_size), the fewest whole epochs that give at least that many."""
  epochs, floor = cfg.student.epochs, cfg.student.get('min_steps', 0)
  if floor and epochs * num_train < floor * cfg.batch_size:
    return -(-floor * cfg.batch_size // num_train)  # ceil(floor x batch_size / num_train).
  return epochs


def phase_steps(cfg, phase, num_train: int, num_stages: int, stage: int = 0) -> int:
  """Steps of `phase` in stage `stage`: its share of that stage's part of the budget
  (`student_epochs` of the `num_train` training images)."""
  images = (student_epochs(cfg, num_train) * num_train * phase.share
            * stage_share(cfg, stage, num_stages))
  return max(1, round(images / cfg.batch_size))


def ablations(method: str) -> dict:
  """{ablation name: its overrides ({'group.field': value}) or a function of the config
  giving them} of `method` ({} for an unknown one); see `ablation_overrides`."""
  return dict(METHODS[method].ablations) if method in METHODS else {}


def ablation_overrides(method: str, name: Optional[str], cfg) -> dict:
  """The overrides that make ablation `name` of `method` from `cfg` (the full method's
  config; {} for no ablation). An ablation that must keep some budget of the full method
  (say, the steps of its block phases) computes its overrides from `cfg`."""
  if not name:
    return {}
  over = dict(METHODS[method].ablations)[name]
  return dict(over(cfg) if callable(over) else over)


def variant(cfg) -> list:
  """Which of its method's ablations `cfg` is (empty for the full method)."""
  method = METHODS.get(cfg.method)
  return method.variant(cfg) if method is not None and method.variant else []


def add_groups(c: ml_collections.ConfigDict) -> None:
  """Adds every registered method group to config `c`, in registration order."""
  for group in GROUPS.values():
    group.defaults(c)


def check_groups(cfg) -> None:
  """Runs every group's range checks (ConfigError on the first wrong field)."""
  for group in GROUPS.values():
    if group.check is not None:
      group.check(cfg)


def reference_rows(fn: Callable, cfg) -> list:
  """(field, default, comment) of each `X.name = value  # comment` line of `fn`'s source,
  where `X` was bound by `c.group = X = ml_collections.ConfigDict()` (or is the root `c`);
  none for a function whose source cannot be read (defined by `exec`)."""
  groups, rows = {}, []
  try:
    source = inspect.getsource(fn)
  except (OSError, TypeError, tokenize.TokenError):  # defined where no source file is (exec).
    return []
  for line in source.splitlines():
    g = re.match(r'\s*c\.(\w+) = (\w+) = ml_collections\.ConfigDict\(\)', line)
    m = re.match(r'\s*(\w+) = ml_collections\.ConfigDict\(\)', line)
    if g:
      groups[g.group(2)] = g.group(1) + '.'
    elif m:
      groups[m.group(1)] = ''
  for line in source.splitlines():
    f = re.match(r'\s*(\w+)\.(\w+) = .*?#\s*(.*)$', line)
    if f and f.group(1) in groups:
      field = groups[f.group(1)] + f.group(2)
      group, _, name = field.rpartition('.')
      rows.append((field, (cfg[group] if group else cfg)[name], f.group(3)))
  return rows


# Range checks methods share.
def require(ok: bool, field: str, msg: str) -> None:
  """ConfigError `config field FIELD: MSG` unless `ok`."""
  if not ok:
    raise ConfigError(f'config field {field}: {msg}')


def check_finite(cfg, fields, positive=()) -> None:
  """Each dotted field a finite number >= 0 (> 0 for those in `positive`)."""
  for f in fields:
    group, name = f.split('.')
    v = cfg[group][name]
    require(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
            f, f'must be a finite number, got {v!r}')
    require(v >= 0, f, f'must be >= 0, got {v!r}')
  for f in positive:
    group, name = f.split('.')
    require(cfg[group][name] > 0, f,
            f'must be > 0 (it divides the logits), got {cfg[group][name]!r}')


def check_sub_batch(cfg, field: str) -> None:
  """`field` is 0 (the whole batch) or an integer that divides batch_size."""
  group, name = field.split('.')
  v = cfg[group][name]
  require(isinstance(v, int) and not isinstance(v, bool) and v >= 0
          and (v == 0 or v >= cfg.batch_size or cfg.batch_size % v == 0), field,
          f'must be 0 (the whole batch) or an integer that divides batch_size '
          f'({cfg.batch_size}), got {v!r}')
