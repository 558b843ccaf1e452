"""Student budgets on a small training set: `python tools/budget_study.py
[--floors 0,250,500,1000] [--train-split 'train[:4000]'] [--test-split test] [--seeds N]
[--workdir runs/budget_study] [--out results/budget] [--teacher-config '--config.X=Y ...']
[--teacher-epochs N,...] [--dataset FILE.npz] [--note TEXT]`.

The main job's config (configs/default.py: teacher 4 epochs, student 2 epochs, 3 stages x
(3 block phases + head)) on a few thousand Fashion-MNIST images, the student's budget the
only thing that changes. One teacher-only run trains the teacher (resnet20, as the config
says; `--teacher-config` changes it) and keeps its anchors; every student run is given those
anchors (`teacher.checkpoints`), so only students train, from the same teacher. Each floor is
a run with `--config.student.min_steps=FLOOR` (0: the budget the config gives today), of
`--seeds` students in one program. Every run is its own `python -m msmgan_jax.main` process,
as a user runs it; the console of each is kept in WORKDIR/logs/. `--teacher-epochs` adds
teacher-only runs with more epochs (their students are not trained). `--dataset` reads the
images from an arrays file (`python -m msmgan_jax.arrays`), for a machine without TensorFlow.

Rerunnable: finished runs are read back (their summary.json), not trained again. Writes
OUT/budget.json (every number, the commands, the machine's load around each run) and
OUT/budget.md (the table).

An experiment (tools/, not in the wheel), run from a checkout (it reads configs/default.py):
`python -m tools.budget_study` works too. The committed tables in results/budget/ name its
earlier path, `python -m msmgan_jax.lab.budget_study`, with the same arguments.
"""
import argparse
import json
import os
import shlex
import subprocess
import sys
import time

CONFIG = 'configs/default.py'
SHARED = ('The machine was shared with another training job during the study (the load '
          'averages before and after each run are in budget.json): the wall times are inflated, '
          'by up to about 2x; compare them with each other, not with a machine to itself.')


def _main_cmd(workdir: str, overrides: list) -> list:
  return [sys.executable, '-m', 'msmgan_jax.main', '--config', CONFIG, '--workdir', workdir,
          *overrides]


def _run(name: str, cmd: list, workdir: str, logs: str, records: dict) -> dict:
  """Runs `cmd` (a main process) unless `workdir` holds its finished run; returns its record:
  the command, its console's note and warning lines, the process's wall seconds and the load
  averages around it, and its summary. A finished run is read back, not run again: with its
  earlier record (budget.json), else with what its console log holds and no wall time."""
  summary_path = os.path.join(workdir, 'summary.json')
  log = os.path.join(logs, f'{name}.log')
  command = 'python ' + shlex.join(cmd[1:])
  if os.path.exists(summary_path):
    with open(summary_path) as f:
      summary = json.load(f)
    old = records.get(name)
    if old:
      return {**old, 'summary': summary}
    return {'command': command, 'wall_s': None, 'load_before': None, 'load_after': None,
            'console_notes': _notes(log), 'log': log, 'summary': summary}
  os.makedirs(logs, exist_ok=True)
  print(f'{name}: {shlex.join(cmd[1:])}', flush=True)
  load_before, t0 = os.getloadavg(), time.time()
  with open(log, 'w') as f:
    code = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=False).returncode
  wall, load_after = time.time() - t0, os.getloadavg()
  if code != 0:
    with open(log) as f:
      tail = f.read()[-3000:]
    raise SystemExit(f'{name} failed with exit {code}; its console ({log}) ends:\n{tail}')
  with open(summary_path) as f:
    summary = json.load(f)
  print(f'{name}: {wall:.0f} s', flush=True)
  return {'command': command, 'wall_s': round(wall, 1),
          'load_before': [round(x, 2) for x in load_before],
          'load_after': [round(x, 2) for x in load_after], 'console_notes': _notes(log),
          'log': log, 'summary': summary}


def _notes(log: str) -> list:
  """The `note:` and `warning:` lines of a console log ([] when there is none)."""
  if not os.path.exists(log):
    return []
  with open(log, errors='replace') as f:
    return [l.strip() for l in f if l.startswith(('note:', 'warning:'))]


def _student_row(floor: int, rec: dict) -> dict:
  st = rec['summary']['student']
  phases = [p for s in st['stages'] for p in s['phases']]
  blocks = [p['steps'] for p in phases if p['name'].startswith('block')]
  return {'floor': floor, 'steps': sum(p['steps'] for p in phases),
          'block_steps': blocks, 'test_accuracy': st['test_accuracy'],
          'test_accuracies': st.get('test_accuracies', [st['test_accuracy']]),
          'test_accuracy_std': st.get('test_accuracy_std'),
          'phase_accuracy': [[p['name'], p.get('test_accuracy')] for p in phases],
          'train_wall_s': rec['summary']['wall_s'], 'process_wall_s': rec['wall_s'],
          'load_before': rec.get('load_before'), 'load_after': rec.get('load_after'),
          'console_notes': rec.get('console_notes', []), 'command': rec['command']}


def markdown(doc: dict) -> str:
  t = doc['teacher']
  epochs = ', '.join(str(a['epoch']) for a in t['anchors'])
  accs = ', '.join(f'{a["test_accuracy"]:.4f}' for a in t['anchors'])
  lines = [
      '# Student budgets on a small training set', '',
      f'`{CONFIG}` (teacher {t["model"]} {t["epochs"]} epochs, student resnet8, 3 stages x '
      '(block_1, block_2, block_3, head), block phases in the first stage only) on '
      f'`{doc["train_split"]}` of Fashion-MNIST ({doc["num_train"]:,} images, batch 128), '
      f'tested on `{doc["test_split"]}` ({doc["num_test"]:,} images). One teacher '
      f'(test accuracy {t["test_accuracy"]:.4f}; anchors at epochs {epochs}: {accs}) guides '
      'every student; '
      'only `student.min_steps` changes (0 = the budget the config gives today). '
      + (f'{doc["seeds"]} seeds per row (seeds 0..{doc["seeds"] - 1}, one program): test '
         'accuracy is their mean +- standard deviation, each seed\'s in budget.json.'
         if doc.get('seeds', 1) > 1 else 'One seed (seed 0) per row.'), '',
      '| student.min_steps | student epochs | student steps | block-phase steps | test accuracy | '
      'wall s (run) | wall s (process) |',
      '|---|---|---|---|---|---|---|']
  for r in doc['students']:
    blocks = ', '.join(map(str, r['block_steps']))
    acc = f'{r["test_accuracy"]:.4f}'
    if len(r.get('test_accuracies', ())) > 1:
      acc += f' +- {r["test_accuracy_std"]:.4f}'
    process = '-' if r['process_wall_s'] is None else f'{r["process_wall_s"]:.0f}'
    lines.append(f'| {r["floor"]} | {r["epochs"]} | {r["steps"]} | {blocks} | {acc} | '
                 f'{r["train_wall_s"]:.0f} | {process} |')
  if doc.get('teachers'):
    lines += ['', 'Teacher-only runs at larger budgets (their students not trained):', '',
              '| teacher epochs | teacher steps | test accuracy | wall s (run) |', '|---|---|---|---|']
    for r in doc['teachers']:
      lines.append(f'| {r["epochs"]} | {r["steps"]} | {r["test_accuracy"]:.4f} | '
                   f'{r["train_wall_s"]:.0f} |')
  lines += [
      '', 'wall s (run): the run\'s own wall time (summary.json; compilation included, start-up '
      'and data loading not); wall s (process): the whole command.', '',
      f'Machine: {doc["machine"]}. {doc["load_note"]}', '']
  if doc.get('see_also'):
    lines += [doc['see_also'], '']
  lines += [
      'Console lines the runs printed about their budget:', '']
  for r in doc['students']:
    for n in r['console_notes']:
      lines.append(f'- min_steps {r["floor"]}: `{n}`')
  lines += ['', 'Commands (each run its own process; the students read the teacher run\'s '
            'anchors):', '', '```', f'# rerun all: python tools/budget_study.py '
            f'{doc["arguments"]}', doc['teacher_command']]
  lines += [r['command'] for r in doc['students']]
  lines += [r['command'] for r in doc.get('teachers', [])]
  lines += ['```', '']
  return '\n'.join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python tools/budget_study.py',
                                   description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--floors', default='0,250,500,1000',
                      help='student.min_steps of each student run (0: today\'s budget)')
  parser.add_argument('--train-split', default='train[:4000]')
  parser.add_argument('--test-split', default='test')
  parser.add_argument('--workdir', default='runs/budget_study')
  parser.add_argument('--out', default='results/budget')
  parser.add_argument('--teacher-epochs', default='',
                      help='extra teacher-only runs with these teacher.epochs (comma-separated)')
  parser.add_argument('--dataset', default='',
                      help='dataset.name (default fashion_mnist from TFDS; an arrays .npz file '
                      'of it, python -m msmgan_jax.arrays, runs without TensorFlow)')
  parser.add_argument('--seeds', type=int, default=1, help='students per run (config seeds)')
  parser.add_argument('--teacher-config', default='',
                      help='overrides of the shared teacher run, e.g. --config.teacher.epochs=16 '
                      '(space-separated; the default: the config\'s teacher)')
  parser.add_argument('--note', default=SHARED,
                      help='what budget.md says about the machine and its load')
  args = parser.parse_args(argv)
  floors = [int(x) for x in args.floors.split(',') if x.strip()]
  data = [f'--config.dataset.train_split={args.train_split}',
          f'--config.dataset.test_split={args.test_split}']
  if args.dataset:
    data.insert(0, f'--config.dataset.name={args.dataset}')
  seeds = [f'--config.seeds={args.seeds}'] if args.seeds != 1 else []
  out_json = os.path.join(args.out, 'budget.json')
  records = {}
  if os.path.exists(out_json):
    with open(out_json) as f:
      records = json.load(f).get('records', {})
  logs = os.path.join(args.workdir, 'logs')

  def save(doc):
    os.makedirs(args.out, exist_ok=True)
    with open(out_json, 'w') as f:
      json.dump(doc, f, indent=1)
    if doc.get('students'):
      with open(os.path.join(args.out, 'budget.md'), 'w') as f:
        f.write(markdown(doc))

  t_dir = os.path.join(args.workdir, 'teacher')
  records['teacher'] = _run('teacher', _main_cmd(t_dir, ['--config.method=teacher', *data,
                                                         *args.teacher_config.split()]),
                            t_dir, logs, records)
  t_sum = records['teacher']['summary']['teacher']
  anchors = tuple(os.path.join(t_dir, 'checkpoints', 'anchors', str(a['epoch']))
                  for a in t_sum['anchors'])
  from msmgan_jax import cli  # pylint: disable=g-import-not-at-top
  cfg = cli.parse(['budget_study', '--config', CONFIG])[0]  # as main reads it.
  num_train = _count(args.train_split, args.dataset)
  doc = {'config': CONFIG, 'train_split': args.train_split, 'test_split': args.test_split,
         'dataset': args.dataset or 'fashion_mnist', 'seeds': args.seeds,
         'arguments': ' '.join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
         'teacher': {'model': t_sum['model'], 'epochs': max(a['epoch'] for a in t_sum['anchors']),
                     'test_accuracy': t_sum['test_accuracy'], 'anchors': t_sum['anchors'],
                     'wall_s': records['teacher']['summary']['wall_s']},
         'teacher_command': records['teacher']['command'], 'students': [], 'teachers': [],
         'machine': f'{os.cpu_count()} CPU cores ({_cpu_name()})',
         'load_note': args.note,
         'see_also': _see_also(args.out),
         'records': records}
  given = '--config.teacher.checkpoints=(' + ', '.join(repr(a) for a in anchors) + ',)'
  for floor in floors:
    name = f'min_steps_{floor}'
    w = os.path.join(args.workdir, name)
    records[name] = _run(name, _main_cmd(w, [*data, given, *seeds,
                                             f'--config.student.min_steps={floor}']),
                         w, logs, records)
    row = _student_row(floor, records[name])
    from msmgan_jax.training import loop  # pylint: disable=g-import-not-at-top
    cfg.student.min_steps = floor
    row['epochs'] = loop.student_epochs(cfg, num_train)
    doc['num_train'] = num_train
    doc['students'].append(row)
    doc['num_test'] = _count(args.test_split, args.dataset)
    save(doc)
  for e in [int(x) for x in args.teacher_epochs.split(',') if x.strip()]:
    name = f'teacher_epochs_{e}'
    w = os.path.join(args.workdir, name)
    records[name] = _run(name, _main_cmd(w, ['--config.method=teacher', *data,
                                             f'--config.teacher.epochs={e}']), w, logs, records)
    s = records[name]['summary']
    doc['teachers'].append({'epochs': e, 'steps': e * (doc['num_train'] // cfg.batch_size),
                            'test_accuracy': s['teacher']['test_accuracy'],
                            'anchors': s['teacher']['anchors'],
                            'train_wall_s': s['wall_s'], 'process_wall_s': records[name]['wall_s'],
                            'command': records[name]['command']})
    save(doc)
  save(doc)
  print(f'wrote {out_json} and budget.md')
  return 0


def _count(split: str, dataset: str = '') -> int:
  """Examples in a Fashion-MNIST split such as train[:4000] or test (TFDS's split arithmetic),
  or in a split of an arrays file `dataset`."""
  if dataset.endswith('.npz'):
    from msmgan_jax.data import arrays  # pylint: disable=g-import-not-at-top
    a = arrays.read(dataset)
    labels = a['train_labels' if split.startswith('train') else 'test_labels']
    return len(labels[arrays.slice_split(len(labels), split)])
  from msmgan_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from msmgan_jax.data import datasets  # pylint: disable=g-import-not-at-top
  return datasets.num_examples(datasets.builder_for(config_lib.defaults().dataset), split)


def _see_also(out: str) -> str:
  """A line naming the other tables in `out` (say, the same study elsewhere), or ''."""
  others = sorted(n for n in os.listdir(out) if n.endswith('.md') and n != 'budget.md') \
      if os.path.isdir(out) else []
  return ('Other tables in this folder: ' + ', '.join(f'[{n}]({n})' for n in others) + '.'
          if others else '')


def _cpu_name() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return 'unknown CPU'


if __name__ == '__main__':
  sys.exit(main())
