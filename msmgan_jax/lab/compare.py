"""Comparison runner: methods x seeds x ablations under one protocol, with tables and plots.

    python -m msmgan_jax.compare --config configs/compare_lowdata.py [--report]

A comparison config (see configs/compare_lowdata.py) names a shared teacher run, a base
student config, the methods and MS-MGANs ablations to compare, the seeds, and for every
method the same number of tuning candidates (settings written as `field=value; ...`,
candidate 0 being the method's paper defaults). The protocol:

1. The teacher is trained once in `teacher_workdir` (or found there, finished) and its
   anchors guide every run.
2. Tuning: each method's candidates train on the base train split, one seed each, and
   are scored on `validation_split`, a hold-out of the training split that no student
   trains on. The best candidate (ties: the earlier) is the method's setting; ablations
   take MS-MGANs'. The test split plays no part in any choice.
3. Final runs: every method and ablation with its setting, `seeds` students in one
   program, tested on the test split; the headline is the last-epoch test accuracy,
   mean +- std over the seeds.

Every run has its own workdir under `--workdir`; a finished run is skipped and an
interrupted one resumes, so stopping and rerunning the command continues the comparison.
On a fresh checkout, runs recorded in `out/runs/` with the same config count as finished.
After every run, `out` gets compare.json (every run, the tuning and the choices),
compare.md (the tables), two plots: test accuracy against images seen and against wall
time, and runs/<name>/ with each finished run's config, summary and metrics. `--report` rewrites them from the finished runs without training anything.
"""
import ast
import dataclasses
import json
import os
import platform
import shutil
import sys
import time
from typing import Optional

import numpy as np

from msmgan_jax import methods  # noqa: F401 (registers the built-in methods)
from msmgan_jax.methods import registry

@dataclasses.dataclass
class Run:
  """One training run of the comparison."""
  kind: str                   # 'tune' or 'final'.
  name: str                   # e.g. 'kd', 'msmgan_no_gan', 'tune/kd/1'.
  method: str
  ablation: Optional[str] = None
  candidate: Optional[int] = None  # tuning runs: the candidate's index.

  def workdir(self, root: str) -> str:
    return os.path.join(root, self.kind, self.name.replace('tune/', ''))


def parse_setting(text: str) -> dict:
  """'kd.tau=2.0; kd.beta=0.5' -> {'kd.tau': 2.0, 'kd.beta': 0.5} ('' -> {})."""
  out = {}
  for part in (p.strip() for p in text.split(';')):
    if not part:
      continue
    field, sep, value = part.partition('=')
    if not sep:
      raise ValueError(f'setting {part!r} is not field=value')
    try:
      out[field.strip()] = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
      out[field.strip()] = value.strip()  # a bare string, e.g. gan.loss=hinge.
  return out


def apply(cfg, overrides: dict):
  """`cfg` with `overrides` ({'group.field': value}) set; unknown fields are ConfigErrors."""
  from msmgan_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  for path, value in overrides.items():
    group, _, name = path.rpartition('.')
    node = cfg
    for part in filter(None, group.split('.')):
      if part not in node:
        raise config_lib.ConfigError(f'setting {path}={value!r}: unknown config group {part!r}')
      node = node[part]
    if name not in node:
      raise config_lib.ConfigError(f'setting {path}={value!r}: unknown config field {path}')
    if isinstance(node[name], tuple) or isinstance(value, (list, tuple)):
      value = tuple(value)
    elif isinstance(node[name], float) and isinstance(value, int):
      value = float(value)
    node[name] = value
  return cfg


def plan(cc) -> list:
  """Every run of the comparison in the order they run: each method's tuning, then its
  final run (so finished rows appear early); msmgan's ablations right after msmgan. With
  `settings_from` (another comparison's compare.json) the settings chosen there are used:
  no tuning runs; with `tune_only` (a design study on the validation split) no final runs."""
  runs = []
  for method in cc.methods:
    if not cc.get('settings_from'):
      runs += [Run('tune', f'tune/{method}/{i}', method, candidate=i)
               for i in range(len(cc.tuning[method]))]
    if cc.get('tune_only'):
      continue
    runs.append(Run('final', method, method))
    own = registry.ablations(method)  # the method's own ablations, right after it.
    runs += [Run('final', f'{method}_{a}', method, ablation=a) for a in cc.ablations if a in own]
  return runs


def check(cc) -> None:
  """Raises ConfigError for a comparison config that cannot run, before any work."""
  from msmgan_jax import config as config_lib  # pylint: disable=g-import-not-at-top
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
  known = {a for m in cc.methods for a in registry.ablations(m)}
  for a in cc.ablations:
    req(a in known, f'ablation {a!r} is not one of {sorted(known)} (the ablations of '
        f'{tuple(cc.methods)}); a method registers its ablations with its phases')
  req(not (cc.get('tune_only') and cc.get('settings_from')),
      'tune_only runs only tuning, settings_from skips it: set one of them')
  req(isinstance(cc.seeds, int) and cc.seeds >= 1, f'seeds must be >= 1, got {cc.seeds!r}')
  req(cc.validation_split != cc.base.dataset.test_split,
      'validation_split must be a hold-out of the training data, not the test split')


def student_config(cc, run: Run, anchors: list, chosen: dict):
  """The full config of `run`: the base, its method and setting, the shared anchors."""
  cfg = apply(copy_config(cc.base), {'method': run.method})
  setting = cc.tuning[run.method][run.candidate] if run.kind == 'tune' else chosen[run.method]
  apply(cfg, parse_setting(setting))
  if run.ablation:
    apply(cfg, registry.ablations(run.method)[run.ablation])
  cfg.teacher.checkpoints = tuple(anchors[-cfg.stages.num:])
  cfg.stages.teacher_epochs = ()
  if run.kind == 'tune':
    cfg.dataset.test_split, cfg.seeds = cc.validation_split, 1
  else:
    cfg.seeds = cc.seeds
  return cfg


def copy_config(cfg):
  """An unlocked deep copy (tuples stay tuples, as the config schema has them)."""
  out = cfg.copy_and_resolve_references()
  out.unlock()
  return out


TEACHER_RECORDS = os.path.join('results', 'teacher')  # committed teacher runs (README).


def _summary(workdir: str) -> Optional[dict]:
  path = os.path.join(workdir, 'summary.json')
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def choose(cc, root: str) -> dict:
  """Each method's setting: its tuning candidate with the best validation accuracy (ties:
  the earlier one); None for a method whose tuning is not finished. With `settings_from`,
  the settings that comparison chose."""
  if cc.get('settings_from'):
    with open(cc.settings_from) as f:
      there = json.load(f)['chosen']
    return {m: there.get(m) for m in cc.methods}
  chosen = {}
  for m in cc.methods:
    accs = []
    for i in range(len(cc.tuning[m])):
      s = _summary(Run('tune', f'tune/{m}/{i}', m, candidate=i).workdir(root))
      accs.append(s['student']['test_accuracy'] if s else None)
    chosen[m] = None if None in accs else cc.tuning[m][int(np.argmax(accs))]
  return chosen


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
  from msmgan_jax.files import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  cfg = workdir_lib.Workdir(wd).read_config()  # fields added since the run filled in as it ran.
  accs = st.get('test_accuracies', [st['test_accuracy']])
  train_s = sum(p['wall_s'] for p in phases)
  images = sum(p['steps'] for p in phases) * cfg['batch_size'] * len(accs)
  return {'name': run.name, 'kind': run.kind, 'method': run.method, 'ablation': run.ablation,
          'candidate': run.candidate, 'variant': s.get('variant', []),
          'setting': (cc.tuning[run.method][run.candidate] if run.kind == 'tune'
                      else _setting_of(cc, cfg, registry.ablations(run.method).get(run.ablation, {}))),
          'split': cfg['dataset']['test_split'], 'seeds': st.get('seeds', [cfg['seed']]),
          'accuracies': accs, 'mean': float(np.mean(accs)), 'std': float(np.std(accs)),
          'wall_s': st['wall_s'], 'images_per_s': round(images / max(train_s, 1e-9), 1),
          'curve': _curve(wd), 'workdir': wd}


def _setting_of(cc, cfg: dict, ablated: dict) -> str:
  """The tuning candidate a final run's config carries (by value): of the candidates whose
  every field it has (but the fields its ablation sets), the one naming the most fields
  ('' matches any config)."""
  matches = [t for t in cc.tuning[cfg['method']] if all(
      _get(cfg, k) == (list(v) if isinstance(v, tuple) else v)
      for k, v in parse_setting(t).items() if k not in ablated)]
  return max(matches, key=lambda t: len(parse_setting(t))) if matches else '?'


def _get(cfg: dict, path: str):
  for part in path.split('.'):
    cfg = cfg[part]
  return cfg


def _fmt_setting(text: str) -> str:
  return text.replace('|', '/') if text else 'defaults'


def markdown(cc, rows: list, tuning: list, chosen: dict, torch_rows: list, machine: str,
             teacher: Optional[dict] = None) -> str:
  """compare.md: the final table (mean +- std, gains, time, speed) and the tuning table."""
  finals = {r['name']: r for r in rows}
  base = lambda m: finals.get(m)
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
              f'std over {cc.seeds} seeds (population std); gains are differences of means, in '
              'points. Wall time: the student runs of all seeds together (one program); '
              'images/s: student images trained per second of training, all seeds, compilation '
              'and evaluations included.', '',
              '| run | method | setting (chosen on validation) | test accuracy | per seed | '
              'gain over ce | gain over kd | wall s | images/s |',
              '|---|---|---|---|---|---|---|---|---|']
  for r in rows:
    gain = lambda m: ('-' if base(m) is None or m == r['name'] else
                      f'{100 * (r["mean"] - base(m)["mean"]):+.2f}')
    lines.append(f'| {r["name"]} | {r["method"]}{" (" + r["ablation"] + ")" if r["ablation"] else ""}'
                 f' | {_fmt_setting(r["setting"])} | {r["mean"]:.4f} +- {r["std"]:.4f} | '
                 f'{", ".join(f"{a:.4f}" for a in r["accuracies"])} | {gain("ce")} | {gain("kd")} | '
                 f'{r["wall_s"]:.0f} | {r["images_per_s"]:.0f} |')
  pending = [n for n in [*cc.methods, *(f'msmgan_{a}' for a in cc.ablations)] if n not in finals]
  if pending and not cc.get('tune_only'):
    lines += ['', f'Not run yet: {", ".join(pending)}.']
  if torch_rows:
    lines += ['', '## Independent check (PyTorch, same networks, recipe and slice)', '',
              '| method | test accuracy | per seed | ours (JAX) | difference |', '|---|---|---|---|---|']
    for t in torch_rows:
      ours = base(t['method'])
      lines.append(f'| {t["method"]} | {t["mean"]:.4f} +- {t["std"]:.4f} | '
                   f'{", ".join(f"{a:.4f}" for a in t["accuracies"])} | '
                   + (f'{ours["mean"]:.4f} +- {ours["std"]:.4f} | {100 * (ours["mean"] - t["mean"]):+.2f}'
                      if ours else '- | -') + ' |')
  if cc.get('settings_from'):
    lines += ['', '## Settings', '', f'No tuning here: every method uses the setting chosen on '
              f'the validation split of `{cc.settings_from}`\'s comparison, the same tuning '
              'effort for every method:', '']
    lines += [f'- {m}: {_fmt_setting(chosen.get(m) or "")}' for m in cc.methods]
    return '\n'.join(lines) + '\n'
  lines += ['', f'## Tuning (validation split `{cc.validation_split}`, one seed per candidate)', '',
            (cc.get('design_note') or
             f'Every method gets the same {len(cc.tuning[cc.methods[0]])} candidate settings, '
             'candidate 0 its paper defaults; the best validation accuracy wins (ties: the '
             'earlier). Ablations use msmgan\'s choice.'), '',
            '| method | candidate | setting | validation accuracy | chosen |', '|---|---|---|---|---|']
  for t in tuning:
    mark = 'yes' if chosen.get(t['method']) == t['setting'] else ''
    acc = '-' if t.get('mean') is None else f'{t["mean"]:.4f}'
    lines.append(f'| {t["method"]} | {t["candidate"]} | {_fmt_setting(t["setting"])} | {acc} | {mark} |')
  return '\n'.join(lines) + '\n'


def plots(out: str, rows: list, split: str = 'test') -> list:
  """accuracy_vs_images.png and accuracy_vs_wall.png: each final run's mean test accuracy,
  the whole run on the left and, on the right, its last 40% where the finals part ways.
  Each run has its own colour; msmgan is drawn thicker and ablations dashed."""
  from msmgan_jax.lab import report  # pylint: disable=g-import-not-at-top
  plt = report.pyplot()
  colours = plt.get_cmap('tab20' if len(rows) > 10 else 'tab10').colors
  written = []
  for x, name, label in ((0, 'accuracy_vs_images.png', 'epochs of the train split seen'),
                         (1, 'accuracy_vs_wall.png', 'student wall time, s (all seeds)')):
    fig, (whole, end) = plt.subplots(1, 2, figsize=(12, 4.8),
                                     gridspec_kw={'width_ratios': [1, 1.3]})
    tail, starts = [], []
    for i, r in enumerate(rows):
      pts = [p for p in r['curve'] if p[x] is not None]
      if not pts:
        continue
      starts.append(0.6 * max(p[x] for p in pts))
      tail += [p[2] for p in pts if p[x] >= starts[-1]]
      for ax in (whole, end):
        ax.plot([p[x] for p in pts], [p[2] for p in pts], 'o' if r['ablation'] else 's',
                ms=3, lw=2.2 if r['name'] == 'msmgan' else 1,
                ls='--' if r['ablation'] else '-', color=colours[i % len(colours)],
                label=r['name'])
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
    for ax in (whole, end):
      ax.set_xlabel(label); ax.grid(alpha=0.3)
    whole.set_ylabel(f'{split} accuracy (mean over seeds)')
    end.legend(fontsize=7, ncol=2, loc='lower right')
    fig.tight_layout(); fig.savefig(os.path.join(out, name), dpi=120); plt.close(fig)
    written.append(name)
  return written


def write(cc, root: str, machine: str) -> dict:
  """Rewrites compare.json, compare.md and the plots in `cc.out` from the finished runs."""
  from msmgan_jax import errors  # pylint: disable=g-import-not-at-top
  from msmgan_jax.files import io  # pylint: disable=g-import-not-at-top
  runs = plan(cc)
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
  doc = {'title': cc.title, 'machine': machine, 'config': json.loads(cc.to_json()),
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
  t_sum = _summary(cc.teacher_workdir)
  if not report_only:
    stand_ins = [f'/anchor_{i}' for i in range(cc.teacher.stages.num)]  # the teacher's later.
    for run in plan(cc):  # every candidate's config is checked before anything trains.
      _validate(student_config(cc, run, stand_ins, _first_settings(cc)), run)
    print(f'compare: the shared teacher in {cc.teacher_workdir}', flush=True)
    t_sum = train.train_and_evaluate(cc.teacher, cc.teacher_workdir)
  if t_sum is None:
    from msmgan_jax import config as config_lib  # pylint: disable=g-import-not-at-top
    hint = 'run the comparison without --report first'
    name = os.path.basename(os.path.normpath(cc.teacher_workdir))
    record = os.path.join(TEACHER_RECORDS, name)
    if _summary(record) is not None:  # a fresh checkout: the teacher's committed record.
      parent = os.path.dirname(os.path.normpath(cc.teacher_workdir)) or '.'
      hint = (f'this checkout holds its record in {record}: restore it with `mkdir -p {parent} '
              f'&& cp -r {record} {parent}/` and rerun --report, or ' + hint)
    raise config_lib.ConfigError(f'{cc.teacher_workdir} holds no finished teacher run; {hint}')
  anchors = []  # the teacher workdir's own anchors (a copied workdir), else the summary's.
  for a in t_sum['teacher']['anchors']:
    here = os.path.join(cc.teacher_workdir, 'checkpoints', 'anchors', str(a['epoch']))
    anchors.append(os.path.abspath(here if os.path.isdir(here) else a['path']))
  runs = plan(cc)
  if report_only:
    _tabulated_runs_are_planned(cc, runs, root, anchors)
    return write(cc, root, where)
  t0 = time.time()
  for n, run in enumerate(runs, 1):
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
      train.train_and_evaluate(cfg, wd)
      write(cc, root, where)
  return write(cc, root, where)


def _adopt(cc, run: Run, wd: str, cfg) -> None:
  """A run missing from `wd` (a fresh checkout) but recorded in the results folder with
  this very config is finished: its record is copied back instead of training it again."""
  from msmgan_jax.files import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
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
  from msmgan_jax.files import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  there, planned = workdir_lib.Workdir(wd).read_config(), json.loads(cfg.to_json())
  for c in (there, planned):
    c['teacher']['checkpoints'] = [os.path.join(*os.path.normpath(p).split(os.sep)[-2:])
                                   for p in c['teacher']['checkpoints']]
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


def _first_settings(cc) -> dict:
  return {m: cc.tuning[m][0] for m in cc.methods}


def _validate(cfg, run):
  from msmgan_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  try:
    config_lib.validate(cfg)
  except config_lib.ConfigError as e:
    raise config_lib.ConfigError(f'{run.name}: {e}') from e


def main(argv=None) -> int:
  from msmgan_jax import cli  # pylint: disable=g-import-not-at-top
  argv = list(sys.argv if argv is None else argv)
  report_only = '--report' in argv
  argv = [a for a in argv if a != '--report']
  cli.quiet()
  try:
    cc, root, _, _ = cli.parse(argv)
  except cli.BadInput as e:
    return cli.error(str(e), cli.EXIT_BAD_INPUT)
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
