"""Using it like the tools people know: the documented extension examples
(docs/architecture.md) train a student, TensorBoard's own reader loads the event files,
`report` plots a run, the config reference in docs/configuration.md is the one
`config.defaults()` gives, progress bars stay off non-terminals; the README's and
docs/results.md's tables and claims are the committed results'."""
import io
import json
import os
import re
import sys

import numpy as np
import pytest

from support import REPO_ROOT, load_config, shrink
from msmgan_jax import config


from msmgan_jax.core import models


from msmgan_jax.methods import registry as phases


from msmgan_jax.lab import report


from msmgan_jax.training import loop


from msmgan_jax.training import train


RESULTS_PAGE, CONFIG_PAGE = 'docs/results.md', 'docs/configuration.md'
EXTENDING_PAGE = 'docs/architecture.md'  # its model and method examples.


def readme_blocks(section: str, page: str = 'README.md') -> list:
  """The ```python blocks of one `## ` section of `page` (a Markdown file of the checkout)."""
  text = (REPO_ROOT / page).read_text()
  body = text.split(f'## {section}\n', 1)[1].split('\n## ', 1)[0]
  return re.findall(r'```python\n(.*?)```', body, re.S)


def readme_table(start: str, header: str, end: str = None, marks: str = '*`',
                 page: str = RESULTS_PAGE) -> list:
  """The body rows of `page`'s Markdown table that begins with `header`, in the part
  from the first `start` (up to `end`, if given): one list of cells per row, each cell
  stripped of blanks and of the `marks` characters (bold, code) at its ends."""
  readme = (REPO_ROOT / page).read_text()
  part = readme[readme.index(start):readme.index(end) if end else None]
  table = part[part.index(header):].split('\n\n')[0]
  return [[c.strip().strip(marks) for c in line.strip('|').split('|')]
          for line in table.splitlines()[2:] if line.startswith('| ')]  # no header, rule


def holm_cells(pairs: list) -> dict:
  """{(a name, b name): table cell} for one table's family of seed-paired comparisons
  `pairs` [(row a, row b)], in points: a minus b with its 95% interval, then its interval
  Holm-corrected over the family (`compare.family`'s reading, for a docs table whose
  comparisons are its own)."""
  from msmgan_jax.lab import compare, holm  # pylint: disable=g-import-not-at-top
  done = holm.corrected([compare.paired_differences(a, b) for a, b in pairs])
  return {(a['name'], b['name']): compare._ci_holm(c) for (a, b), c in zip(pairs, done)}


def recorded_start(comparison: str, run: str) -> str:
  """A committed run's start as the README names it: its recorded `student.init` with
  blanks for underscores ('first anchor'), or 'random'."""
  config = json.loads(
      (REPO_ROOT / 'results' / comparison / 'runs' / run / 'config.json').read_text())
  return (config['student'].get('init') or 'random').replace('_', ' ')


@pytest.fixture(scope='module')
def extended_run(teacher_run, tmp_path_factory):
  """The documented model and method, registered and trained from the teacher's anchors."""
  mp = pytest.MonkeyPatch()
  mp.setattr(models, 'MODELS', dict(models.MODELS))
  mp.setattr(phases, 'METHODS', dict(phases.METHODS))
  mp.setattr(phases, 'GROUPS', dict(phases.GROUPS))
  blocks = readme_blocks('Adding a model or a method', EXTENDING_PAGE)
  assert len(blocks) == 3 and 'register_model' in blocks[0] and 'register_method' in blocks[1]
  for code in blocks[:2]:
    exec(compile(code, EXTENDING_PAGE, 'exec'), {})  # pylint: disable=exec-used
  t_cfg, _, t_summary = teacher_run
  cfg = shrink(load_config(REPO_ROOT, 'default'), t_cfg.dataset.data_dir)
  cfg.method, cfg.student.model = 'half_kd', 'separable_net'
  cfg.teacher.epochs, cfg.anchors.num = 2, 2
  cfg.teacher.checkpoints = tuple(a['path'] for a in t_summary['teacher']['anchors'])
  cfg.log_every_steps = 5
  workdir = tmp_path_factory.mktemp('extended')
  try:
    summary = train.train_and_evaluate(cfg, str(workdir))
  finally:
    mp.undo()  # The documented method must not leak into later tests (config reference).
  return cfg, workdir, summary


@pytest.mark.slow
def test_readme_model_and_method_train_a_student(extended_run):
  cfg, workdir, summary = extended_run
  s = summary['student']
  assert summary['method'] == 'half_kd' and s['model'] == 'separable_net'
  assert [[p['name'] for p in st['phases']] for st in s['stages']] == [['head'], ['head']]
  # Depthwise 3x3 (C x 1 x 3 x 3) + pointwise 1x1 + BatchNorm per block, then a 64 -> 10 head.
  depthwise = [9 * c for c in (1, 16, 32)]
  pointwise = [a * b for a, b in ((1, 16), (16, 32), (32, 64))]
  assert s['params'] == sum(depthwise) + sum(pointwise) + 2 * (16 + 32 + 64) + 64 * 10 + 10
  # The method reads block features: the connectors (to resnet20's 16, 32, 64 channels)
  # train with the whole student, so more parameters train than the student has.
  assert all(p['trainable_params'] > s['params'] for st in s['stages'] for p in st['phases'])
  assert s['test_accuracy'] > 0.2  # 10 classes; two short stages of a tiny net.
  train_losses = [json.loads(l)['loss'] for l in open(workdir / 'metrics.jsonl')
                  if '"split": "train"' in l and '"phase": "head"' in l]
  assert len(train_losses) >= 2 and train_losses[-1] < train_losses[0]


@pytest.mark.slow
def test_tensorboard_reads_the_event_files(teacher_run, extended_run):
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  for workdir in (teacher_run[1], extended_run[1]):
    records = [json.loads(l) for l in open(os.path.join(workdir, 'metrics.jsonl'))]
    acc = event_accumulator.EventAccumulator(os.path.join(workdir, 'tensorboard'))
    acc.Reload()
    role = 'teacher' if records[-1]['phase'] == 'teacher' else 'student'
    tests = [r for r in records if r['split'] == 'test' and (r['phase'] == 'teacher') ==
             (role == 'teacher')]
    events = acc.Scalars(f'{role}/test/accuracy')
    assert [e.value for e in events] == pytest.approx([r['accuracy'] for r in tests])
    assert [e.step for e in events] == sorted(e.step for e in events)
    assert f'{role}/train/loss' in acc.Tags()['scalars']


def test_tensorboard_events_are_rebuilt_from_metrics_on_resume(tmp_path):
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  from msmgan_jax.files import metrics  # pylint: disable=g-import-not-at-top
  w = metrics.MetricsWriter(str(tmp_path), images_per_epoch=100)
  for step in (1, 2):
    w.write(step=step, epoch=step / 10, stage=1, phase='head', split='train', loss=float(step))
  offset = w.offset()
  w.write(step=3, epoch=0.3, stage=1, phase='head', split='train', loss=99.0)
  w.close()
  w.truncate(offset)  # a resume: step 3 is redone.
  w.write(step=3, epoch=0.3, stage=1, phase='head', split='train', loss=3.0)
  w.close()
  acc = event_accumulator.EventAccumulator(str(tmp_path / 'tensorboard'))
  acc.Reload()
  assert [(e.step, e.value) for e in acc.Scalars('student/train/loss')] == [
      (10, 1.0), (20, 2.0), (30, 3.0)]


@pytest.mark.slow
def test_report_plots_a_run(extended_run, tmp_path):
  _, workdir, summary = extended_run
  out = tmp_path / 'results'
  assert report.main(['--out', str(out), str(workdir)]) == 0
  run = out / workdir.name
  for png in ('phases.png', 'accuracy.png'):
    path = run / png if png != 'accuracy.png' else out / png
    assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and path.stat().st_size > 5000
  table = (run / 'summary.md').read_text()
  assert table.count('| head |') == 2 and f'{summary["student"]["test_accuracy"]:.4f}' in table
  assert not (run / 'gan.png').exists()  # this method logs no GAN metrics.


def test_report_plots_gan_and_features_of_msmgan(repo_root, tmp_path):
  """The committed default run has them: rebuild its PNGs from its metrics in a copy."""
  import shutil  # pylint: disable=g-import-not-at-top
  src = repo_root / 'results' / 'default' / 'default'
  shutil.copytree(src, tmp_path / 'default', ignore=shutil.ignore_patterns('*.png', '*.md'))
  written = report.run_plots(str(tmp_path / 'default'), 'default')
  assert written == ['phases.png', 'gan.png', 'features.png']
  assert all((tmp_path / 'default' / f).stat().st_size > 5000 for f in written)


def test_readme_config_reference_is_generated_from_defaults(tmp_path):
  assert config.REFERENCE_PAGE == CONFIG_PAGE  # what `python -m msmgan_jax.config` rewrites.
  readme = (REPO_ROOT / CONFIG_PAGE).read_text()
  section = readme.split(config.REFERENCE_START, 1)[1].split(config.REFERENCE_END, 1)[0]
  assert section.strip() == config.reference_markdown().strip(), (
      f'{CONFIG_PAGE} config reference is stale: run python -m msmgan_jax.config')
  fields = set(re.findall(r'^\| `([\w.]+)` \|', section, re.M))
  flat = set()
  for group, value in config.defaults().items():
    flat |= {f'{group}.{k}' for k in value.keys()} if hasattr(value, 'keys') else {group}
  assert fields == flat


class FakeTerminal(io.StringIO):
  def isatty(self):
    return True


@pytest.mark.slow
def test_a_run_on_a_terminal_shows_progress_per_phase(tmp_path, monkeypatch):
  from support import make_distiller, tiny_cfg  # pylint: disable=g-import-not-at-top
  term = FakeTerminal()
  monkeypatch.setattr(sys, 'stderr', term)
  make_distiller(tiny_cfg(), tmp_path).run()
  out = term.getvalue()
  for stage, phases in ((1, ('block_1', 'block_2', 'block_3', 'head')), (2, ('head',))):
    for phase in phases:
      assert f'stage {stage} phase {phase}: 100%' in out, out[-2000:]
  assert re.search(r'\d+/\d+ \[\d\d:\d\d<\d\d:\d\d, +[\d.]+(step/s|s/step)', out)  # rate, ETA.
  assert 'evaluating' in out and 'loss=' in out


def test_off_a_terminal_progress_is_a_plain_line_every_heartbeat(capfd, monkeypatch):
  """No bar off a terminal (a log file, CI), but a plain line whenever HEARTBEAT_S has
  passed since the last one, so a slow run is told from a hung one."""
  monkeypatch.setattr(loop, '_LAST_LINE', [1e18])  # a line was just printed: silence.
  bar = loop.progress(total=3, desc='x')
  for _ in range(3):
    bar.update()
  bar.close()
  assert capfd.readouterr().err == ''
  np.testing.assert_equal(bar.disable, True)
  monkeypatch.setattr(loop, 'HEARTBEAT_S', 0.0)  # every update is past the heartbeat.
  monkeypatch.setattr(loop, '_LAST_LINE', [0.0])
  bar = loop.progress(total=4, initial=1, desc='teacher epoch 1/15', unit='step')
  bar.update()
  bar.set_postfix({'loss': '0.53'})
  bar.update(2)
  lines = capfd.readouterr().err.splitlines()
  assert lines[0] == 'teacher epoch 1/15: 1/4 step (25%)'
  assert re.fullmatch(r'teacher epoch 1/15: 2/4 step \(50%\), [\d.]+ step/s, ETA \d+m\d\ds', lines[1])
  assert lines[2].startswith('teacher epoch 1/15: 4/4 step (100%)') and lines[2].endswith(
      'ETA 0m00s, loss=0.53')
  assert list(loop.progress(iterable=[7, 8], desc='evaluating')) == [7, 8]
  assert capfd.readouterr().err.count('evaluating: ') == 3  # at the start, then per item.


@pytest.mark.slow
def test_a_run_off_a_terminal_logs_a_line_at_least_every_heartbeat(tmp_path, monkeypatch, capfd):
  """A whole student run with its output in a file: with a 0 s heartbeat, every step and
  evaluation batch gives a line; the phases' names are in them."""
  from support import make_distiller, tiny_cfg  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(loop, 'HEARTBEAT_S', 0.0)
  make_distiller(tiny_cfg(), tmp_path).run()
  err = capfd.readouterr().err
  for phase in ('block_1', 'block_3', 'head'):
    assert f'stage 1 phase {phase}' in err, err[-2000:]
  assert 'evaluating: ' in err and '\r' not in err


def test_the_readmes_stages_and_phases_are_the_default_configs(repo_root):
  """docs/configuration.md's "through N stages (phases of stage 1; of stage 2; ...)" for the
  main job and its smoke run is what configs/default.py plans now."""
  readme = (REPO_ROOT / CONFIG_PAGE).read_text()
  for arg in (None, 'smoke'):
    cfg = load_config(REPO_ROOT, 'default', arg)
    k = models.create_model(cfg.student.model, 10).num_blocks
    stages = [[p.name for p in phases.stage_phases(cfg, k, m)] for m in range(cfg.anchors.num)]
    claim = (f'through {cfg.anchors.num} stages ('
             + '; '.join(', '.join(names) for names in stages) + ')')
    assert claim in ' '.join(readme.split()), (arg, claim)


def test_the_readmes_verdict_table_is_the_committed_comparisons():
  """docs/results.md's "Which method to pick" table holds the committed comparisons'
  numbers: every main-budget run (and run given msmgan's start) of lowdata v2 and of full
  v2, and every run of lowdata v2's 30-epoch budget; each with its mean +- std, seed count, start (the run's recorded
  `student.init`) and msmgan's seed-paired interval against it (msmgan's run at the same
  budget), recomputed from results/<name>/; the bold row of each group is its best mean,
  and the pick sentence there names the best of lowdata v2 at 15 epochs and its start; the
  README's verdict picks the library's best lowdata student at 15 epochs over v2, v3 and
  v3b, with its start."""
  readme = (REPO_ROOT / RESULTS_PAGE).read_text()
  section = readme[readme.index('## Which method to pick'):readme.index('## What the teacher saw')]
  lines = [line for line in section.splitlines() if line.startswith('| ')][1:]  # no header
  pm = lambda r: f'{r["mean"]:.4f} +- {r["std"]:.4f}'
  groups, labels, name = {}, {}, None
  for line in lines:
    cells = [c.strip() for c in line.strip('|').split('|')]
    if cells[0]:
      name = ('lowdata_v2@epochs30' if cells[0].startswith('6,000 ') and '30 epochs' in cells[0]
              else 'lowdata_v2' if cells[0].startswith('6,000 ') and '(v2' in cells[0] else
              'full_v2' if cells[0].startswith('60,000 ') and '(v2' in cells[0] else cells[0])
      labels[name] = cells[0]
    groups.setdefault(name, []).append(cells[1:])
  assert set(groups) == {'lowdata_v2', 'full_v2', 'lowdata_v2@epochs30'}, groups
  best = {}
  for name, rows in groups.items():
    comparison, _, budget = name.partition('@')
    runs = {r['name']: r for r in json.loads(
        (REPO_ROOT / 'results' / comparison / 'compare.json').read_text())['runs']}
    expected = {n for n, r in runs.items() if not r['ablation'] and (
        r.get('budget') == budget if budget else r.get('budget') in (None, 'init'))}
    ours = 'msmgan' + (f'@{budget}' if budget else '')
    keys = []
    for run, start, acc, diff in rows:
      method = run.strip('*').split(' (')[0].split(' v')[0]
      method = 'msmgan' if method == 'MS-MGANs' else method
      keys.append(f'{method}@{budget}' if budget else
                  method + ('@init' if start == 'first anchor' and method != 'msmgan' else ''))
    # The group's family: MS-MGANs against each other run of it, Holm-corrected together.
    cells = holm_cells([(runs[ours], runs[k]) for k in keys if k != ours])
    seen, bold = set(), []
    for key, (run, start, acc, diff) in zip(keys, rows):
      r = runs[key]
      seen.add(key)
      assert f'{len(r["seeds"])} seeds' in labels[name], (name, key, labels[name])
      assert start == recorded_start(comparison, key), (name, key)
      assert acc.strip('*') == pm(r), (name, run, start)
      assert diff.strip('*') == ('-' if key == ours else cells[(ours, key)]), (name, run, start)
      if run.startswith('**'):
        bold.append(key)
    assert seen == expected, (name, seen ^ expected)
    best[name] = max(expected, key=lambda n: runs[n]['mean'])
    assert bold == [best[name]], (name, bold)
  assert f'Pick **{best["lowdata_v2"].split("@")[0]}**' in section
  pick = section[section.index('Pick **'):]
  assert ('student.init=first_anchor' in pick) == best['lowdata_v2'].endswith('@init')
  # The README's pick: the library's best lowdata student at 15 epochs over every committed
  # lowdata comparison (v2, v3, v3b; ablations included: whatever its method), named with its
  # mean +- std and its start.
  every = [(c, r) for c in ('lowdata_v2', 'lowdata_v3', 'lowdata_v3b')
           for r in json.loads((REPO_ROOT / 'results' / c / 'compare.json').read_text())['runs']
           if r.get('budget') in (None, 'init')]
  comparison, top = max(every, key=lambda cr: cr[1]['mean'])
  front = (REPO_ROOT / 'README.md').read_text()
  verdict = front[front.index('## Verdict'):].split('\n## ', 1)[0]
  pick = ' '.join(verdict[verdict.index('**Pick '):].split('\n- ', 1)[0].split())
  assert f'`{top["method"]}`' in pick and "library's best student" in pick, (top['name'], pick)
  assert pm(top) in pick, (comparison, top['name'], pick)
  start = recorded_start(comparison, top['name'])
  assert ('student.init=first_anchor' in pick) == (start == 'first anchor'), (start, pick)


LOWDATA_V2 = ('**lowdata v2 comparison**', '**full v2 comparison**')  # its Measured results part.


def test_the_readmes_v2_table_is_the_committed_comparison():
  """Measured results' table of lowdata v2's main runs (and runs given msmgan's start): every
  one once, each row's start (its recorded `student.init`), chosen setting, validation score
  (the chosen candidate's mean), test mean +- std, msmgan's seed-paired interval against it
  and its wall minutes, recomputed from results/lowdata_v2/."""
  rows = readme_table(LOWDATA_V2[0], '| run | start | chosen setting |', LOWDATA_V2[1])
  data = json.loads((REPO_ROOT / 'results/lowdata_v2/compare.json').read_text())
  runs = {r['name']: r for r in data['runs']}
  chosen_score = {t['method']: t['mean'] for t in data['tuning']
                  if t.get('accuracies') and data['chosen'].get(t['method']) is not None
                  and t['setting'] == data['chosen'][t['method']]}
  seen = []
  cells = holm_cells([(runs['msmgan'], runs[row[0]]) for row in rows if row[0] != 'msmgan'])
  for run, start, setting, validation, test, diff, wall in rows:
    r = runs[run]
    seen.append(run)
    assert start == recorded_start('lowdata_v2', run), run
    assert wall == str(round(r['wall_s'] / 60)), (run, r['wall_s'])
    assert test == f'{r["mean"]:.4f} +- {r["std"]:.4f}', run
    assert diff == ('-' if run == 'msmgan' else cells[('msmgan', run)]), run
    if '@' in run:  # a budget run: the main run's setting, no tuning of its own.
      assert validation == '-' and setting == f"{r['method']}`'s", run
      assert r['setting'] == data['chosen'][r['method']], run
    else:
      assert validation == f'{chosen_score[run]:.4f}', run
      assert setting == (r['setting'] or 'its defaults (candidate 0)'), run
  assert sorted(seen) == sorted(n for n, r in runs.items()
                                if not r['ablation'] and r.get('budget') in (None, 'init')), seen


def test_the_readmes_v2_ablation_table_is_the_committed_comparison():
  """Measured results' ablation table holds every finished ablation of lowdata v2, each row's
  test mean +- std, msmgan's seed-paired interval against it and its wall minutes
  recomputed from results/lowdata_v2/compare.json."""
  rows = readme_table(LOWDATA_V2[0], '| ablation (the one change) |', LOWDATA_V2[1], marks='')
  runs = {r['name']: r for r in json.loads(
      (REPO_ROOT / 'results/lowdata_v2/compare.json').read_text())['runs']}
  seen = set()
  names = ['msmgan_' + row[0].split('`')[1] for row in rows]
  cells = holm_cells([(runs['msmgan'], runs[n]) for n in names])
  for name, (what, test, diff, wall) in zip(names, rows):
    r = runs[name]
    seen.add(name)
    assert wall == str(round(r['wall_s'] / 60)), (name, r['wall_s'])
    assert test == f'{r["mean"]:.4f} +- {r["std"]:.4f}', name
    assert diff == cells[('msmgan', name)], name
  assert seen == {n for n, r in runs.items() if r['ablation'] and not r.get('budget')}


def test_the_readmes_full_v2_table_is_the_committed_comparison():
  """Measured results' full v2 table: every run of results/full_v2 once, its start (the run's
  recorded `student.init`), setting, test mean +- std, msmgan's seed-paired interval against
  it and its wall minutes, recomputed from results/full_v2/."""
  rows = readme_table('**full v2 comparison**', '| run | start | setting |')
  data = json.loads((REPO_ROOT / 'results/full_v2/compare.json').read_text())
  runs = {r['name']: r for r in data['runs']}
  seen = []
  cells = holm_cells([(runs['msmgan'], runs[row[0]]) for row in rows if row[0] != 'msmgan'])
  for run, start, setting, test, diff, wall in rows:
    r = runs[run]
    seen.append(run)
    assert start == recorded_start('full_v2', run), run
    if '@' in run:  # a budget run: the main run's setting.
      assert setting == f"{r['method']}`'s" and r['setting'] == data['chosen'][r['method']], run
    else:
      assert setting == (r['setting'] or 'its lowdata v2 defaults'), run
    assert test == f'{r["mean"]:.4f} +- {r["std"]:.4f}', run
    assert diff == ('-' if run == 'msmgan' else cells[('msmgan', run)]), run
    assert wall == str(round(r['wall_s'] / 60)), (run, r['wall_s'])
  assert sorted(seen) == sorted(runs), seen


def test_the_readmes_30_epoch_table_is_the_committed_comparison():
  """Measured results' 30-epoch table of lowdata v2 holds every run of its `epochs30` budget
  and nothing else: its start (the run's recorded `student.init`), test mean +- std, its
  seed-paired gain over the same method's 15-epoch run, msmgan's (30 epochs) seed-paired
  interval against it and its wall minutes; recomputed from results/lowdata_v2/."""
  runs = {r['name']: r for r in json.loads(
      (REPO_ROOT / 'results/lowdata_v2/compare.json').read_text())['runs']}
  budget = {n for n in runs if n.endswith('@epochs30')}
  header = '| run | start | test | it minus itself at 15 epochs |'
  ours = runs['msmgan@epochs30']
  seen = set()
  rows = readme_table(LOWDATA_V2[0], header, LOWDATA_V2[1])
  # The table's family: both interval columns, Holm-corrected together.
  cells = holm_cells([(runs[row[0]], runs[runs[row[0]]['method']]) for row in rows]
                     + [(ours, runs[row[0]]) for row in rows if runs[row[0]] is not ours])
  for run, start, test, gain, diff, wall in rows:
    r = runs[run]
    seen.add(run)
    assert wall == str(round(r['wall_s'] / 60)), (run, r['wall_s'])
    assert start == recorded_start('lowdata_v2', run), run
    assert test == f'{r["mean"]:.4f} +- {r["std"]:.4f}', run
    assert gain == cells[(run, r['method'])], run
    assert diff == ('-' if r is ours else cells[(ours['name'], run)]), run
  assert seen == budget, seen ^ budget
