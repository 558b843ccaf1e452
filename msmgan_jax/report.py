"""Results table from run workdirs: `python -m msmgan_jax.report --out DIR WORKDIR...`.

Copies each run's `config.json`, `summary.json` and `metrics.jsonl` to `DIR/<run>/`, and
writes `DIR/results.json`, `DIR/results.md` (one row per run) and `DIR/accuracy.png`
(student, or teacher, test accuracy against epochs of images seen).
"""
import argparse
import json
import os
import platform
import shutil
import sys

FILES = ('config.json', 'summary.json', 'metrics.jsonl')


def row(name: str, summary: dict) -> dict:
  """The table row of one run's summary."""
  t, s = summary.get('teacher') or {}, summary.get('student') or {}
  phases = [p for st in s.get('stages', []) for p in st['phases']]
  return {
      'run': name, 'method': summary['method'],
      'variant': ','.join(summary.get('variant', [])) or '-',
      'teacher': t.get('model'), 'teacher_acc': t.get('test_accuracy'),
      'student': s.get('model'), 'student_acc': s.get('test_accuracy'),
      'compression': s.get('compression'), 'stages': len(s.get('stages', [])) or None,
      'student_steps': sum(p['steps'] for p in phases) or None,
      'student_wall_s': s.get('wall_s'), 'teacher_wall_s': t.get('wall_s'),
      'wall_s': summary.get('wall_s')}


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


def plot(out: str, runs: dict) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(7, 4))
  for name, path in runs.items():
    records = [json.loads(l) for l in open(os.path.join(path, 'metrics.jsonl'))]
    tests = [r for r in records if r['split'] == 'test']
    student = [r for r in tests if r['phase'] != 'teacher']
    pts = student or tests
    ax.plot([r['epoch'] for r in pts], [r['accuracy'] for r in pts], 'o-', ms=3,
            label=f'{name} ({"student" if student else "teacher"})')
  ax.set_xlabel('epochs of images seen'); ax.set_ylabel('test accuracy')
  ax.set_ylim(bottom=max(0.0, ax.get_ylim()[0])); ax.grid(alpha=0.3); ax.legend(fontsize=8)
  fig.tight_layout(); fig.savefig(os.path.join(out, 'accuracy.png'), dpi=120)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--out', required=True, help='results folder to (re)write')
  parser.add_argument('--machine', default=f'{platform.machine()}, {os.cpu_count()} CPU cores',
                      help='what the runs ran on, for the table')
  parser.add_argument('workdirs', nargs='+')
  args = parser.parse_args(argv)
  runs = {}
  for w in args.workdirs:
    if not os.path.exists(os.path.join(w, 'summary.json')):
      sys.stderr.write(f'error: {w} holds no summary.json (unfinished run or not a workdir)\n')
      return 2
    runs[os.path.basename(os.path.normpath(w))] = w
  os.makedirs(args.out, exist_ok=True)
  rows = []
  for name, w in runs.items():
    os.makedirs(os.path.join(args.out, name), exist_ok=True)
    for f in FILES:
      shutil.copyfile(os.path.join(w, f), os.path.join(args.out, name, f))
    rows.append(row(name, json.load(open(os.path.join(w, 'summary.json')))))
  with open(os.path.join(args.out, 'results.json'), 'w') as f:
    json.dump({'machine': args.machine, 'rows': rows}, f, indent=2)
  with open(os.path.join(args.out, 'results.md'), 'w') as f:
    f.write(f'Machine: {args.machine}. Accuracies are on the full test split.\n\n')
    f.write(markdown(rows))
  plot(args.out, runs)
  print(markdown(rows))
  return 0


if __name__ == '__main__':
  sys.exit(main())
