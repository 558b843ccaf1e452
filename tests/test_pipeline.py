"""End to end on real Fashion-MNIST slices: the teacher run's workdir contract, resume of a
finished run, and every ablation's config file (in smoke mode) through the whole pipeline."""
import json
import os

import pytest

from support import load_config, shrink
from msmgan_jax.training import train

pytestmark = pytest.mark.slow  # every test here trains, or reads the trained `teacher_run`.


def test_teacher_workdir_contract(teacher_run):
  cfg, workdir, summary = teacher_run
  assert sorted(os.listdir(workdir)) == ['.lock', '.owner', 'checkpoints', 'config.json',
                                         'metrics.jsonl', 'summary.json', 'tensorboard']
  assert json.load(open(os.path.join(workdir, 'config.json'))) == json.loads(cfg.to_json())
  records = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
  for r in records:
    assert {'step', 'epoch', 'stage', 'phase', 'split'} <= set(r)
  tests = [r for r in records if r['split'] == 'test']
  assert [r['epoch'] for r in tests] == [1.0, 2.0] and all(r['count'] == 1000 for r in tests)
  assert any(r['split'] == 'train' and 'loss' in r and 'images_per_s' in r for r in records)
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints', 'anchors'))) == ['1', '2']
  assert summary == json.load(open(os.path.join(workdir, 'summary.json')))
  t = summary['teacher']
  assert summary['method'] == 'teacher' and summary['dataset'] == 'fashion_mnist'
  assert t['model'] == 'resnet8' and t['params'] == 77754  # resnet8, 1 input channel, 10-way head.
  assert [a['epoch'] for a in t['anchors']] == [1, 2]
  assert t['test_accuracy'] == t['anchors'][-1]['test_accuracy'] == tests[-1]['accuracy']
  assert t['test_accuracy'] > 0.5  # 2 epochs on 1800 real images; chance is 0.1.
  assert summary['wall_s'] > 0


def test_finished_run_is_not_redone(teacher_run):
  cfg, workdir, summary = teacher_run
  stamp = {f: os.stat(os.path.join(workdir, f)).st_mtime_ns for f in os.listdir(workdir)}
  assert train.train_and_evaluate(cfg, workdir) == summary
  assert stamp == {f: os.stat(os.path.join(workdir, f)).st_mtime_ns for f in os.listdir(workdir)}


@pytest.mark.parametrize('name,variant', [
    ('default', []),
    ('ablation_single_stage', ['single_stage']),
    ('ablation_end_to_end', ['end_to_end']),
    ('ablation_no_gan', ['no_gan']),
    ('ablation_no_mutual', ['no_mutual']),
    ('ablation_no_blocks', ['no_blocks']),
])
def test_method_and_ablations_run_in_smoke_mode(name, variant, repo_root, teacher_run, tmp_path):
  t_cfg, t_dir, t_summary = teacher_run
  cfg = shrink(load_config(repo_root, name), t_cfg.dataset.data_dir)
  anchors = [a['path'] for a in t_summary['teacher']['anchors']]
  cfg.teacher.epochs = t_cfg.teacher.epochs
  cfg.teacher.checkpoints = tuple(anchors[-cfg.anchors.num:])
  cfg.anchors.epochs = tuple(a['epoch'] for a in
                                    t_summary['teacher']['anchors'][-cfg.anchors.num:])
  summary = train.train_and_evaluate(cfg, str(tmp_path))
  assert summary['method'] == 'msmgan' and summary['variant'] == variant
  s = summary['student']
  assert s['model'] == 'resnet8' and s['params'] == 77754
  assert s['compression'] == 1.0  # resnet8 teaching resnet8 here.
  assert len(s['stages']) == (1 if 'single_stage' in variant else 2)
  assert [st['anchor']['path'] for st in s['stages']] == list(cfg.teacher.checkpoints)
  for m, st in enumerate(s['stages']):
    names = [p['name'] for p in st['phases']]
    blocks = ['blocks'] if 'end_to_end' in variant else ['block_1', 'block_2', 'block_3']
    # stages.block_stages=1 (the default): block phases in the first stage only.
    assert names == (blocks if m == 0 and 'no_blocks' not in variant else []) + ['head']
    for p in st['phases']:
      assert {'name', 'trainable_params', 'steps', 'wall_s', 'images_per_s'} <= set(p)
      assert ('test_accuracy' in p) == (p['name'] == 'head')  # smoke: after each stage only.
      assert ('disc_trainable_params' in p) == (p['name'] != 'head' and 'no_gan' not in variant)
      assert ('teacher_copy_params' in p) == (p['name'] == 'head' and 'no_mutual' not in variant)
  # Chance is 0.1 +- 0.0095 on these 1000 test images. A few dozen steps from a 2-epoch
  # teacher reach 0.14-0.37, moving with the teacher's data order and the schedule; this
  # checks the whole pipeline learns at all. Accuracy is measured by the validation runs.
  assert s['test_accuracy'] == s['stages'][-1]['phases'][-1]['test_accuracy'] > 0.12
  records = [json.loads(line) for line in open(tmp_path / 'metrics.jsonl')]
  train_keys = set().union(*(r for r in records if r['split'] == 'train' and r['stage'] == 1))
  assert ({'feat_mse_b1', 'feat_mse_b3', 'g_loss'} <= train_keys) == ('no_blocks' not in variant)
  assert ('d_acc_real_b2' in train_keys) == (not {'no_gan', 'no_blocks'} & set(variant))
  assert os.path.isdir(tmp_path / 'checkpoints' / 'student_final' / '0')


def _student_cfg(repo_root, teacher_run, **teacher_fields):
  t_cfg, _, t_summary = teacher_run
  cfg = shrink(load_config(repo_root, 'default'), t_cfg.dataset.data_dir)
  cfg.teacher.epochs, cfg.anchors.num = 2, 2
  cfg.teacher.checkpoints = tuple(a['path'] for a in t_summary['teacher']['anchors'])
  for k, v in teacher_fields.items():
    cfg.teacher[k] = v
  return cfg


def test_anchor_paths_missing_or_of_another_model_are_clear_errors(repo_root, teacher_run,
                                                                   tmp_path):
  from msmgan_jax import errors  # pylint: disable=g-import-not-at-top
  good = _student_cfg(repo_root, teacher_run).teacher.checkpoints
  cfg = _student_cfg(repo_root, teacher_run, checkpoints=(good[0], str(tmp_path / 'nope')))
  with pytest.raises(errors.CheckpointError, match='nope not found.*teacher.checkpoints'):
    train.train_and_evaluate(cfg, str(tmp_path / 'a'))
  cfg = _student_cfg(repo_root, teacher_run, model='resnet14')
  with pytest.raises(errors.CheckpointError, match="holds a 'resnet8' but teacher.model is "
                                                  "'resnet14'"):
    train.train_and_evaluate(cfg, str(tmp_path / 'b'))
  # Checked before any work: no workdir was made.
  assert not os.path.exists(tmp_path / 'a') and not os.path.exists(tmp_path / 'b')


def test_corrupt_checkpoint_is_a_clear_error_and_loses_nothing(teacher_run, tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  from msmgan_jax import errors  # pylint: disable=g-import-not-at-top
  cfg, workdir, _ = teacher_run
  copy = tmp_path / 'run'
  shutil.copytree(workdir, copy)
  os.remove(copy / 'summary.json')  # an unfinished run: the next call restores the anchors.
  step_dir = copy / 'checkpoints' / 'anchors' / '2' / 'state'
  victims = [p for p in step_dir.rglob('*') if p.is_file() and p.stat().st_size > 1000]
  for p in victims:
    p.write_bytes(b'\0' * p.stat().st_size)
  before = {str(p): p.read_bytes() for p in copy.rglob('*') if p.is_file()}
  with pytest.raises(errors.CheckpointError, match='could not be restored.*move it away'):
    train.train_and_evaluate(cfg, str(copy))
  assert {str(p): p.read_bytes() for p in copy.rglob('*') if p.is_file()} == before


def test_report_tables_runs_and_refuses_unfinished_ones(teacher_run, tmp_path):
  from msmgan_jax.lab import report  # pylint: disable=g-import-not-at-top
  _, workdir, summary = teacher_run
  out = tmp_path / 'results'
  assert report.main(['--out', str(out), '--machine', 'test box', workdir]) == 0
  results = json.load(open(out / 'results.json'))
  assert results['machine'] == 'test box' and len(results['rows']) == 1
  r = results['rows'][0]
  assert r['method'] == 'teacher' and r['teacher_acc'] == summary['teacher']['test_accuracy']
  assert r['student_acc'] is None
  assert f"| {summary['teacher']['test_accuracy']:.4f} |" in open(out / 'results.md').read()
  name = os.path.basename(workdir)
  assert sorted(os.listdir(out / name)) == ['config.json', 'metrics.jsonl', 'summary.json']
  assert (out / 'accuracy.png').stat().st_size > 1000
  assert report.main(['--out', str(tmp_path / 'x'), str(tmp_path)]) == 2
  assert not (tmp_path / 'x').exists()
  # A results folder that holds files is rewritten only with --overwrite; nothing changes.
  before = {str(p): p.read_bytes() for p in out.rglob('*') if p.is_file()}
  assert report.main(['--out', str(out), workdir]) == 2
  assert {str(p): p.read_bytes() for p in out.rglob('*') if p.is_file()} == before
  assert report.main(['--out', str(out), '--overwrite', workdir]) == 0


def test_ce_baseline_trains_the_student_alone(repo_root, tfds_data_dir, tmp_path):
  cfg = shrink(load_config(repo_root, 'ce_fmnist_full'), tfds_data_dir)
  summary = train.train_and_evaluate(cfg, str(tmp_path))
  assert summary['method'] == 'ce' and summary['teacher'] is None and summary['variant'] == []
  s = summary['student']
  assert s['compression'] is None and len(s['stages']) == 1
  assert s['stages'][0]['anchor'] is None
  (phase,) = s['stages'][0]['phases']
  # Same image budget as MS-MGANs would get: student.epochs x the train split.
  assert phase['name'] == 'ce' and phase['steps'] == round(cfg.student.epochs * 1800 / 64)
  assert phase['trainable_params'] == s['params'] == 77754
  assert 'disc_trainable_params' not in phase and 'teacher_copy_params' not in phase
  assert s['test_accuracy'] == phase['test_accuracy'] > 0.3
  assert not os.path.exists(tmp_path / 'checkpoints' / 'anchors')  # no teacher trained.


def test_kd_from_the_final_anchor_with_two_seeds_in_one_program(repo_root, teacher_run,
                                                                  tmp_path):
  """`kd` learns from the final teacher only, in one stage; seeds=2 trains two students
  in one program, each with its own initialisation and data order."""
  t_cfg, _, t_summary = teacher_run
  cfg = shrink(load_config(repo_root, 'kd_fmnist_full'), t_cfg.dataset.data_dir)
  cfg.student.epochs, cfg.seeds = 1, 2
  cfg.teacher.model, cfg.teacher.epochs = t_cfg.teacher.model, t_cfg.teacher.epochs
  cfg.anchors.num = 2
  cfg.teacher.checkpoints = tuple(a['path'] for a in t_summary['teacher']['anchors'])
  s = train.train_and_evaluate(cfg, str(tmp_path))['student']
  assert [st['anchor']['path'] for st in s['stages']] == [cfg.teacher.checkpoints[-1]]
  assert [p['name'] for p in s['stages'][0]['phases']] == ['kd']
  assert s['seeds'] == [cfg.seed, cfg.seed + 1] and len(s['test_accuracies']) == 2
  assert s['test_accuracies'][0] != s['test_accuracies'][1]  # two different students.
  assert min(s['test_accuracies']) > 0.2  # chance: 0.1 +- 0.01; 28 steps from a ~0.6 teacher.
  for final in ('student_final', f'student_final_{cfg.seed + 1}'):
    assert os.path.isdir(tmp_path / 'checkpoints' / final / '0')
