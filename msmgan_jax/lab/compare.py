"""Comparison runner: methods x seeds x ablations under one protocol, with tables and plots.

    python -m msmgan_jax.compare --config configs/compare_lowdata.py [--report]

A comparison config (see configs/compare_lowdata_v2.py) names a shared teacher run, a base
student config, the methods and MS-MGANs ablations to compare, the seeds, and for every
method the same number of tuning candidates (settings written as `field=value; ...`,
candidate 0 being the method's defaults: the base config plus `method_defaults[method]`).
The protocol:

1. The teacher is trained once in `teacher_workdir` (or found there, finished; on a fresh
   checkout, restored there from its committed record in results/teacher/ if that trained
   the same teacher config) and its anchors guide every run.
2. Tuning: each method's candidates train on the base train split, `tune_seeds` seeds each
   (one program), and are scored on `validation_split`, a hold-out of the training split
   that no student trains on (checked against the train split's examples, and to hold at
   least `min_validation_images`). The candidate with the best mean validation accuracy
   (ties: the earlier) is the method's setting; ablations take MS-MGANs'. The test split
   plays no part in any choice: a tuning run evaluated on another split is refused.
   With `candidates_per_program` (default 'auto': on a GPU or TPU), a method's candidates
   that differ only in per-run fields (`config.run_fields`: student.lr and loss weights)
   train in one program (`run_program`, `core.runs`), each recorded in its own workdir as
   its own run would have been; a candidate that cannot share the first's program trains
   apart, which the console says.
3. Final runs: every method and ablation with its setting, `seeds` students in one
   program, tested on the test split; the headline is the last-epoch test accuracy,
   mean +- sample std over the seeds, and the seed-paired difference to kd and to the best
   baseline with its 95% Student-t interval (`paired_difference`) and that interval
   corrected for the number of comparisons in its table (Holm; `family`), which the
   verdict reads.
4. Extra budgets (`budgets`): some methods again with the same settings and, say, twice
   the epochs (`best_other`: the baseline not named whose choice scored best on
   validation), so a margin that is only faster convergence shows. A budget's `with_main`
   names methods whose main runs already use its setting (checked): their main rows join
   its table, e.g. baselines given the start MS-MGANs' defaults use, against MS-MGANs.

Every run has its own workdir under `--workdir`; a finished run is skipped and an
interrupted one resumes, so stopping and rerunning the command continues the comparison.
On a fresh checkout, runs recorded in `out/runs/` with the same config count as finished.
After every run, `out` gets compare.json (every run, the tuning and the choices),
compare.md (the tables), two plots: test accuracy against images seen and against wall
time, and runs/<name>/ with each finished run's config, summary and metrics. `--report` rewrites them from the finished runs without training anything (keeping
the machine line of the host that ran them).
"""
import dataclasses
import json
import os
import platform
import shutil
import sys
import time
from typing import Optional

import numpy as np

from msmgan_jax.files import io

@dataclasses.dataclass
class Run:
  """One training run of the comparison."""
  kind: str                   # 'tune' or 'final'.
  name: str                   # e.g. 'kd', 'msmgan_no_gan', 'tune/kd/1'.
  method: str
  ablation: Optional[str] = None
  candidate: Optional[int] = None  # tuning runs: the candidate's index.
  budget: Optional[str] = None     # a final run at one of `budgets` (name 'kd@epochs30').

  def workdir(self, root: str) -> str:
    return os.path.join(root, self.kind, self.name.replace('tune/', ''))


def parse_setting(text: str) -> dict:
  """'kd.tau=2.0; kd.beta=0.5' -> {'kd.tau': 2.0, 'kd.beta': 0.5} (`config.parse_setting`)."""
  from msmgan_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  return config_lib.parse_setting(text)


def apply(cfg, overrides: dict):
  """`cfg` with `overrides` set (`config.apply_setting`); unknown fields are ConfigErrors."""
  from msmgan_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  return config_lib.apply_setting(cfg, overrides)


BEST_OTHER = 'best_other'  # in a budget's methods: see `budget_methods`.
BEST = 'best'  # target.against: the best baseline of the table (highest test mean).
_MISSING = object()


def plan(cc, root: Optional[str] = None) -> list:
  """Every run of the comparison in the order they run: each method's tuning, then its
  final run (so finished rows appear early); msmgan's ablations right after msmgan (with
  `ablations_last`, after every method's final run, so the verdict's rows come first); last,
  the runs at each extra budget (`budgets`), which reuse the settings chosen at the main
  budget, except that a budget with `with_main` (a like-with-like table) runs right after
  the last main final run of its methods and `with_main` methods. With `settings_from`
  (another comparison's compare.json) the settings chosen there are used: no tuning runs;
  with `tune_only` (a design study on the validation split) no final runs. A budget's
  `best_other` is planned once the tuning in `root` names it."""
  from msmgan_jax.methods import registry  # pylint: disable=g-import-not-at-top
  runs, later = [], []
  for method in cc.methods:
    if not cc.get('settings_from'):
      runs += [Run('tune', f'tune/{method}/{i}', method, candidate=i)
               for i in range(len(cc.tuning[method]))]
    if cc.get('tune_only'):
      continue
    runs.append(Run('final', method, method))
    own = registry.ablations(method)  # the method's own ablations, right after it
    # (or, with `ablations_last`, after every method's final run: the verdict first).
    (later if cc.get('ablations_last') else runs).extend(
        Run('final', f'{method}_{a}', method, ablation=a) for a in cc.ablations if a in own)
  runs += later
  if cc.get('tune_only'):
    return runs
  for budget, b in (cc.get('budgets', {}) or {}).items():
    extra = [Run('final', f'{m}@{budget}', m, budget=budget)
             for m in budget_methods(cc, budget, root)]
    joined = set(b.get('with_main', ())) | set(b.methods)
    if b.get('with_main'):  # a like-with-like table: as soon as its rows can exist.
      at = 1 + max(i for i, r in enumerate(runs) if r.kind == 'final' and not r.ablation
                   and not r.budget and r.method in joined)
      runs[at:at] = extra
    else:
      runs += extra
  return runs


def budget_methods(cc, budget: str, root: Optional[str] = None,
                   scores: Optional[dict] = None) -> list:
  """The methods run at `budget`: its `methods`, where `best_other` stands for the method
  not named there (nor in its `with_main`, nor `ours`) whose chosen candidate scored best on
  validation (ties: the earlier in `methods`); left out while that is unknown (tuning
  unfinished, or neither `root` nor `scores`, {method: its chosen candidate's mean
  validation accuracy}, given)."""
  named = list(cc.budgets[budget].methods)
  out = []
  for m in named:
    if m != BEST_OTHER:
      out.append(m)
      continue
    joined = set(cc.budgets[budget].get('with_main', ()))
    others = [o for o in cc.methods
              if o not in named and o not in joined and o != cc.get('ours', 'msmgan')]
    if scores is None:
      scores = validation_scores(cc, root) if root else {}
    best = [scores.get(o) for o in others]
    if others and None not in best:
      out.append(others[int(np.argmax(best))])
  return out


def check(cc) -> None:
  """Raises ConfigError for a comparison config that cannot run, before any work."""
  from msmgan_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from msmgan_jax.methods import registry  # pylint: disable=g-import-not-at-top
  def req(ok, msg):
    if not ok:
      raise config_lib.ConfigError(msg)
  req(len(cc.methods) == len(set(cc.methods)), f'methods {tuple(cc.methods)} repeats a method')
  for m in cc.methods:
    req(m in registry.METHODS, f'method {m!r} is not one of {sorted(registry.METHODS)}')
    req(m in cc.tuning, f'tuning.{m} is missing: give every method its candidates')
  counts = {m: len(cc.tuning[m]) for m in cc.methods}
  req(len(set(counts.values())) == 1 and min(counts.values()) >= 1,
      f'every method needs the same number (>= 1) of tuning candidates, got {counts}')
  for m in cc.methods:
    req(cc.tuning[m][0] == '', f'tuning.{m}[0] must be "" (the paper defaults come first)')
  for m, text in (cc.get('method_defaults') or {}).items():
    req(m in cc.methods, f'method_defaults.{m}: {m!r} is not one of the compared methods')
    parse_setting(text)
  known = {a for m in cc.methods for a in registry.ablations(m)}
  for a in cc.ablations:
    req(a in known, f'ablation {a!r} is not one of {sorted(known)} (the ablations of '
        f'{tuple(cc.methods)}); a method registers its ablations with its phases')
  req(not (cc.get('tune_only') and cc.get('settings_from')),
      'tune_only runs only tuning, settings_from skips it: set one of them')
  req(isinstance(cc.seeds, int) and cc.seeds >= 1, f'seeds must be >= 1, got {cc.seeds!r}')
  tune_seeds = cc.get('tune_seeds', 1)
  req(isinstance(tune_seeds, int) and tune_seeds >= 1,
      f'tune_seeds must be an integer >= 1, got {tune_seeds!r}')
  for name, b in (cc.get('budgets', {}) or {}).items():
    req('setting' in b and 'methods' in b, f'budgets.{name} needs a setting and methods')
    req(set(b.methods) <= set(cc.methods) | {BEST_OTHER}, f'budgets.{name}.methods '
        f'{tuple(b.methods)} may name only the compared methods {tuple(cc.methods)} and '
        f'{BEST_OTHER!r}')
    fixed = parse_setting(b.setting)
    for m in b.get('with_main', ()):  # main rows that already run under this setting.
      req(m in cc.methods and m not in b.methods, f'budgets.{name}.with_main names {m!r}: '
          f'with_main may name only compared methods {tuple(cc.methods)} that are not run at '
          f'the budget itself ({tuple(b.methods)})')
      own = parse_setting((cc.get('method_defaults') or {}).get(m, ''))
      req(all(own.get(k, _MISSING) == v for k, v in fixed.items()),
          f'budgets.{name}.with_main names {m!r}, whose main run must already use '
          f'{b.setting!r}: put it in method_defaults.{m}, or run {m} at this budget instead')
      for i, text in enumerate(cc.tuning.get(m, ())):
        req(not set(parse_setting(text)) & set(fixed), f'tuning.{m}[{i}] changes a field of '
            f'budgets.{name}.setting, so {m}\'s main run may not run under it')
  req(cc.get('candidates_per_program', 'auto') in (True, False, 'auto'),
      f'candidates_per_program must be True, False or \'auto\', got '
      f'{cc.get("candidates_per_program")!r}')
  req(cc.validation_split != cc.base.dataset.test_split,
      'validation_split must be a hold-out of the training data, not the test split')
  target = cc.get('target')
  if target:
    margin, against = target.get('margin'), tuple(target.get('against', ()))
    req(isinstance(margin, (int, float)) and np.isfinite(margin) and margin >= 0,
        f'target.margin must be a number of points >= 0, got {margin!r}')
    ours = cc.get('ours', 'msmgan')
    req(ours in cc.methods, f'target: ours ({ours!r}) is not one of the compared methods')
    req(against and all(a == BEST or (a in cc.methods and a != ours) for a in against),
        f'target.against must name {BEST!r} or compared methods other than {ours!r}, got '
        f'{against}')
    req(isinstance(cc.seeds, int) and cc.seeds >= 2, f'a target is judged on seed-paired '
        f'intervals, which need seeds >= 2 (got {cc.seeds!r}); raise seeds or drop target')


def student_config(cc, run: Run, anchors: list, chosen: dict):
  """The full config of `run`: the base, its method and setting, the shared anchors."""
  cfg = apply(copy_config(cc.base), {'method': run.method})
  apply(cfg, parse_setting((cc.get('method_defaults') or {}).get(run.method, '')))
  setting = cc.tuning[run.method][run.candidate] if run.kind == 'tune' else chosen[run.method]
  apply(cfg, parse_setting(setting))
  if run.ablation:
    apply(cfg, ablation_overrides(cc, run, cfg))
  if run.budget:
    apply(cfg, parse_setting(cc.budgets[run.budget].setting))
  cfg.teacher.checkpoints = tuple(anchors[-cfg.anchors.num:])
  cfg.anchors.epochs = ()
  if cfg.student.init == 'first_anchor' and cfg.anchors.num < len(anchors):
    # Like with like: a run with fewer stages (the single_stage ablation) still starts from
    # the shared teacher's first anchor, as every other run of the comparison does, not
    # from the first of its own anchors (the last): its only change stays the stages.
    cfg.student.init_checkpoint = anchors[0]
  if run.kind == 'tune':
    cfg.dataset.test_split, cfg.seeds = cc.validation_split, cc.get('tune_seeds', 1)
  else:
    cfg.seeds = cc.seeds
  return cfg


def ablation_overrides(cc, run: Run, cfg) -> dict:
  """The overrides of `run`'s ablation: the method's (`registry.ablation_overrides`), or
  the comparison's own `ablation_definitions[name]` (a setting, `field=value; ...`) where
  it pins an earlier definition (so that a finished comparison stays reproducible when a
  method's ablation changes); fields as the schema names them now."""
  pinned = (cc.get('ablation_definitions') or {}).get(run.ablation) if run.ablation else None
  if pinned is not None:
    return setting_fields(pinned, run.method)
  from msmgan_jax.methods import registry  # pylint: disable=g-import-not-at-top
  return registry.ablation_overrides(run.method, run.ablation, cfg)


def setting_fields(text: str, method: str) -> dict:
  """A setting's overrides for a run of `method`, fields as the schema names them now
  (`parse_setting`, `registry.current_fields`)."""
  from msmgan_jax.methods import registry  # pylint: disable=g-import-not-at-top
  return registry.current_fields(parse_setting(text), method)


def copy_config(cfg):
  """An unlocked deep copy (`config.copy_config`)."""
  from msmgan_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  return config_lib.copy_config(cfg)


TEACHER_RECORDS = os.path.join('results', 'teacher')  # committed teacher runs (README).


def restore_teacher(cc) -> Optional[str]:
  """A fresh checkout: where `teacher_workdir` is missing or empty and the shared teacher's
  committed record (TEACHER_RECORDS/<its name>: config, summary, anchors) trained this very
  teacher config, the record is copied there, so that neither a run nor --report trains the
  teacher again (75 minutes on 2 cores) and no later run distils from a retrained teacher
  that could differ from the one the recorded runs had. Returns None when there is nothing
  to restore or it was restored, else why the record was not used (for the error raised
  where a teacher is then missing: --report)."""
  from msmgan_jax.training import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  wd = cc.teacher_workdir
  record = os.path.join(TEACHER_RECORDS, os.path.basename(os.path.normpath(wd)))
  if (os.path.exists(wd) and os.listdir(wd)) or not os.path.isdir(record):
    return None
  done = _summary(record) or {}
  anchors = (done.get('teacher') or {}).get('anchors') or []
  missing = [a['epoch'] for a in anchors if not os.path.isdir(
      os.path.join(record, 'checkpoints', 'anchors', str(a['epoch'])))]
  if not anchors or missing or not os.path.exists(os.path.join(record, 'config.json')):
    why = (f'its record in {record} is incomplete (a config.json, a summary.json naming '
           f'anchors and their checkpoints/anchors/<epoch> folders are needed'
           + (f'; missing anchors {missing}' if missing else '') + ')')
    print(f'compare: {why}', flush=True)
    return why
  if not workdir_lib.same_run(workdir_lib.Workdir(record).read_config(),
                              json.loads(cc.teacher.to_json())):
    why = f'its record in {record} trained another teacher config than this comparison\'s'
    print(f'compare: {why}, so it is not restored', flush=True)
    return why
  shutil.copytree(record, wd, dirs_exist_ok=True)
  print(f'compare: the shared teacher restored into {wd} from its committed record {record}',
        flush=True)
  return None


def _summary(workdir: str) -> Optional[dict]:
  """The run's summary.json in `workdir` (None while it is not finished)."""
  return io.read_json(os.path.join(workdir, 'summary.json'))


def check_with_main_settings(cc, chosen: dict) -> None:
  """Raises ConfigError where a chosen setting ({method: setting or None}, e.g. read from
  `settings_from`) changes a field of a budget whose `with_main` names that method: its
  main run would no longer run under the budget's setting."""
  from msmgan_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  for name, b in (cc.get('budgets', {}) or {}).items():
    fixed = set(parse_setting(b.setting))
    for m in b.get('with_main', ()):
      clash = sorted(fixed & set(parse_setting(chosen.get(m) or '')))
      if clash:
        raise config_lib.ConfigError(
            f'the setting chosen for {m} ({chosen[m]!r}) changes {clash}, fields of '
            f'budgets.{name}.setting; {m}\'s main run cannot join that budget\'s table '
            '(with_main): drop it from with_main or run it at the budget')


def choose(cc, root: str) -> dict:
  """Each method's setting: its tuning candidate with the best validation accuracy (ties:
  the earlier one); None for a method whose tuning is not finished. With `settings_from`,
  the settings that comparison chose."""
  if cc.get('settings_from'):
    with open(cc.settings_from) as f:
      there = json.load(f)['chosen']
    return {m: there.get(m) for m in cc.methods}
  chosen = {}
  for m, accs in tuning_accuracies(cc, root).items():
    means = [None if a is None else float(np.mean(a)) for a in accs]
    chosen[m] = None if None in means else cc.tuning[m][int(np.argmax(means))]
  return chosen


def tuning_accuracies(cc, root: str) -> dict:
  """{method: per candidate, its seeds' last-step accuracies on `validation_split` (None:
  not finished)}. Only validation numbers: a tuning run evaluated on any other split
  (the test split, say) is refused with a ConfigError, so no test number can choose."""
  from msmgan_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  out = {}
  for m in cc.methods:
    out[m] = []
    for i in range(len(cc.tuning[m])):
      wd = Run('tune', f'tune/{m}/{i}', m, candidate=i).workdir(root)
      s = _summary(wd)
      if s is None:
        out[m].append(None)
        continue
      with open(os.path.join(wd, 'config.json')) as f:
        split = json.load(f)['dataset']['test_split']
      if split != cc.validation_split:
        raise config_lib.ConfigError(
            f'tune/{m}/{i}: {wd} was evaluated on {split!r}, not on the validation split '
            f'{cc.validation_split!r}; a choice is made on validation only: move it away')
      st = s['student']
      out[m].append([float(a) for a in st.get('test_accuracies', [st['test_accuracy']])])
  return out


def validation_scores(cc, root: str) -> dict:
  """{method: the mean validation accuracy of its chosen candidate, or None}."""
  chosen, accs = choose(cc, root), tuning_accuracies(cc, root)
  return {m: (None if chosen[m] is None else
              float(np.mean(accs[m][list(cc.tuning[m]).index(chosen[m])])))
          for m in cc.methods}


def paired_difference(a: dict, b: dict, level: float = 0.95) -> Optional[dict]:
  """The seed-paired difference of two final runs' accuracies, in points: `a` minus `b`
  over the seeds both ran (rows with 'seeds' and 'accuracies'). Seed i of both methods
  starts from the same data order and initialisation stream, so the pairs share much of
  their noise. Returns {'mean', 'low', 'high', 'n'} with the Student-t interval
  mean +- t_{n-1} sd / sqrt(n) at `level`; None with fewer than 2 shared seeds."""
  import scipy.stats  # pylint: disable=g-import-not-at-top
  mine = dict(zip(a['seeds'], a['accuracies']))
  theirs = dict(zip(b['seeds'], b['accuracies']))
  seeds = [s for s in mine if s in theirs]
  if len(seeds) < 2:
    return None
  d = 100 * np.array([mine[s] - theirs[s] for s in seeds])
  half = float(scipy.stats.t.ppf(0.5 + level / 2, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))
  return {'mean': float(d.mean()), 'low': float(d.mean() - half), 'high': float(d.mean() + half),
          'n': len(d)}


def sample_std(values) -> float:
  """The sample standard deviation (ddof 1: the n - 1 divisor) of `values`, the spread the
  tables give after "+-"; 0.0 for a single value (no spread can be estimated from one)."""
  return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def paired_differences(a: dict, b: dict) -> Optional[list]:
  """The per-seed differences `a` minus `b` in points over the seeds both ran (rows with
  'seeds' and 'accuracies'), in `a`'s seed order; None with fewer than 2 shared seeds."""
  theirs = dict(zip(b['seeds'], b['accuracies']))
  d = [100 * (acc - theirs[s]) for s, acc in zip(a['seeds'], a['accuracies']) if s in theirs]
  return d if len(d) >= 2 else None


def family(cc, rows: list, main: Optional[list] = None) -> dict:
  """The Holm-corrected seed-paired comparisons of one table (`_final_table`'s columns for
  `rows`, with `main` its "vs itself" column): every distinct pair of runs the table
  compares (a pair shown twice, as vs kd in one row and vs the best baseline in another,
  counts once), corrected together (`holm.corrected`, family-wise 5%). Returns
  {(a name, b name): {'mean', 'low', 'high', 'holm_low', 'holm_high', 'holm_level',
  'holm_rejected', 'n', 'm'}} with both orders of each pair (the mirrored one negated), in
  points; pairs with fewer than 2 shared seeds are left out and not counted in m."""
  from msmgan_jax.lab import holm  # pylint: disable=g-import-not-at-top
  pairs = {}
  for a, b in _table_pairs(cc, rows, main):
    if a is not b and (b['name'], a['name']) not in pairs:
      pairs.setdefault((a['name'], b['name']), paired_differences(a, b))
  made = {k: d for k, d in pairs.items() if d is not None}
  out = {}
  for (a, b), c in zip(made, holm.corrected(list(made.values()))):
    c = {**c, 'm': len(made)}
    out[(a, b)] = c
    out[(b, a)] = {**c, 'mean': -c['mean'], 'low': -c['high'], 'high': -c['low'],
                   'holm_low': -c['holm_high'], 'holm_high': -c['holm_low']}
  return out


def _table_pairs(cc, rows: list, main: Optional[list] = None) -> list:
  """(row, opponent) for every comparison cell of `_final_table(cc, rows, main)`."""
  by_method = {r['method']: r for r in rows if not r['ablation']}
  best, kd = best_baseline(cc, rows), by_method.get('kd')
  same = {r['method']: r for r in main or () if not r['ablation'] and not r.get('budget')}
  out = []
  for r in rows:
    out += [(r, o) for o in (kd, best) if o is not None and o is not r]
    if main is not None and r.get('budget') and same.get(r['method']) is not None:
      out.append((r, same[r['method']]))
  # The verdict's named opponents (`target.against`) are judged in this family too.
  ours = next((r for r in rows if r['method'] == cc.get('ours', 'msmgan')
               and not r['ablation']), None)
  named = [a for a in (cc.get('target') or {}).get('against', ()) if a != BEST]
  out += [(ours, by_method[a]) for a in named if ours is not None and a in by_method]
  return out


def unpaired_difference(a: dict, b: dict, level: float = 0.95) -> Optional[dict]:
  """The difference of two runs' mean accuracies, in points, `a` minus `b`, when their seeds
  share nothing (our run against the PyTorch check: another framework draws other random
  numbers from the same seed, so pairing seed i with seed i removes no noise). Returns
  {'mean', 'low', 'high'} with Welch's unequal-variance Student-t interval at `level`
  (scipy.stats.ttest_ind, equal_var=False); None with fewer than 2 accuracies on a side."""
  import scipy.stats  # pylint: disable=g-import-not-at-top
  x, y = np.asarray(a['accuracies'], float), np.asarray(b['accuracies'], float)
  if len(x) < 2 or len(y) < 2:
    return None
  ci = scipy.stats.ttest_ind(x, y, equal_var=False).confidence_interval(level)
  return {'mean': 100 * float(x.mean() - y.mean()), 'low': 100 * float(ci.low),
          'high': 100 * float(ci.high)}


# Results ------------------------------------------------------------------------------
def _curve(workdir: str) -> list:
  """The student's test evaluations: [(images seen, wall s or None, mean accuracy)], in order."""
  path = os.path.join(workdir, 'metrics.jsonl')
  points = {}
  with open(path) as f:
    for line in f:
      r = json.loads(line)
      if r['split'] == 'test' and r['phase'] != 'teacher':
        key = (r['stage'], r['phase'], r['step'])
        p = points.setdefault(key, {'epoch': r['epoch'], 'wall': [], 'acc': []})
        p['acc'].append(r['accuracy'])
        if 'wall_s' in r:
          p['wall'].append(r['wall_s'])
  return [(p['epoch'], max(p['wall']) if p['wall'] else None, float(np.mean(p['acc'])))
          for p in points.values()]


def result(cc, run: Run, root: str) -> Optional[dict]:
  """The row of a finished run (None while it is not finished)."""
  wd = run.workdir(root)
  s = _summary(wd)
  if s is None:
    return None
  st = s['student']
  phases = [p for stage in st['stages'] for p in stage['phases']]
  from msmgan_jax.training import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  cfg = workdir_lib.Workdir(wd).read_config()  # fields added since the run filled in as it ran.
  accs = st.get('test_accuracies', [st['test_accuracy']])
  train_s = sum(p['wall_s'] for p in phases)
  images = sum(p['steps'] for p in phases) * cfg['batch_size'] * len(accs)
  import ml_collections  # pylint: disable=g-import-not-at-top
  fixed = ablation_overrides(cc, run, ml_collections.ConfigDict(cfg))
  if run.budget:
    fixed.update(setting_fields(cc.budgets[run.budget].setting, run.method))
  return {'name': run.name, 'kind': run.kind, 'method': run.method, 'ablation': run.ablation,
          'budget': run.budget, 'candidate': run.candidate, 'variant': s.get('variant', []),
          'setting': (cc.tuning[run.method][run.candidate] if run.kind == 'tune'
                      else _setting_of(cc, cfg, fixed)),
          'split': cfg['dataset']['test_split'], 'seeds': st.get('seeds', [cfg['seed']]),
          'accuracies': accs, 'mean': float(np.mean(accs)), 'std': sample_std(accs),
          'wall_s': st['wall_s'], 'images_per_s': round(images / max(train_s, 1e-9), 1),
          'curve': _curve(wd), 'workdir': wd, 'machine': st.get('machine')}


def _setting_of(cc, cfg: dict, ablated: dict) -> str:
  """The tuning candidate a final run's config carries (by value): of the candidates whose
  every field it has (but the fields its ablation sets), the one naming the most of those
  it has ('' matches any config): a candidate that differs from another only in a field the
  ablation sets is not the one the run carries."""
  kept = lambda t: {k: v for k, v in setting_fields(t, cfg['method']).items() if k not in ablated}
  matches = [t for t in cc.tuning[cfg['method']] if all(
      _get(cfg, k) == (list(v) if isinstance(v, tuple) else v) for k, v in kept(t).items())]
  return max(matches, key=lambda t: len(kept(t))) if matches else '?'


def _get(cfg: dict, path: str):
  for part in path.split('.'):
    cfg = cfg[part]
  return cfg


def _fmt_setting(text: str) -> str:
  return text.replace('|', '/') if text else 'defaults'


def _ci(d: Optional[dict]) -> str:
  return '-' if d is None else f'{d["mean"]:+.2f} [{d["low"]:+.2f}, {d["high"]:+.2f}]'


def _ci_holm(d: Optional[dict]) -> str:
  """A cell of the tables: the paired mean with its 95% interval, then its Holm-corrected
  interval over the table's family (`family`); '-' where no comparison can be made."""
  if d is None:
    return '-'
  return f'{_ci(d)}; Holm [{d["holm_low"]:+.2f}, {d["holm_high"]:+.2f}]'


def budget_rows(cc, rows: list, budget: str) -> list:
  """The final rows of `budget`'s table: its own runs, then the main-budget rows of the
  methods in its `with_main` (runs that already use the budget's setting, e.g. a method whose
  defaults start from an anchor, against baselines given the same start)."""
  b = cc.budgets[budget]
  joined = set(b.get('with_main', ()))
  return [r for r in rows if r.get('budget') == budget] + [
      r for r in rows if not r.get('budget') and not r['ablation'] and r['method'] in joined]


def best_baseline(cc, rows: list) -> Optional[dict]:
  """Of the final rows at one budget, the baseline (not `ours`, not an ablation) with the
  highest test mean: the hardest comparison for ours, named in the table. This picks a
  column to report, never a setting: every setting was chosen on validation."""
  ours = cc.get('ours', 'msmgan')
  base = [r for r in rows if r['method'] != ours and not r['ablation']]
  return max(base, key=lambda r: r['mean']) if base else None


def _final_table(cc, rows: list, main: Optional[list] = None) -> list:
  """The rows of one budget: mean +- sample std, per seed, the difference of means to ce,
  the seed-paired difference (95% interval, then its Holm-corrected interval over the
  table's `family`) to kd and to the best baseline, time, speed. With `main` (the main
  budget's final rows; for an extra budget's table), a column more: each budget run's
  seed-paired difference to the same method's main run, what the budget's setting itself is
  worth (30 epochs against 15, a start against random)."""
  by_method = {r['method']: r for r in rows if not r['ablation']}
  best = best_baseline(cc, rows)
  same = {r['method']: r for r in main or () if not r['ablation'] and not r.get('budget')}
  fam = family(cc, rows, main)
  cell = lambda r, o: _ci_holm(fam.get((r['name'], o['name'])))
  lines = ['| run | method | setting (chosen on validation) | test accuracy | per seed | '
           'vs ce | vs kd: paired 95% CI; Holm | vs best baseline'
           + (f' ({best["name"]})' if best else '') + ': paired 95% CI; Holm'
           + (' | vs itself at the main budget: paired 95% CI; Holm' if main is not None else '')
           + ' | wall s | images/s |',
           '|---|---|---|---|---|---|---|---|' + ('---|' if main is not None else '')
           + '---|---|']
  for r in rows:
    ce, kd = by_method.get('ce'), by_method.get('kd')
    vs_ce = '-' if ce is None or ce is r else f'{100 * (r["mean"] - ce["mean"]):+.2f}'
    vs_kd = '-' if kd is None or kd is r else cell(r, kd)
    vs_best = '-' if best is None or best is r else cell(r, best)
    vs_self = ''
    if main is not None:
      own = same.get(r['method']) if r.get('budget') else None
      vs_self = f' {cell(r, own) if own else "-"} |'
    lines.append(f'| {r["name"]} | {r["method"]}{" (" + r["ablation"] + ")" if r["ablation"] else ""}'
                 f' | {_fmt_setting(r["setting"])} | {r["mean"]:.4f} +- {r["std"]:.4f} | '
                 f'{", ".join(f"{a:.4f}" for a in r["accuracies"])} | {vs_ce} | {vs_kd} | '
                 f'{vs_best} |{vs_self} {r["wall_s"]:.0f} | {r["images_per_s"]:.0f} |')
  m = max((c['m'] for c in fam.values()), default=0)
  if m:
    lines += ['', f'Holm: each interval corrected over this table\'s {m} distinct seed-paired '
              'comparisons (family-wise error 5%).']
  return lines


def _defaults_note(cc) -> list:
  """['', a sentence] naming what "defaults" holds for a method with `method_defaults`
  (say, msmgan's design-study choice); [] where no method has any."""
  own = {m: t for m, t in (cc.get('method_defaults') or {}).items() if t}
  if not own:
    return []
  return ['', 'Every setting of ' + '; every setting of '.join(
      f'{m} (its candidates, final, ablation and budget runs) applies on top of its '
      f'method_defaults `{t}`, which are its candidate 0 ("defaults") in place of its paper '
      'defaults' for m, t in own.items()) + '.']


def verdict(cc, rows: list) -> list:
  """The `## Verdict` lines of compare.md: where the config sets a `target` ({'margin':
  points, 'against': ('best' | method names)}), whether `ours` meets it in the main table
  (the target proper) and, the same way, in each budget table that holds ours' main run
  (`with_main`; 'best' there is the best of that table's own runs, a named method its run
  at that budget, where the budget runs it). For each opponent: the seed-paired difference
  in points with its 95% interval and its Holm-corrected one over the table's `family`;
  "met" only where every opponent's mean reaches the margin and its corrected interval's
  low end is above zero; "provisional" while an opponent that
  could still change the answer has not run ('best': any baseline of the table), unless the
  answer is already settled: a named opponent that ran and is short, or ours' mean short of
  the margin against the best baseline so far, both having run all `seeds` (a baseline
  still to run either stays below that one or, running the same seeds, has a higher mean
  and so a smaller paired mean difference); then "not met" says so and what is still to
  run, and an opponent that cannot be judged does not undo it.
  "cannot be judged" with fewer than 2 shared seeds. Mechanical: the words follow from the
  numbers. [] without a target or in a design study."""
  target = cc.get('target')
  if not target or cc.get('tune_only'):
    return []
  ours, margin = cc.get('ours', 'msmgan'), float(target.margin)
  against = tuple(target.against)
  names = ' and '.join('the best baseline' if a == BEST else a for a in against)
  lines = ['', '## Verdict', '',
           f'Target: {ours} above {names}' + (f' by at least {margin:.2f} points' if margin
                                               else '')
           + ', each seed-paired interval above zero after Holm\'s correction over its '
           'table\'s comparisons; judged on the main budget. A budget '
           f'table that holds {ours}\'s main run is judged the same way against its own '
           'runs.', '']
  mine = next((r for r in rows if r['method'] == ours and not r['ablation']
               and not r.get('budget')), None)
  tables = [('main budget', None, [m for m in cc.methods if m != ours])]
  for name, b in (cc.get('budgets', {}) or {}).items():
    if ours in b.get('with_main', ()):
      tables.append((b.get('title', name), name, list(b.methods)))
  main_rows = [r for r in rows if not r.get('budget')]
  for title, budget, expected in tables:
    if budget is None:
      others = [r for r in rows if not r.get('budget') and not r['ablation']
                and r['method'] != ours]
      fam = family(cc, main_rows)
    else:
      others = [r for r in budget_rows(cc, rows, budget) if r is not mine and not r['ablation']]
      fam = family(cc, budget_rows(cc, rows, budget), main_rows)
    ran = {r['method'] for r in others if r.get('budget') == budget}
    opponents = [a for a in against if a == BEST or a in expected or budget is None]
    if mine is None or not others or not opponents:
      if opponents:
        lines.append(f'- {title}: not run yet.')
      continue
    # best_other counts as run once the budget holds a run of a method it does not name.
    waiting = [m for m in (expected if BEST in opponents else opponents)
               if not (ran - set(expected) if m == BEST_OTHER else m in ran)]
    parts, met, judged, settled = [], True, True, []
    for a in opponents:
      opp = best_baseline(cc, others) if a == BEST else next(
          (r for r in others if r['method'] == a and r.get('budget') == budget), None)
      if opp is None:
        parts.append(f'vs {a}: not run yet')
        met = False
        continue
      d = fam.get((mine['name'], opp['name']))
      which = (f' (the best of {", ".join(r["name"] for r in others)})'
               if a == BEST and len(others) > 1 else '')
      if d is None:
        parts.append(f'vs {opp["name"]}{which}: fewer than 2 shared seeds')
        judged = False
        continue
      ok = round(d['mean'], 6) >= margin and d['holm_low'] > 0
      met = met and ok
      parts.append(f'vs {opp["name"]}{which} {_ci_holm(d)}' + ('' if ok else ' (short)'))
      if ok:
        continue
      if a != BEST:  # a named opponent's run is final.
        settled.append(f'vs {opp["name"]} is final')
      elif (round(d['mean'], 6) < margin
            and d['n'] == len(mine['seeds']) == len(opp['seeds']) == cc.seeds):
        settled.append('a baseline still to run can only raise the best baseline\'s mean')
    if settled and waiting:  # short already, whatever the runs still to come score.
      word = (f'**not met** (settled: {settled[0]}; not run yet: {", ".join(waiting)})')
    elif settled:  # one opponent's shortfall decides it, whatever another could not judge.
      word = '**not met**'
    elif waiting:  # an opponent still to run may change the answer.
      word = f'**provisional** (not run yet: {", ".join(waiting)})'
    elif not judged:
      word = '**cannot be judged** (fewer than 2 shared seeds)'
    else:
      word = f'**{"met" if met else "not met"}**'
    lines.append(f'- {title}: ' + '; '.join(parts) + f': {word}.')
  return lines


def _same_start(torch_row: dict, rows: list) -> Optional[dict]:
  """Our final run (no ablation) of the PyTorch row's method from its start (`init`:
  'random', or '<init>:anchors/<epoch>'), preferring the main budget; None without one."""
  from msmgan_jax.training import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  want = torch_row.get('init', 'random')
  for r in sorted((r for r in rows if r['method'] == torch_row['method'] and not r['ablation']
                   and r['kind'] == 'final'), key=lambda r: r.get('budget') is not None):
    cfg = workdir_lib.Workdir(r['workdir']).read_config()
    st = cfg['student']
    if st['init'] == 'random':
      start = 'random'
    else:
      path = st.get('init_checkpoint') or (cfg['teacher']['checkpoints'][
          0 if st['init'] == 'first_anchor' else -1] if cfg['teacher']['checkpoints'] else '')
      start = f'{st["init"]}:anchors/{os.path.basename(os.path.normpath(path))}'
    if start == want:
      return r
  return None


def markdown(cc, rows: list, tuning: list, chosen: dict, torch_rows: list, machine: str,
             teacher: Optional[dict] = None) -> str:
  """compare.md: the final table of each budget (mean +- std, the paired differences to kd
  and to the best baseline with 95% intervals, time, speed) and the tuning table."""
  main = [r for r in rows if not r.get('budget')]
  finals = {r['name']: r for r in main}
  about = ''
  if teacher:
    about = (f' Teacher: {teacher["model"]} ({teacher["params"]:,} parameters), test accuracy '
             f'{teacher["test_accuracy"]:.4f}; anchors ' + ', '.join(
                 f'epoch {a["epoch"]} {a["test_accuracy"]:.4f}' for a in teacher['anchors']) + '.')
  lines = [f'# {cc.title}', '', cc.description.strip() + about, '',
           f'Machine: {machine}. Command: `python -m msmgan_jax.compare --config {cc.config_path}`.',
           '']
  if cc.get('tune_only'):  # a design study: validation runs only, no test numbers at all.
    lines.append('A design study on the validation split only: no run here is tested on the '
                 'test split.')
  else:
    lines += [f'Test accuracy on `{cc.base.dataset.test_split}` after the last step, mean +- '
              f'std over {cc.seeds} seeds (sample std, n - 1 divisor). vs ce: the difference of '
              'means, in points. vs kd and vs the best baseline (the baseline with the highest '
              'test mean, the hardest comparison): the mean of the per-seed differences (seed '
              'i against seed i) with its 95% Student-t interval, in points, then ("Holm") '
              'that interval corrected for the number of comparisons in the table (Holm\'s '
              'step-down procedure, family-wise error 5%); a corrected interval above zero '
              'is a win the seeds can tell apart, the uncorrected one alone is not. Wall '
              'time: the student runs of all seeds '
              'together (one program); images/s: student images trained per second of '
              'training, all seeds, compilation and evaluations included.', '']
    lines += _final_table(cc, main)
    lines += _defaults_note(cc)
  pending = [n for n in [*cc.methods, *(f'msmgan_{a}' for a in cc.ablations)] if n not in finals]
  if pending and not cc.get('tune_only'):
    lines += ['', f'Not run yet: {", ".join(pending)}.']
  lines += verdict(cc, rows)
  scores = {}  # each method's chosen candidate's mean validation accuracy: names best_other.
  for t in tuning:
    pick = chosen.get(t['method'])
    if (t.get('mean') is not None and pick is not None and t.get('candidate') is not None
        and list(cc.tuning[t['method']]).index(pick) == t['candidate']):
      scores[t['method']] = t['mean']
  for name, b in (cc.get('budgets', {}) or {}).items():
    at = budget_rows(cc, rows, name)
    joined = tuple(b.get('with_main', ()))
    named = budget_methods(cc, name, scores=scores)
    missing = [f'{m}@{name}' for m in named if not any(r['name'] == f'{m}@{name}' for r in at)]
    if len(named) < len(b.methods):  # best_other, not yet named.
      missing.append(f'{BEST_OTHER}@{name} (named once every tuning run has finished)')
    missing += [m for m in joined if not any(r['name'] == m for r in at)]
    if not any(r.get('budget') == name for r in at):
      at = []  # main rows alone are no comparison at this budget.
    lines += ['', f'## {b.get("title", name)}', '',
              f'The same settings (chosen at the main budget) with `{b.setting}`. '
              + (f'{BEST_OTHER} is the baseline not named in '
                 f'{tuple(m for m in b.methods if m != BEST_OTHER)} whose chosen candidate '
                 'scored best on validation. ' if BEST_OTHER in b.methods else '')
              + 'vs itself at the main budget: a budget '
              'run against the same method\'s main run, seed by seed (what the setting itself '
              'is worth).'
              + (f' The rows of {", ".join(joined)} are their main runs, repeated here: '
                 'they already run with this setting.' if joined else ''), '']
    lines += _final_table(cc, at, main) if at else ['Not run yet.']
    if at and missing:
      lines += ['', f'Not run yet: {", ".join(missing)}.']
  if torch_rows:
    lines += ['', '## Independent check (PyTorch, same networks, recipe and slice)', '',
              'difference: ours minus PyTorch, in points, with Welch\'s 95% interval (unpaired: '
              'the two frameworks draw different random numbers from the same seed); an '
              'interval that holds zero is an agreement the seeds cannot tell apart.', '',
              'Each PyTorch row is set against our final run of that method from the same '
              'start (`student.init`: random, or the anchor named, whose selected weights '
              'both frameworks start from).', '',
              '| method | start | test accuracy | per seed | ours (JAX) | difference: 95% CI |',
              '|---|---|---|---|---|---|']
    for t in torch_rows:
      ours = _same_start(t, rows)
      d = unpaired_difference(ours, t) if ours else None
      lines.append(f'| {t["method"]} | {t.get("init", "random")} | '
                   f'{t["mean"]:.4f} +- {sample_std(t["accuracies"]):.4f} | '
                   f'{", ".join(f"{a:.4f}" for a in t["accuracies"])} | '
                   + (f'{ours["mean"]:.4f} +- {ours["std"]:.4f} | '
                      + (f'{d["mean"]:+.2f} [{d["low"]:+.2f}, {d["high"]:+.2f}]' if d else
                         f'{100 * (ours["mean"] - t["mean"]):+.2f}')
                      if ours else '- | -') + ' |')
  if cc.get('settings_from'):
    lines += ['', '## Settings', '', f'No tuning here: every method uses the setting chosen on '
              f'the validation split of `{cc.settings_from}`\'s comparison, the same tuning '
              'effort for every method:', '']
    lines += [f'- {m}: {_fmt_setting(chosen.get(m) or "")}' for m in cc.methods]
    return '\n'.join(lines) + '\n'
  tune_seeds = cc.get('tune_seeds', 1)
  seeds_text = 'one seed' if tune_seeds == 1 else f'{tune_seeds} seeds'
  lines += ['', f'## Tuning (validation split `{cc.validation_split}`, {seeds_text} per candidate)',
            '', (cc.get('design_note') or
                 f'Every method gets the same {len(cc.tuning[cc.methods[0]])} candidate settings, '
                 f'each trained with {seeds_text}, candidate 0 its paper defaults'
                 + (' (or its method_defaults, below)' if _defaults_note(cc) else '')
                 + '; the best mean '
                 'validation accuracy wins (ties: the earlier). Ablations use msmgan\'s choice.'),
            *_defaults_note(cc),
            '', '| method | candidate | setting | validation accuracy | per seed | chosen |',
            '|---|---|---|---|---|---|']
  for t in tuning:
    mark = 'yes' if chosen.get(t['method']) == t['setting'] else ''
    acc = '-' if t.get('mean') is None else f'{t["mean"]:.4f}'
    per = ', '.join(f'{a:.4f}' for a in t.get('accuracies') or []) or '-'
    lines.append(f'| {t["method"]} | {t["candidate"]} | {_fmt_setting(t["setting"])} | {acc} | '
                 f'{per} | {mark} |')
  return '\n'.join(lines) + '\n'


def plots(out: str, rows: list, split: str = 'test') -> list:
  """accuracy_vs_images.png and accuracy_vs_wall.png: each final run's mean test accuracy,
  the whole run on the left and, on the right, its last 40% where the finals part ways.
  Each run has its own colour, but a budget run (`kd@epochs30`) takes its method's main run's
  colour, dotted with triangles; msmgan's runs are drawn thicker and ablations dashed. On the wall
  time plot a run that shared the machine (`report.machine_share` of its row's `machine`,
  the load its summary recorded: slower than alone) is drawn with crosses and named
  '(shared the machine)' in the legend; one recorded before the load was, with hollow
  markers and '(load unknown)'."""
  from msmgan_jax.lab import report  # pylint: disable=g-import-not-at-top
  plt = report.pyplot()
  mains = [r['name'] for r in rows if not r.get('budget')]
  own = [r['name'] for r in rows if r.get('budget') and r['method'] not in mains]
  palette = plt.get_cmap('tab20' if len(mains) + len(own) > 10 else 'tab10').colors
  index = {n: i for i, n in enumerate(mains + own)}
  colour_of = lambda r: palette[index[r['name'] if r['name'] in index else r['method']]
                                % len(palette)]
  written = []
  for x, name, label in ((0, 'accuracy_vs_images.png', 'epochs of the train split seen'),
                         (1, 'accuracy_vs_wall.png', 'student wall time, s (all seeds)')):
    fig, (whole, end) = plt.subplots(1, 2, figsize=(12, 4.8),
                                     gridspec_kw={'width_ratios': [1, 1.3]})
    tail, starts, shares = [], [], set()
    for r in rows:
      pts = [p for p in r['curve'] if p[x] is not None]
      if not pts:
        continue
      starts.append(0.6 * max(p[x] for p in pts))
      tail += [p[2] for p in pts if p[x] >= starts[-1]]
      style = {'marker': '^' if r.get('budget') else 'o' if r['ablation'] else 's', 'ms': 3}
      share, colour = 'alone', colour_of(r)
      if x == 1:  # wall time: mark runs that shared the machine, or may have.
        share = report.machine_share({'student': {'machine': r.get('machine')}})
        shares.add(share)
        if share == 'shared':
          style = {'marker': 'X', 'ms': 7}
        elif share == 'unknown':
          style.update(ms=5, mfc='none')
      note = report.SHARE_NOTES[share]
      for ax in (whole, end):
        ax.plot([p[x] for p in pts], [p[2] for p in pts], **style,
                lw=2.2 if not r['ablation'] and (r['name'] == 'msmgan' or (
                    r.get('budget') and r['method'] == 'msmgan')) else 1,
                ls='--' if r['ablation'] else ':' if r.get('budget') else '-',
                color=colour, label=r['name'] + (f' ({note})' if note else ''))
    lo = min([p[2] for r in rows for p in r['curve']] or [0])
    whole.set_ylim(bottom=max(0.0, lo - 0.02))
    title = 'the last 40%'
    if tail:  # at most 0.06 of accuracy deep, so a run far behind does not flatten the rest.
      bottom = max(min(tail) - 0.005, max(tail) - 0.06)
      end.set_xlim(left=min(starts))
      end.set_ylim(bottom, max(tail) + 0.005)
      if bottom > min(tail) - 0.005:
        title += f' (below {bottom:.3f}: off the scale)'
    end.set_title(title, fontsize=9)
    marks = [m for s, m in (('shared', 'crosses: shared the machine (mean 1-minute load > '
                                       f'cores + {report.SHARED_LOAD_MARGIN}), slower'),
                            ('unknown', 'hollow: load unknown (not recorded)')) if s in shares]
    if marks:
      fig.suptitle('; '.join(marks), fontsize=9)
    for ax in (whole, end):
      ax.set_xlabel(label); ax.grid(alpha=0.3)
    whole.set_ylabel(f'{split} accuracy (mean over seeds)')
    end.legend(fontsize=7, ncol=2, loc='lower right')
    fig.tight_layout(rect=(0, 0, 1, 0.96 if marks else 1))
    fig.savefig(os.path.join(out, name), dpi=120); plt.close(fig)
    written.append(name)
  return written


def write(cc, root: str, machine: str, recorded: Optional[dict] = None) -> dict:
  """Rewrites compare.json, compare.md and the plots in `cc.out` from the finished runs;
  `recorded` is the comparison config compare.json holds (see `config_record`)."""
  runs = plan(cc, root)
  done = {r.name: result(cc, r, root) for r in runs}
  tuning = [done[r.name] or {'method': r.method, 'candidate': r.candidate,
                             'setting': cc.tuning[r.method][r.candidate], 'mean': None}
            for r in runs if r.kind == 'tune']
  rows = [done[r.name] for r in runs if r.kind == 'final' and done[r.name]]
  chosen = choose(cc, root)
  torch_rows = []
  torch_file = os.path.join(cc.out, 'torch_check.json')
  if os.path.exists(torch_file):
    torch_rows = json.load(open(torch_file))['rows']
  os.makedirs(cc.out, exist_ok=True)
  from msmgan_jax.lab import report  # pylint: disable=g-import-not-at-top
  for r in runs:  # each finished run's record, so the tables' claims can be checked.
    if done[r.name]:
      dest = os.path.join(cc.out, 'runs', r.name)
      os.makedirs(dest, exist_ok=True)
      for f in report.FILES:
        shutil.copyfile(os.path.join(done[r.name]['workdir'], f), os.path.join(dest, f))
  teacher = (_summary(cc.teacher_workdir) or {}).get('teacher')
  doc = {'title': cc.title, 'machine': machine, 'config': config_record(cc, recorded),
         'teacher': teacher, 'chosen': chosen, 'tuning': tuning, 'runs': rows}
  io.write_json(os.path.join(cc.out, 'compare.json'), doc)
  io.write_text(os.path.join(cc.out, 'compare.md'),
                   markdown(cc, rows, tuning, chosen, torch_rows, machine, teacher))
  if cc.get('tune_only'):  # a design study plots its candidates' validation curves.
    curves, split = [t for t in tuning if t.get('curve')], 'validation'
  else:
    curves, split = rows, 'test'
  if curves:
    plots(cc.out, curves, split)
  return doc


def config_record(cc, recorded: Optional[dict]) -> dict:
  """What compare.json records of the comparison config: `cc` as JSON, or `recorded` (the
  record there, written by an earlier version) where it is this very comparison read
  through today's schema (its base and teacher configs as `workdir.as_schema_now` reads a
  recorded config), so that --report keeps the record the runs were made under, as it
  keeps their machine line."""
  from msmgan_jax.training import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  mine = json.loads(cc.to_json())
  if not isinstance(recorded, dict) or not all(
      isinstance(recorded.get(k), dict) for k in ('base', 'teacher')):
    return mine
  now = {**recorded, **{k: workdir_lib.as_schema_now(recorded[k]) for k in ('base', 'teacher')}}
  return recorded if now == mine else mine


def machine() -> str:
  import jax  # pylint: disable=g-import-not-at-top
  dev = jax.devices()[0]
  return (f'{platform.machine()} {platform.processor() or ""}'.strip()
          + f', {os.cpu_count()} cores, JAX {jax.__version__} on {dev.platform} ({dev.device_kind})')


def run_all(cc, root: str, report_only: bool = False) -> dict:
  """Runs (or, with `report_only`, only tabulates) the whole comparison; resumable."""
  from msmgan_jax.training import train  # pylint: disable=g-import-not-at-top
  check(cc)
  where = machine()
  if report_only:  # the host that ran the comparison, not the one rewriting its tables.
    doc = io.read_json_or_refuse(os.path.join(cc.out, 'compare.json'),
                                 'move it away and rerun --report to write it anew')
    where = (doc or {}).get('machine') or where
    recorded = (doc or {}).get('config')
  note = restore_teacher(cc)
  t_sum = _summary(cc.teacher_workdir)
  if cc.get('settings_from') and os.path.exists(cc.settings_from):  # missing: named later.
    check_with_main_settings(cc, choose(cc, root))
  if not report_only:
    preflight(cc)
    print(f'compare: the shared teacher in {cc.teacher_workdir}', flush=True)
    t_sum = train.train_and_evaluate(cc.teacher, cc.teacher_workdir)
  if t_sum is None:
    from msmgan_jax import config as config_lib  # pylint: disable=g-import-not-at-top
    hint = 'run the comparison without --report first'
    raise config_lib.ConfigError(f'{cc.teacher_workdir} holds no finished teacher run; '
                                 + (f'{note}; {hint}' if note else hint))
  anchors = []  # the teacher workdir's own anchors (a copied workdir), else the summary's.
  for a in t_sum['teacher']['anchors']:
    here = os.path.join(cc.teacher_workdir, 'checkpoints', 'anchors', str(a['epoch']))
    anchors.append(os.path.abspath(here if os.path.isdir(here) else a['path']))
  if report_only:  # planned anew until adopting runs plans no more: a budget's best_other
    runs, names = plan(cc, root), None  # is named only once the adopted tuning scores it.
    while names != [r.name for r in runs]:
      names = [r.name for r in runs]
      _tabulated_runs_are_planned(cc, runs, root, anchors)
      runs = plan(cc, root)
    return write(cc, root, where, recorded)
  t0 = time.time()
  n, seen = 0, set()
  while True:  # planned anew after each run: a budget's best_other appears once tuned.
    runs = plan(cc, root)
    todo = [r for r in runs if r.name not in seen]
    if not todo:
      break
    run, n = todo[0], n + 1
    seen.add(run.name)
    wd, (cfg, unchosen) = run.workdir(root), _planned_config(cc, run, root, anchors)
    if unchosen:
      if cc.get('settings_from'):
        raise RuntimeError(f'{cc.settings_from} holds no setting chosen for {unchosen}: '
                           'finish that comparison first')
      raise RuntimeError(f'{run.name}: the tuning of {unchosen} is not finished')
    status = 'finished, skipped' if _summary(wd) else 'running'
    print(f'compare [{n}/{len(runs)}] {run.name} ({cfg.seeds} seed{"s" * (cfg.seeds > 1)}, '
          f'{run.kind}): {status}  [{time.time() - t0:.0f}s]', flush=True)
    if status == 'running':
      if run.kind == 'tune' and candidates_together(cc):
        members = program_members(cc, run, root, anchors)
        if len(members) > 1 and run_program(cc, members, root):
          write(cc, root, where)
          continue
      train.train_and_evaluate(cfg, wd)
      write(cc, root, where)
  return write(cc, root, where)


def candidates_together(cc) -> bool:
  """Whether a method's tuning candidates train in one program: `candidates_per_program`
  True or False, or 'auto' (its default): where the device is not a CPU (an accelerator
  that one small student leaves idle; on a CPU a program of R students runs about as fast as
  R runs, the benchmark's --dispatch rows)."""
  how = cc.get('candidates_per_program', 'auto')
  if how == 'auto':
    import jax  # pylint: disable=g-import-not-at-top
    return jax.devices()[0].platform != 'cpu'
  return bool(how)


def program_members(cc, run: Run, root: str, anchors: list) -> list:
  """[(Run, planned config)]: `run` and the other tuning runs of its method that have not
  started (no workdir, nothing recorded to adopt) and can share one program with it (they
  differ from it only in per-run fields, `program_config`), which `run_program` trains
  together; [] where `run` itself has started apart (it resumes as it is)."""
  from msmgan_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  if os.path.exists(run.workdir(root)) and os.listdir(run.workdir(root)):
    return []
  out = []
  for i in range(len(cc.tuning[run.method])):
    r = Run('tune', f'tune/{run.method}/{i}', run.method, candidate=i)
    wd = r.workdir(root)
    if r.name != run.name and os.path.exists(wd) and os.listdir(wd):
      continue  # finished, adopted, or started apart: it resumes (or stays) as it is.
    cfg, unchosen = _planned_config(cc, r, root, anchors)
    if cfg is None or unchosen or _summary(wd) is not None:
      continue
    if out:  # `run` is the first: a member must share a program with it.
      try:
        program_config([out[0], (r, cfg)])
      except config_lib.ConfigError as e:
        print(f'compare: {r.name} trains apart from {run.name}: {e}', flush=True)
        continue
    out.append((r, cfg))
  return out


def program_config(members: list):
  """The config of one program that trains every member's run (`members`: [(Run, its
  planned config)]): the first member's config with `candidates`, each member's fields that
  differ from the first's written as its setting, so that `config.candidate_configs` gives
  back exactly each member's planned config. ConfigError where the members differ in a
  field one program cannot take per run (`config.run_fields`)."""
  from msmgan_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  first = config_lib.flat_fields(json.loads(members[0][1].to_json()))
  texts = []
  for _, cfg in members:
    mine = config_lib.flat_fields(json.loads(cfg.to_json()))
    texts.append('; '.join(f'{f}={mine[f]!r}' for f in sorted(mine)
                           if mine[f] != first.get(f)))
  prog = copy_config(members[0][1])
  prog.candidates = tuple(texts)
  config_lib.validate(prog)
  for (run, cfg), back in zip(members, config_lib.candidate_configs(prog)):
    if json.loads(back.to_json()) != json.loads(cfg.to_json()):  # never expected.
      raise config_lib.ConfigError(f'{run.name}: its candidate setting does not give back its '
                                   'planned config')
  return prog


def program_workdir(root: str, members: list, prog) -> str:
  """Where the program of `members` (config `prog`) trains:
  program/<method>_<candidate indices>_<8 hex digits of its config's hash>, so an edited
  candidate list trains a program of its own instead of meeting another's workdir."""
  import hashlib  # pylint: disable=g-import-not-at-top
  m = members[0][0].method
  digest = hashlib.sha256(prog.to_json(sort_keys=True).encode()).hexdigest()[:8]
  return os.path.join(root, 'program', f'{m}_' + '_'.join(str(r.candidate) for r, _ in members)
                      + f'_{digest}')


def run_program(cc, members: list, root: str) -> bool:
  """Trains the tuning runs `members` of one method in one program (`candidates`,
  `core.runs`) and writes each member's workdir as its own run would have (`split_program`);
  False (nothing trained) where the members cannot share a program, which is then said."""
  from msmgan_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from msmgan_jax.training import train  # pylint: disable=g-import-not-at-top
  try:
    prog = program_config(members)
  except config_lib.ConfigError as e:
    print(f'compare: the candidates of {members[0][0].method} train apart: {e}', flush=True)
    return False
  wd = program_workdir(root, members, prog)
  print(f'compare: {", ".join(r.name for r, _ in members)} train in one program in {wd}',
        flush=True)
  train.train_and_evaluate(prog, wd)
  split_program(wd, members)
  return True


def split_program(program_wd: str, members: list) -> None:
  """Writes, for the k-th of `members` ([(Run-like, planned config)]), into its own workdir
  (`Run.workdir` of the program's root) what its own run would have written: config.json
  (its planned config), metrics.jsonl (its runs' lines, without `candidate`) and
  summary.json (its runs' accuracies, seeds and per-phase accuracies; its share of the
  program's wall time, runs/all runs, there and in the log's `wall_s`, with `program`
  naming the program). With one seed,
  single values, as a run of one seed records them."""
  summary = io.read_json_or_refuse(os.path.join(program_wd, 'summary.json'),
                                   'rerun the comparison to train the program again')
  st = summary['student']
  n_runs = len(st['run_candidates'])
  lines = [json.loads(line) for line in open(os.path.join(program_wd, 'metrics.jsonl'))]
  root = os.path.dirname(os.path.dirname(program_wd))
  for k, (run, cfg) in enumerate(members):
    mine = st['candidates'][k]
    js, share = mine['runs'], len(mine['runs']) / n_runs
    one = len(js) == 1
    pick = lambda v, js=js, one=one: v[js[0]] if one else [v[j] for j in js]
    per_run = ('test_accuracy',)  # the phase record's one value per run (the runner's).
    stages = [{**stage, 'phases': [{key: (round(v * share, 2) if key == 'wall_s' else
                                          pick(v) if key in per_run and isinstance(v, list)
                                          else v)
                                    for key, v in p.items()} for p in stage['phases']]}
              for stage in st['stages']]
    student = {key: v for key, v in st.items() if key not in (
        'candidates', 'run_candidates', 'test_accuracies', 'seeds', 'test_accuracy_std')}
    student.update(stages=stages, test_accuracy=mine['test_accuracy'],
                   wall_s=round(st['wall_s'] * share, 2), checkpoint=mine['checkpoints'][0],
                   program={'workdir': program_wd, 'candidate': k, 'runs': n_runs,
                            'wall_s': st['wall_s'], 'setting': mine['setting']})
    if not one:
      student.update(test_accuracies=mine['test_accuracies'], seeds=mine['seeds'],
                     test_accuracy_std=mine['test_accuracy_std'])
    wd = run.workdir(root)
    os.makedirs(wd, exist_ok=True)
    with open(os.path.join(wd, 'metrics.jsonl'), 'w') as f:
      for r in lines:
        if r.get('candidate', k) != k:
          continue
        r = {key: (round(v * share, 2) if key == 'wall_s' else v) for key, v in r.items()
             if key != 'candidate' and not (one and key == 'seed')}
        f.write(json.dumps(r) + '\n')
    io.write_json(os.path.join(wd, 'config.json'), json.loads(cfg.to_json()))
    io.write_json(os.path.join(wd, 'summary.json'), {
        **summary, 'student': student, 'wall_s': round(summary['wall_s'] * share, 2)})


def _adopt(cc, run: Run, wd: str, cfg) -> None:
  """A run missing from `wd` (a fresh checkout) but recorded in the results folder with
  this very config is finished: its record is copied back instead of training it again."""
  from msmgan_jax.lab import report  # pylint: disable=g-import-not-at-top
  record = os.path.join(cc.out, 'runs', run.name)
  if _summary(wd) is not None or _summary(record) is None or (
      os.path.exists(wd) and os.listdir(wd)):
    return
  if _config_diff(record, cfg):
    return
  os.makedirs(wd, exist_ok=True)
  for f in report.FILES:
    shutil.copyfile(os.path.join(record, f), os.path.join(wd, f))
  print(f'compare: {run.name} taken from its record in {record}', flush=True)


def _config_diff(wd: str, cfg) -> list:
  """The fields in which the run recorded in `wd` differs from `cfg`; anchors compare by
  their place in the teacher run (anchors/<epoch>), not by the checkout's absolute path."""
  from msmgan_jax.training import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  there, planned = workdir_lib.Workdir(wd).read_config(), json.loads(cfg.to_json())
  place = lambda p: os.path.join(*os.path.normpath(p).split(os.sep)[-2:]) if p else p
  for c in (there, planned):
    c['teacher']['checkpoints'] = [place(p) for p in c['teacher']['checkpoints']]
    c['student']['init_checkpoint'] = place(c['student'].get('init_checkpoint', ''))
  return sorted(workdir_lib.config_diff(there, planned))


def _same_config(run: Run, wd: str, cfg) -> None:
  """A finished run in `wd` counts only if it ran this very config (an edited candidate
  list must not reuse another setting's numbers); ConfigError otherwise."""
  from msmgan_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  if _summary(wd) is None:
    return  # an unfinished run is checked by the trainer when it resumes.
  differ = _config_diff(wd, cfg)
  if differ:
    raise config_lib.ConfigError(
        f'{run.name}: {wd} holds a finished run of another config ({", ".join(differ[:5])} '
        'differ), for example from an earlier candidate list; move it away (it is not '
        'deleted) and rerun to train this one')


def _planned_config(cc, run: Run, root: str, anchors: list):
  """(the config `run` is planned with, None) once the tuning that chooses its setting is
  finished, after adopting a recorded run and refusing a stale one in its workdir (see
  `_adopt`, `_same_config`); else (None, the method whose tuning is unfinished)."""
  chosen = choose(cc, root)
  if run.kind == 'final':
    for m in (run.method, 'msmgan' if run.ablation else None):
      if m and chosen.get(m) is None:
        return None, m
  cfg, wd = student_config(cc, run, anchors, chosen), run.workdir(root)
  _adopt(cc, run, wd, cfg)
  _same_config(run, wd, cfg)
  return cfg, None


def _tabulated_runs_are_planned(cc, runs: list, root: str, anchors: list) -> None:
  """`--report` tabulates a finished run only if it ran the config the comparison plans
  for it now (the check `run_all` makes before skipping one), ConfigError otherwise; a run
  recorded in the results folder but missing from `root` (a fresh checkout) is adopted."""
  from msmgan_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  for run in runs:  # in plan order: a method's tuning before its final, as choose() needs.
    _, unchosen = _planned_config(cc, run, root, anchors)
    if unchosen and _summary(run.workdir(root)) is not None:
      raise config_lib.ConfigError(
          f'{run.name}: {run.workdir(root)} holds a finished final run, but the tuning that '
          f'chooses the setting of {unchosen} is not finished, so it cannot be the planned '
          'run; move it away (it is not deleted) or finish the tuning first')


def preflight(cc) -> None:
  """The checks `run_all` makes before anything trains (after `check`): every planned run's
  student config validates (budget runs for every method, as `best_other` may become any),
  and, where the comparison tunes, `check_validation_split`. A comparison that takes its
  settings from another (`settings_from`) has no validation split of its own to check.
  Raises ConfigError naming the run or the field."""
  stand_ins = [f'/anchor_{i}' for i in range(cc.teacher.anchors.num)]  # the teacher's later.
  budgeted = [Run('final', f'{m}@{b}', m, budget=b) for b in cc.get('budgets', {}) or {}
              for m in cc.methods]  # best_other may become any of them.
  runs = plan(cc)
  for run in runs + budgeted:  # every candidate's config is checked before training.
    _validate(student_config(cc, run, stand_ins, _first_settings(cc)), run)
  if any(run.kind == 'tune' for run in runs):
    check_validation_split(cc)


def check_validation_split(cc) -> None:
  """ConfigError unless `validation_split` holds at least `min_validation_images` images
  (0 or unset: any) and shares no example with the base train split, as TFDS reads them
  (the file ranges of both slices); before anything trains."""
  from msmgan_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from msmgan_jax.data import datasets  # pylint: disable=g-import-not-at-top
  builder = datasets.builder_for(cc.base.dataset)
  val, train_split = cc.validation_split, cc.base.dataset.train_split
  n = datasets.num_examples(builder, val)
  if n < cc.get('min_validation_images', 0):
    raise config_lib.ConfigError(
        f'validation_split {val!r} holds {n:,} images, fewer than min_validation_images '
        f'{cc.min_validation_images:,}: one seed\'s validation accuracy would be too noisy to '
        'choose with; take a larger hold-out of the training split')

  def ranges(split):
    out = []
    for f in builder.info.splits[split].file_instructions:
      take = f.examples_in_shard - f.skip if f.take in (-1, None) else f.take
      out.append((f.filename, f.skip, f.skip + take))
    return out
  for fa, a0, a1 in ranges(val):
    for fb, b0, b1 in ranges(train_split):
      if fa == fb and max(a0, b0) < min(a1, b1):
        raise config_lib.ConfigError(
            f'validation_split {val!r} overlaps the train split {train_split!r} (examples '
            f'{max(a0, b0)}..{min(a1, b1) - 1} of {os.path.basename(fa)}): a student would be '
            'scored on images it trained on; take a disjoint slice')


def _first_settings(cc) -> dict:
  return {m: cc.tuning[m][0] for m in cc.methods}


def _validate(cfg, run):
  from msmgan_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  try:
    config_lib.validate(cfg)
  except config_lib.ConfigError as e:
    raise config_lib.ConfigError(f'{run.name}: {e}') from e


USAGE = ('usage: python -m msmgan_jax.compare --config configs/compare_X.py[:smoke] [--report] '
         '[--workdir DIR] [--config.FIELD=VALUE ...]')
# What makes a config a comparison's (configs/compare_*.py), not a single run's.
COMPARISON_FIELDS = ('base', 'methods', 'tuning', 'seeds', 'teacher', 'teacher_workdir',
                     'validation_split', 'workdir', 'out')


def main(argv=None) -> int:
  from msmgan_jax import cli  # pylint: disable=g-import-not-at-top
  argv = list(sys.argv if argv is None else argv)
  if any(a in ('-h', '--help', '--helpfull') for a in argv[1:]):
    print(f'{__doc__}\n{USAGE}')
    return 0
  report_only = '--report' in argv
  argv = [a for a in argv if a != '--report']
  try:
    cc, root, _, _ = cli.parse(argv, USAGE)
    missing = [f for f in COMPARISON_FIELDS if f not in cc]
    if missing:
      raise cli.BadInput(
          f'this is not a comparison config (it has no {", ".join(missing[:3])}): give one '
          'of configs/compare_*.py, or train this config with python -m msmgan_jax.main '
          f'--config ...\n{USAGE}')
  except cli.BadInput as e:
    return cli.error(str(e), cli.EXIT_BAD_INPUT)
  cli.quiet()  # TensorFlow and JAX load once the arguments are known to be good.
  if not any(a == '--workdir' or a.startswith('--workdir=') for a in argv):
    root = cc.workdir
  doc = {}

  def run():  # each run stops gracefully on its own (a checkpoint); between runs nothing is lost.
    doc.update(run_all(cc, root, report_only))
  code = cli.run_command(run, hints={
      KeyboardInterrupt: 'interrupted; rerun the same command to continue the comparison'},
      extra=((RuntimeError, cli.EXIT_FAILED, 'error'),))
  if code:
    return code
  print(f'compare: {len(doc["runs"])} final runs tabulated in {cc.out}/compare.md')
  return 0


if __name__ == '__main__':
  sys.exit(main())
