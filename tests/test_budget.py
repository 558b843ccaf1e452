"""The student's step floor (`student.min_steps`) and the budget warning: the floor raises
`student.epochs` to the fewest whole epochs that reach it and nothing else, it leaves every
committed config's runs as they were, and a run on a small training set is told, in one
console line, which field to set and to what. Seconds: configs and step counts, no data;
one tiny `ce` run on synthetic batches."""
import importlib
import math
import os

import pytest
from support import REPO_ROOT

from msmgan_jax import config
from msmgan_jax.data import datasets as data
from msmgan_jax.lab import compare
from msmgan_jax.methods import registry
from msmgan_jax.training import loop

FMNIST_TRAIN = 60_000
# Training images of the splits the committed configs train on (Fashion-MNIST's train split).
SPLIT_IMAGES = {'train': FMNIST_TRAIN, 'train[:10%]': FMNIST_TRAIN // 10}


def default_cfg(**fields):
  cfg = importlib.import_module('configs.default').get_config()
  for path, value in fields.items():
    group, _, name = path.rpartition('.')
    (cfg[group] if group else cfg)[name] = value
  return cfg


def all_phase_steps(cfg, num_train: int) -> list:
  """[(stage, phase name, steps)] of every phase the student of `cfg` trains."""
  method = registry.METHODS[cfg.method]
  stages = cfg.anchors.num if method.uses_teacher and method.all_anchors else 1
  from msmgan_jax.core import models  # pylint: disable=g-import-not-at-top
  k = models.create_model(cfg.student.model, 10).num_blocks
  return [(m, p.name, registry.phase_steps(cfg, p, num_train, stages, m))
          for m in range(stages) for p in registry.stage_phases(cfg, k, m)]


def test_default_is_off_and_leaves_the_budget_alone():
  assert config.defaults().student.min_steps == 0
  cfg = default_cfg()
  assert loop.student_epochs(cfg, 4000) == 2
  budget = loop.student_budget(cfg, 4000)
  # The run: 2 epochs of 4,000 images, 62 steps by epochs x images / batch_size;
  # the phases round to 63 in all, 2 steps per block phase.
  assert budget == {'epochs': 2, 'steps': 62, 'total': 63, 'block': [2, 2, 2]}


@pytest.mark.parametrize('num_train, floor, epochs', [
    (4000, 500, 16),     # 500 x 128 / 4,000 = 16 exactly.
    (4000, 1000, 32),
    (4000, 2000, 64),
    (3000, 500, 22),     # 21.33 -> the next whole epoch.
    (4000, 63, 3),       # 2 epochs give 62.5 steps: one step short -> 3 epochs.
    (4000, 62, 2),       # 62.5 >= 62: not below the floor, unchanged.
    (60_000, 500, 2),    # the full split: 937 steps, unchanged.
])
def test_the_floor_raises_epochs_to_the_fewest_that_reach_it(num_train, floor, epochs):
  cfg = default_cfg(**{'student.min_steps': floor})
  assert loop.student_epochs(cfg, num_train) == epochs
  assert epochs * num_train / cfg.batch_size >= floor  # the floor is reached ...
  if epochs != cfg.student.epochs:  # ... by the fewest whole epochs (when it raised them).
    assert (epochs - 1) * num_train / cfg.batch_size < floor
    assert epochs == math.ceil(floor * cfg.batch_size / num_train)
  # Every phase's steps are those of a config that asks for those epochs without a floor:
  # the floor changes the epochs and nothing else (shares, schedule, phases).
  plain = default_cfg(**{'student.epochs': epochs})
  assert all_phase_steps(cfg, num_train) == all_phase_steps(plain, num_train)


def test_registry_and_loop_apply_the_same_rule():
  """`phase_steps` (what trains) and `loop.student_epochs` (what the note says) agree."""
  for method in ('msmgan', 'kd', 'ce'):
    for batch in (64, 128, 256):
      for num_train in (500, 1234, 4000, 6000, 12_000):
        for floor in (0, 100, 500, 703, 1000):
          cfg = default_cfg(**{'method': method, 'batch_size': batch,
                               'student.min_steps': floor})
          plain = default_cfg(**{'method': method, 'batch_size': batch,
                                 'student.epochs': loop.student_epochs(cfg, num_train)})
          assert all_phase_steps(cfg, num_train) == all_phase_steps(plain, num_train)


def test_the_pytorch_check_trains_the_steps_we_train():
  """`torch_check.schedule` (the PyTorch side of `python -m msmgan_jax.torch_check`) counts
  the steps, warmup and peak rate our trainer uses, the `student.min_steps` floor included."""
  from msmgan_jax.lab import torch_check  # pylint: disable=g-import-not-at-top
  for method in ('ce', 'kd'):
    for batch, num_train, floor, lr in ((128, 6000, 0, 0.1), (128, 4000, 500, 0.2),
                                        (64, 1234, 703, 0.05)):
      cfg = default_cfg(**{'method': method, 'batch_size': batch, 'student.min_steps': floor,
                           'student.lr': lr})
      total, warmup, peak = torch_check.schedule(cfg, num_train)
      assert total == loop.student_budget(cfg, num_train)['total'] >= floor
      assert warmup == int(cfg.student.warmup_epochs * (num_train // batch))
      assert peak == pytest.approx(lr * batch / 128)


def test_a_pytorch_check_of_one_method_keeps_the_others_rows():
  """`--methods kd` after `--methods ce` once overwrote ce's 5 seeds with kd's row alone;
  now the rows of methods not checked again stay, a rerun of kd takes its finished seeds,
  and rows measured against another teacher anchor are dropped, not mixed in."""
  from msmgan_jax.lab import torch_check  # pylint: disable=g-import-not-at-top
  ce = {'method': 'ce', 'setting': 'student.lr=0.2', 'seeds': [0, 1], 'accuracies': [0.8, 0.9],
        'std': 0.05}  # the population std an older file held; carried, the sample std:
  kd = {'method': 'kd', 'setting': 'kd.tau=2.0', 'seeds': [0], 'accuracies': [0.85], 'std': 0.0}
  earlier = {'teacher_anchor': 'anchors/15', 'rows': [ce, kd]}
  kept, before = torch_check.carried_over(earlier, 'anchors/15', ['kd'])
  assert kept == [{**ce, 'std': pytest.approx(0.0707107)}]  # 0.1 / sqrt(2), n - 1 divisor.
  assert before == {('kd', 'kd.tau=2.0', 'random'): kd}
  kept, before = torch_check.carried_over(earlier, 'anchors/15', ['ce', 'kd'])
  assert kept == [] and set(before) == {('ce', 'student.lr=0.2', 'random'),
                                        ('kd', 'kd.tau=2.0', 'random')}
  # A row from another start (the anchor start) is not the random start's, nor the reverse.
  kd_anchor = {**kd, 'init': 'first_anchor:anchors/5'}
  _, before = torch_check.carried_over({'teacher_anchor': 'anchors/15', 'rows': [kd_anchor]},
                                       'anchors/15', ['kd'])
  assert set(before) == {('kd', 'kd.tau=2.0', 'first_anchor:anchors/5')}
  assert torch_check.carried_over(earlier, 'other/15', ['kd']) == ([], {})
  assert torch_check.carried_over({}, 'anchors/15', ['kd']) == ([], {})
  rows = torch_check.ordered([kd, {'method': 'x'}, ce], ('ce', 'kd', 'dkd'))
  assert [r['method'] for r in rows] == ['ce', 'kd', 'x']


def committed_runs():
  """(config file, run name, its student config, training images) of every run the committed
  comparison configs make (every method, tuning candidate, ablation and extra budget; each
  final run with each candidate, as tuning may choose any), and the plain run configs."""
  out = []
  for path in sorted(os.listdir(REPO_ROOT / 'configs')):
    if not path.endswith('.py') or path == '__init__.py':
      continue
    c = importlib.import_module(f'configs.{path[:-3]}').get_config()
    if 'base' not in c:
      if c.method != 'teacher':
        out.append((path, c.method, c, SPLIT_IMAGES[c.dataset.train_split]))
      continue
    num_train = SPLIT_IMAGES[c.base.dataset.train_split]
    anchors = ('a1', 'a2', 'a3')
    for run in compare.plan(c):
      if run.kind == 'tune':
        out.append((path, run.name, compare.student_config(c, run, anchors, {}), num_train))
        continue
      for i, setting in enumerate(c.tuning[run.method]):
        cfg = compare.student_config(c, run, anchors, {run.method: setting})
        out.append((path, f'{run.name} (candidate {i})', cfg, num_train))
  return out


def test_the_committed_configs_train_the_same_steps_with_the_advised_floor():
  """Whoever sets student.min_steps=ADVISED_MIN_STEPS (or any floor up to 703) on a committed
  config trains the very run its results came from; and none of them warns."""
  runs = committed_runs()
  names = {path for path, *_ in runs}
  assert {'compare_lowdata.py', 'compare_lowdata_v2.py', 'default.py'} <= names
  lowest = min(loop.student_budget(cfg, n)['steps'] for _, _, cfg, n in runs)
  assert lowest == 703  # train[:10%] = 6,000 images x 15 epochs / 128.
  assert loop.ADVISED_MIN_STEPS <= lowest
  for path, name, cfg, num_train in runs:
    before = all_phase_steps(cfg, num_train)
    assert loop.budget_notes(cfg, num_train) == [], (path, name)
    for floor in (loop.ADVISED_MIN_STEPS, lowest):
      cfg.student.min_steps = floor
      assert all_phase_steps(cfg, num_train) == before, (path, name, floor)
      assert loop.budget_notes(cfg, num_train) == [], (path, name, floor)
    cfg.student.min_steps = 0


def test_the_lowdata_comparisons_at_their_base():
  """The brief's check, spelled out: compare_lowdata(_v2).base, 6,000 images, 15 epochs."""
  for name in ('compare_lowdata', 'compare_lowdata_v2'):
    base = importlib.import_module(f'configs.{name}').get_config().base
    assert base.dataset.train_split == 'train[:10%]' and base.student.epochs == 15
    for method in ('ce', 'kd', 'msmgan'):
      base.method, base.student.min_steps = method, 0
      before = all_phase_steps(base, 6000)
      base.student.min_steps = loop.ADVISED_MIN_STEPS
      assert all_phase_steps(base, 6000) == before
      assert loop.student_budget(base, 6000)['steps'] == 703
      base.student.min_steps = 704  # one above: 16 epochs, a different run.
      assert loop.student_epochs(base, 6000) == 16
      assert all_phase_steps(base, 6000) != before


def test_a_small_training_set_gets_a_warning_naming_the_field_and_a_value():
  (line,) = loop.budget_notes(default_cfg(), 4000)
  assert line.startswith('warning: the student trains only 63 steps (student.epochs=2 x 4,000 '
                         'training images / batch_size 128; block phases 2 steps each)')
  assert '--config.student.min_steps=500 (here 16 epochs)' in line
  assert '--config.student.epochs=16' in line
  # The value it names fits: with it, no warning, and the budget reaches the advised steps.
  fixed = default_cfg(**{'student.min_steps': loop.ADVISED_MIN_STEPS})
  assert loop.student_budget(fixed, 4000)['steps'] >= loop.ADVISED_MIN_STEPS
  assert [l.split(':')[0] for l in loop.budget_notes(fixed, 4000)] == ['note']
  assert loop.budget_notes(default_cfg(**{'student.epochs': 16}), 4000) == []
  # No warning at or above the advised steps, for a teacher-only run, or with a floor set.
  assert loop.budget_notes(default_cfg(), FMNIST_TRAIN) == []
  assert loop.budget_notes(default_cfg(**{'method': 'teacher'}), 4000) == []
  assert loop.budget_notes(default_cfg(**{'student.min_steps': 50}), 4000) == []


def test_the_note_says_what_the_floor_did():
  (line,) = loop.budget_notes(default_cfg(**{'student.min_steps': 500}), 4000)
  assert line == ("note: student.min_steps=500 raises the student's budget: student.epochs=2 x "
                  '4,000 training images / batch_size 128 gives 62 steps, fewer than the '
                  'floor, so the student trains 16 epochs (502 steps; block phases 17 steps '
                  'each).')


def test_steps_per_epoch_prints_the_notes_once_per_run(capsys):
  """The trainers ask for steps_per_epoch before training (the teacher, then the student):
  the console gets the note once per run (per loaded data), on stderr."""
  cfg = default_cfg(**{'student.min_steps': 500})
  info = data.DatasetInfo('fashion_mnist', 10, (28, 28, 1), 4000, 10000)
  assert loop.steps_per_epoch(cfg, info) == 31
  assert loop.steps_per_epoch(cfg, info) == 31  # the student's call: already noted.
  out, err = capsys.readouterr()
  assert out == '' and err.count('note: student.min_steps=500 raises') == 1, err
  again = data.DatasetInfo('fashion_mnist', 10, (28, 28, 1), 4000, 10000)  # a new run.
  loop.steps_per_epoch(default_cfg(), again)
  err = capsys.readouterr().err
  assert err.startswith('warning: the student trains only 63 steps') and err.count('\n') == 1


def test_a_teacher_trained_briefly_gets_a_warning_naming_teacher_epochs():
  """The teacher's own line: only for the teacher's trainer (`teacher=True`), under
  ADVISED_MIN_STEPS steps of whole batches (what the teacher trains)."""
  lines = loop.budget_notes(default_cfg(**{'method': 'teacher'}), 4000, teacher=True)
  assert lines == ['warning: the teacher trains only 124 steps (teacher.epochs=4 x 31 batches '
                   'of 4,000 training images at batch_size 128): the configs\' epoch budgets are '
                   'sized for 60,000 images. Set --config.teacher.epochs=17 (527 steps); fewer '
                   'steps leave the network undertrained (a resnet8 student on 4,000 '
                   'Fashion-MNIST images: 0.47 test accuracy after 63 steps, 0.78 after 502).']
  # A run that trains both: the teacher's line, then the student's.
  both = loop.budget_notes(default_cfg(), 4000, teacher=True)
  assert [l.split(' trains')[0] for l in both] == ['warning: the teacher', 'warning: the student']
  assert loop.budget_notes(default_cfg(**{'teacher.epochs': 17, 'method': 'teacher'}), 4000,
                           teacher=True) == []
  assert loop.budget_notes(default_cfg(), FMNIST_TRAIN, teacher=True) == []  # 1,872 steps.
  teacher_cfg = importlib.import_module('configs.teacher_fmnist').get_config()
  assert loop.budget_notes(teacher_cfg, FMNIST_TRAIN, teacher=True) == []


def test_only_the_teachers_trainer_prints_the_teachers_line(capsys):
  """steps_per_epoch asked by training/teacher.py (teacher=True) prints the teacher's line
  (and the student's, before the teacher trains); asked by the student's trainer alone (a
  teacher given), the student's only."""
  info = data.DatasetInfo('fashion_mnist', 10, (28, 28, 1), 4000, 10000)
  assert loop.steps_per_epoch(default_cfg(), info, teacher=True) == 31
  assert loop.steps_per_epoch(default_cfg(), info) == 31  # then the student's: noted already.
  err = capsys.readouterr().err.splitlines()
  assert [l.split(' trains')[0] for l in err] == ['warning: the teacher', 'warning: the student']
  given = data.DatasetInfo('fashion_mnist', 10, (28, 28, 1), 4000, 10000)
  loop.steps_per_epoch(default_cfg(), given)
  err = capsys.readouterr().err.splitlines()
  assert [l.split(' trains')[0] for l in err] == ['warning: the student']


@pytest.mark.parametrize('value', [-1, True])  # (the config's types refuse 1.5 or '500')
def test_a_bad_floor_is_refused_naming_the_field(value):
  cfg = default_cfg(**{'student.min_steps': value})
  with pytest.raises(config.ConfigError, match=r'config field student.min_steps: must be an '
                     r'integer >= 0'):
    config.validate(cfg)


@pytest.mark.slow
def test_a_tiny_run_trains_the_raised_budget(tmp_path, capsys):
  """End to end on synthetic batches: `ce`, 64 images of batch 16, 1 epoch = 4 steps;
  min_steps=10 raises it to 3 epochs, 12 steps, which the summary records."""
  from support import synthetic_batches, synthetic_eval, tiny_cfg  # pylint: disable=g-import-not-at-top
  from msmgan_jax.core import sharding  # pylint: disable=g-import-not-at-top
  from msmgan_jax.training import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  from msmgan_jax.training import student  # pylint: disable=g-import-not-at-top
  cfg = tiny_cfg(**{'method': 'ce', 'student.epochs': 1, 'student.min_steps': 10,
                    'student.warmup_epochs': 0.0, 'log_every_steps': 4})
  info = data.DatasetInfo('fashion_mnist', 10, (28, 28, 1), 64, 40)
  wd = workdir_lib.Workdir(str(tmp_path))
  os.makedirs(wd.path, exist_ok=True)
  summary = student.Distiller(cfg, wd, info, synthetic_batches, synthetic_eval,
                              sharding.mesh(), None).run()
  steps = [p['steps'] for s in summary['stages'] for p in s['phases']]
  assert steps == [12]
  assert ('note: student.min_steps=10 raises the student\'s budget: student.epochs=1 x 64 '
          'training images / batch_size 16 gives 4 steps, fewer than the floor, so the student '
          'trains 3 epochs (12 steps).') in capsys.readouterr().err
