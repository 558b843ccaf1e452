"""Tables and plots from run workdirs: `python -m msmgan_jax.report --out DIR WORKDIR...`.

Copies each run's `config.json`, `summary.json` and `metrics.jsonl` to `DIR/<run>/`, and
writes `DIR/results.json`, `DIR/results.md` (one row per run, with its dataset and whether
it shared the machine, see `machine_share`) and `DIR/accuracy.png` (student, or teacher,
test accuracy against epochs of images seen). For each run with a student, `DIR/<run>/`
also gets `summary.md` (a row per stage and phase) and the PNGs `phases.png` (test and
train accuracy, coloured by phase, stage boundaries marked), `gan.png` (generator and
discriminator losses and discriminator accuracy on real and fake) and `features.png`
(feature MSE), each block phase in its own panels against its own steps, where the run
logged them. Everything is made from the copied files, so a results folder can be
re-plotted alone.
"""
import argparse
import json
import os
import platform
import shutil
import sys

import numpy as np

from msmgan_jax.files import io

FILES = ('config.json', 'summary.json', 'metrics.jsonl')


# A run whose machine's mean 1-minute load exceeded its cores by this much shared it.
SHARED_LOAD_MARGIN = 0.5
SHARE_NOTES = {'alone': '', 'shared': 'shared the machine', 'unknown': 'load unknown'}


def machine_share(summary: dict) -> str:
  """'alone', 'shared' or 'unknown': whether the student run of `summary` (summary.json)
  shared the machine with other work, which makes its wall times and images/s slower.

  From the load the trainer recorded (`student.machine`, see `training.summary.LoadWatch`):
  a run alone keeps at most its `cores` busy, so a mean 1-minute load average above
  `cores + SHARED_LOAD_MARGIN` (2.5 on 2 cores) means other jobs ran alongside for much of
  it: 'shared'. Runs recorded before the load was (no `machine`), teacher-only runs and
  machines without a load average are 'unknown', never taken for 'alone'.
  """
  m = (summary.get('student') or {}).get('machine') or {}
  if m.get('load_1min_mean') is None or not m.get('cores'):
    return 'unknown'
  return 'shared' if m['load_1min_mean'] > m['cores'] + SHARED_LOAD_MARGIN else 'alone'


def dataset_name(summary: dict, config=None):
  """The dataset a run trained on: summary.json's `data` record, else (summaries before
  it) its `dataset`, else the run's config (`dataset.name`); None when none says."""
  return ((summary.get('data') or {}).get('name') or summary.get('dataset')
          or ((config or {}).get('dataset') or {}).get('name'))


def row(name: str, summary: dict, config=None) -> dict:
  """The table row of one run's summary (`config`: its config.json, for older summaries
  that do not name their dataset)."""
  t, s = summary.get('teacher') or {}, summary.get('student') or {}
  phases = [p for st in s.get('stages', []) for p in st['phases']]
  return {
      'run': name, 'dataset': dataset_name(summary, config), 'method': summary['method'],
      'variant': ','.join(summary.get('variant', [])) or '-',
      'teacher': t.get('model'), 'teacher_acc': t.get('test_accuracy'),
      'student': s.get('model'), 'student_acc': s.get('test_accuracy'),
      'compression': s.get('compression'), 'stages': len(s.get('stages', [])) or None,
      'student_steps': sum(p['steps'] for p in phases) or None,
      'student_wall_s': s.get('wall_s'), 'teacher_wall_s': t.get('wall_s'),
      'wall_s': summary.get('wall_s'), 'load': machine_share(summary)}


def markdown(rows: list) -> str:
  cols = list(rows[0])

  def fmt(col, v):
    if v is None:
      return '-'
    if col.endswith('_acc'):
      return f'{v:.4f}'
    if col == 'compression':
      return f'{v:.2f}x'
    return f'{v:.0f}' if isinstance(v, float) else str(v)
  lines = ['| ' + ' | '.join(cols) + ' |', '|' + '---|' * len(cols)]
  lines += ['| ' + ' | '.join(fmt(c, r[c]) for c in cols) + ' |' for r in rows]
  return '\n'.join(lines) + '\n'


def _records(path: str) -> list:
  """The run's metrics records; of a run of several seeds, the first seed's (plots show one)."""
  with open(os.path.join(path, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  seeds = [r['seed'] for r in records if 'seed' in r]
  return [r for r in records if r.get('seed', seeds[0] if seeds else None) == (
      min(seeds) if seeds else None)]


def _acc(v) -> str:
  """An accuracy, or the mean +- sample std (n - 1 divisor) of one per seed."""
  if isinstance(v, list):
    return f'{np.mean(v):.4f} +- {np.std(v, ddof=1) if len(v) > 1 else 0.0:.4f}'
  return f'{v:.4f}'


def pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _stage_lines(ax, student):
  """Dotted vertical lines where a stage starts."""
  firsts = {}
  for r in student:
    firsts.setdefault(r['stage'], r['epoch'])
  for stage, epoch in sorted(firsts.items())[1:]:
    ax.axvline(epoch, color='grey', ls=':', lw=1)
    ax.text(epoch, 1.0, f' stage {stage}', transform=ax.get_xaxis_transform(), fontsize=7,
            va='top', color='grey')


def run_plots(path: str, name: str) -> list:
  """Writes the per-run PNGs of the student in `path` (see the module docstring); returns
  the names written."""
  records = [r for r in _records(path) if r['phase'] != 'teacher']
  if not records:
    return []
  plt, written = pyplot(), []
  phases = list(dict.fromkeys(r['phase'] for r in records))
  colours = dict(zip(phases, plt.rcParams['axes.prop_cycle'].by_key()['color'] * 4))
  fig, ax = plt.subplots(figsize=(8, 4))
  for ph in phases:  # a legend entry only for a series with points (block phases have none).
    train_pts = [r for r in records if r['phase'] == ph and r['split'] == 'train'
                 and 'accuracy' in r]
    test_pts = [r for r in records if r['phase'] == ph and r['split'] == 'test']
    if train_pts:
      ax.plot([r['epoch'] for r in train_pts], [r['accuracy'] for r in train_pts], '.',
              ms=3, alpha=0.4, color=colours[ph], label=None if test_pts else f'{ph} (train)')
    if test_pts:
      ax.plot([r['epoch'] for r in test_pts], [r['accuracy'] for r in test_pts], 'o', ms=6,
              color=colours[ph], label=f'{ph} (test)')
  test = [r for r in records if r['split'] == 'test']
  if test:
    ax.plot([r['epoch'] for r in test], [r['accuracy'] for r in test], '-', color='k', lw=0.8)
  _stage_lines(ax, records)
  ax.set(xlabel='epochs of images seen', ylabel='accuracy',
         title=f'{name}: test accuracy at each evaluation (dots: train batches of logit phases)')
  ax.grid(alpha=0.3)
  if ax.get_legend_handles_labels()[1]:
    ax.legend(fontsize=7, loc='lower right')
  fig.tight_layout(); fig.savefig(os.path.join(path, 'phases.png'), dpi=110); plt.close(fig)
  written.append('phases.png')

  train = [r for r in records if r['split'] == 'train']
  blocks = sorted({int(k.rsplit('_b', 1)[1]) for r in train for k in r
                   if k.startswith(('feat_mse_b', 'd_loss_b'))})
  block_colours = plt.rcParams['axes.prop_cycle'].by_key()['color']
  panels = [('gan.png', [('g_adv_b{}', 'generator adversarial loss'),
                         ('d_loss_b{}', 'discriminator loss'),
                         ('d_acc_real_b{}', 'D accuracy on real (teacher)'),
                         ('d_acc_fake_b{}', 'D accuracy on fake (student)')]),
            ('features.png', [('feat_mse_b{}', 'feature MSE through the connector')])]
  for fname, series in panels:
    present = [(key, label) for key, label in series
               if any(key.format(b) in r for r in train for b in blocks)]
    if not present:
      continue
    fig = phase_panels(plt, train, blocks, present, block_colours)
    what = 'generator and discriminator' if fname == 'gan.png' else 'feature regression'
    fig.suptitle(f'{name}: {what} per block phase\n(logged training means, each phase '
                 'against its own steps)', fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / fig.get_figheight()))  # room for the title.
    fig.savefig(os.path.join(path, fname), dpi=110); plt.close(fig)
    written.append(fname)
  return written


def phase_panels(plt, train: list, blocks: list, series: list, colours: list):
  """A figure with a panel per phase that logged any of `series` ([(key pattern, label)],
  e.g. ('d_loss_b{}', 'discriminator loss')) and per series: that phase's values of each
  block against its own training steps, so a 14-step block phase reads as well as a
  600-step one. Several series: a row per phase, a column per series; one series: the
  phases in rows of up to 3. Accuracies (keys with `acc`) span 0..1."""
  keys = [key.format(b) for key, _ in series for b in blocks]
  where = list(dict.fromkeys((r['stage'], r['phase']) for r in train
                             if any(k in r for k in keys)))
  ncols = len(series) if len(series) > 1 else min(3, len(where))
  cells = [(w, key, label) for w in where for key, label in series]
  nrows = -(-len(cells) // ncols)
  fig, axes = plt.subplots(nrows, ncols, figsize=(max(3.3 * ncols + 0.4, 6), 2.3 * nrows + 1),
                           squeeze=False)
  for ax, ((stage, ph), key, label) in zip(axes.flat, cells):
    pts = [r for r in train if (r['stage'], r['phase']) == (stage, ph)]
    for b in blocks:
      own = [r for r in pts if key.format(b) in r]
      if own:
        ax.plot([r['step'] for r in own], [r[key.format(b)] for r in own], 'o-', ms=4, lw=1,
                color=colours[b % len(colours)], label=f'block {b}')
    if not ax.lines:
      ax.text(0.5, 0.5, 'not logged', transform=ax.transAxes, ha='center', color='grey')
    elif len(ax.lines) > 1:  # one block: the phase's title names it.
      ax.legend(fontsize=7)
    ax.set_xlim(0, 1.05 * max(r['step'] for r in pts))
    if 'acc' in key:
      ax.set_ylim(-0.05, 1.05)
    ax.set_title(f'stage {stage}, {ph}', fontsize=9)
    ax.set_ylabel(label, fontsize=8); ax.set_xlabel('step in phase', fontsize=8)
    ax.tick_params(labelsize=7); ax.grid(alpha=0.3)
  for ax in axes.flat[len(cells):]:
    ax.set_visible(False)
  return fig


def phase_table(summary: dict) -> str:
  """Markdown: one row per stage and phase of the student."""
  lines = ['| stage | anchor (epoch, test acc) | phase | trainable params | steps | images/s '
           '| wall s | test acc |', '|---|---|---|---|---|---|---|---|']
  for st in summary['student']['stages']:
    a = st['anchor']
    anchor = f'{a["epoch"]}, {a["test_accuracy"]:.4f}' if a else '-'
    for p in st['phases']:
      acc = _acc(p['test_accuracy']) if 'test_accuracy' in p else '-'
      lines.append(f'| {st["stage"]} | {anchor} | {p["name"]} | {p["trainable_params"]} | '
                   f'{p["steps"]} | {p["images_per_s"]:.0f} | {p["wall_s"]:.0f} | {acc} |')
  return '\n'.join(lines) + '\n'


def plot(out: str, runs: dict) -> None:
  """accuracy.png: each run's student (or teacher) test accuracy against images seen."""
  plt = pyplot()
  fig, ax = plt.subplots(figsize=(7, 4))
  for name, path in runs.items():
    records = _records(path)
    tests = [r for r in records if r['split'] == 'test']
    student = [r for r in tests if r['phase'] != 'teacher']
    pts = student or tests
    ax.plot([r['epoch'] for r in pts], [r['accuracy'] for r in pts], 'o-', ms=3,
            label=f'{name} ({"student" if student else "teacher"})')
  ax.set_xlabel('epochs of images seen'); ax.set_ylabel('test accuracy')
  ax.set_ylim(bottom=max(0.0, ax.get_ylim()[0])); ax.grid(alpha=0.3); ax.legend(fontsize=8)
  fig.tight_layout(); fig.savefig(os.path.join(out, "accuracy.png"), dpi=120); plt.close(fig)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m msmgan_jax.report', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--out', required=True, help='results folder to (re)write')
  parser.add_argument('--machine', default=f'{platform.machine()}, {os.cpu_count()} CPU cores',
                      help='what the runs ran on, for the table')
  parser.add_argument('--overwrite', action='store_true',
                      help='rewrite a results folder that already holds files')
  parser.add_argument('workdirs', nargs='+')
  args = parser.parse_args(argv)
  if os.path.isdir(args.out) and os.listdir(args.out) and not args.overwrite:
    held = sorted(os.listdir(args.out))
    sys.stderr.write(f'error: {args.out} already holds {", ".join(held[:4])}'
                     f'{" ..." if len(held) > 4 else ""}; pass --overwrite to rewrite it (runs '
                     'named like the ones given are replaced), or give another --out\n')
    return 2
  runs = {}
  for w in args.workdirs:
    if not os.path.exists(os.path.join(w, 'summary.json')):
      sys.stderr.write(f'error: {w} holds no summary.json (unfinished run or not a workdir)\n')
      return 2
    name = os.path.basename(os.path.normpath(w))
    if name in runs:
      sys.stderr.write(f'error: {runs[name]} and {w} are both named {name}; the results folder '
                       'keeps one folder per run name: rename one of them\n')
      return 2
    runs[name] = w
  os.makedirs(args.out, exist_ok=True)
  rows, copies = [], {}
  for name, w in runs.items():
    dest = os.path.join(args.out, name)
    os.makedirs(dest, exist_ok=True)
    for f in FILES:
      if not os.path.exists(os.path.join(dest, f)) or not os.path.samefile(
          os.path.join(w, f), os.path.join(dest, f)):
        shutil.copyfile(os.path.join(w, f), os.path.join(dest, f))
    summary = json.load(open(os.path.join(dest, 'summary.json')))
    rows.append(row(name, summary, json.load(open(os.path.join(dest, 'config.json')))))
    if summary.get('student'):
      io.write_text(os.path.join(dest, 'summary.md'),
                       f'# {name}\n\nStudent test accuracy {summary["student"]["test_accuracy"]:.4f}'
                       f' ({summary["student"]["model"]}, {summary["student"]["params"]} '
                       'parameters), per stage and phase:\n\n' + phase_table(summary))
      run_plots(dest, name)
    copies[name] = dest
  io.write_json(os.path.join(args.out, 'results.json'), {'machine': args.machine, 'rows': rows})
  io.write_text(os.path.join(args.out, 'results.md'),
                   f'Machine: {args.machine}. Accuracies are on the full test split. '
                   'load: whether the student run shared the machine (mean 1-minute load '
                   f'average above its cores + {SHARED_LOAD_MARGIN}), which slows its wall times; '
                   'unknown: recorded before the load was.\n\n' + markdown(rows))
  plot(args.out, copies)
  print(markdown(rows))
  return 0


if __name__ == '__main__':
  sys.exit(main())
