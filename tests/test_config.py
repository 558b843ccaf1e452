"""Config schema and validation, config files, and the command line's bad-input handling."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from support import REPO_ROOT, snapshot
from msmgan_jax import config
from msmgan_jax.training import workdir as workdir_lib


def load_config_file(name, arg=None):
  """`get_config(arg)` of configs/<name>.py, imported by path like config_flags does."""
  path = REPO_ROOT / 'configs' / f'{name}.py'
  spec = importlib.util.spec_from_file_location(f'_test_cfg_{name}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def bad(field_regex, **changes):
  """A pytest param: dotted field -> value changes, and the field the error must name."""
  return pytest.param(changes, field_regex, id=field_regex.replace('\\', ''))


def apply_changes(cfg, changes):
  for dotted, value in changes.items():
    *groups, name = dotted.split('__')
    target = cfg
    for g in groups:
      target = target[g]
    target[name] = value
  return cfg


CONFIG_FILES = sorted(p.stem for p in (REPO_ROOT / 'configs').glob('*.py')
                      if p.stem != '__init__' and not p.stem.startswith('compare_'))
COMPARE_FILES = sorted(p.stem for p in (REPO_ROOT / 'configs').glob('compare_*.py'))


def test_defaults_and_config_files_validate():
  config.validate(config.defaults())
  assert len(CONFIG_FILES) >= 8
  for name in CONFIG_FILES:
    for arg in (None, 'smoke'):
      cfg = load_config_file(name, arg)
      config.validate(cfg)
      if arg == 'smoke':
        assert cfg.dataset.train_split == 'train[:20%]' and cfg.student.epochs == 1


def _flat(tree, prefix=''):
  out = {}
  for key, value in tree.items():
    out.update(_flat(value, f'{prefix}{key}.') if isinstance(value, dict)
               else {prefix + key: value})
  return out


def test_the_v2_config_is_what_full_v2_ran_for_msmgan():
  """configs/msmgan_v2_fmnist_full.py is the committed full v2 msmgan run's config
  (results/full_v2/runs/msmgan/config.json, lowdata v2's chosen defaults) field for field,
  but for its seed count, evaluation cadence and the anchors' absolute paths (fields moved
  or added since it ran read as a resumed workdir reads them)."""
  mine = _flat(json.loads(load_config_file('msmgan_v2_fmnist_full').to_json()))
  recorded = json.loads((REPO_ROOT / 'results/full_v2/runs/msmgan/config.json').read_text())
  ran = _flat(workdir_lib.as_schema_now(recorded))
  assert [a[-len(m):] for a, m in zip(ran.pop('teacher.checkpoints'),
                                      mine['teacher.checkpoints'])] == list(
      mine.pop('teacher.checkpoints'))
  differ = {k for k in set(mine) | set(ran) if mine.get(k, 'absent') != ran.get(k, 'absent')}
  assert differ == {'seeds', 'student.eval_every_epochs', 'student.eval_every_phase'}, {
      k: (mine.get(k), ran.get(k)) for k in differ}


def test_comparison_configs_and_every_run_they_plan_validate():
  from msmgan_jax.lab import compare  # pylint: disable=g-import-not-at-top
  assert COMPARE_FILES == ['compare_full', 'compare_full_v2', 'compare_full_v3',
                           'compare_lowdata',
                           'compare_lowdata_design', 'compare_lowdata_v2',
                           'compare_lowdata_v2_design', 'compare_lowdata_v3',
                           'compare_lowdata_v3_design', 'compare_lowdata_v3b',
                           'compare_lowdata_v3c']
  for name, arg in [(n, None) for n in COMPARE_FILES] + [('compare_lowdata', 'smoke'),
                                                          ('compare_lowdata_v2', 'smoke')]:
    cc = load_config_file(name, arg)
    compare.check(cc)
    config.validate(cc.teacher)
    anchors = [f'/a{i}' for i in range(cc.teacher.anchors.num)]
    runs = compare.plan(cc)
    for run in runs:
      for setting in cc.tuning[run.method]:  # every candidate a final run might take.
        config.validate(compare.student_config(cc, run, anchors, {run.method: setting}))
    budgeted = sum(len(compare.budget_methods(cc, b)) for b in cc.get('budgets', {}) or {})
    finals = 0 if cc.get('tune_only') else len(cc.methods) + len(cc.ablations) + budgeted
    assert len([r for r in runs if r.kind == 'final']) == finals
  lowdata = load_config_file('compare_lowdata')
  assert len(lowdata.methods) == 8 and len(lowdata.ablations) == 5 and lowdata.seeds == 3


def test_every_comparison_config_passes_the_checks_made_before_training(tfds_data_dir):
  """`compare.preflight` on the real dataset (its splits' sizes and file ranges): what a
  `python -m msmgan_jax.compare --config configs/<name>.py` meets before anything trains.
  (The full-data configs take their settings from lowdata's: no validation split to check;
  one once stopped them here, as it overlaps their train split.)"""
  del tfds_data_dir  # prepares Fashion-MNIST in the default data dir the configs read.
  from msmgan_jax.lab import compare  # pylint: disable=g-import-not-at-top
  for name, arg in [(n, None) for n in COMPARE_FILES] + [('compare_lowdata', 'smoke'),
                                                          ('compare_lowdata_v2', 'smoke')]:
    cc = load_config_file(name, arg)
    compare.check(cc)
    compare.preflight(cc)
  cc = load_config_file('compare_lowdata_v2')
  cc.validation_split = 'train[5%:40%]'  # overlaps the students' train[:10%].
  with pytest.raises(config.ConfigError, match='overlaps the train split'):
    compare.preflight(cc)


def test_smoke_keeps_given_anchors_and_their_stages():
  cfg = load_config_file('msmgan_fmnist_full', 'smoke')
  assert len(cfg.teacher.checkpoints) == cfg.anchors.num == 3 and cfg.teacher.epochs == 15


def test_repeated_anchor_paths_are_refused():
  cfg = config.defaults()
  cfg.teacher.checkpoints = ('a/1', 'a/1', 'a/2')
  with pytest.raises(config.ConfigError, match='teacher.checkpoints.*repeats a path'):
    config.validate(cfg)


@pytest.mark.parametrize('changes, field', [
    bad('method', method='gan'),
    bad('dataset\\.name', dataset__name='svhn'),
    bad('dataset\\.source', dataset__source='web'),
    bad('dataset\\.source', dataset__name='mnist', dataset__source='local'),
    bad('teacher\\.model', teacher__model='resnet999'),
    bad('student\\.model', student__model='vgg8'),
    bad('batch_size', batch_size=0),
    bad('eval_batch_size', eval_batch_size=-5),
    bad('teacher\\.epochs', teacher__epochs=0),
    bad('dataset\\.train_split', dataset__train_split='train[:10%'),
    bad('dataset\\.test_split', dataset__test_split='test split'),
    bad('dataset\\.crop_padding', dataset__crop_padding=-1),
    bad('teacher\\.lr', teacher__lr=-0.1),
    bad('student\\.warmup_epochs', student__warmup_epochs=20.0),
    # Anchor epochs: not strictly increasing, past teacher.epochs, or one per stage violated.
    bad('anchors\\.epochs', anchors__epochs=(10, 5, 15)),
    bad('anchors\\.epochs', anchors__epochs=(5, 5, 15)),
    bad('anchors\\.epochs', anchors__epochs=(0, 5, 15)),
    bad('anchors\\.epochs', anchors__epochs=(5, 10, 20)),
    bad('anchors\\.epochs', anchors__epochs=(5, 15)),
    bad('anchors\\.epochs', anchors__epochs=(3, 6, 9, 15)),
    bad('teacher\\.checkpoints', teacher__checkpoints=('a', 'b')),
])
def test_validate_names_the_bad_field(changes, field):
  cfg = apply_changes(config.defaults(), changes)
  with pytest.raises(config.ConfigError, match=rf'^config field {field}: '):
    config.validate(cfg)


def test_validate_teacher_epochs_messages():
  cfg = apply_changes(config.defaults(), {'anchors__epochs': (5, 15)})
  with pytest.raises(config.ConfigError, match=r'gives 2 anchors but anchors\.num is 3'):
    config.validate(cfg)
  cfg = apply_changes(config.defaults(), {'anchors__epochs': (5, 10, 20)})
  with pytest.raises(config.ConfigError, match=r'\(5, 10, 20\) must increase strictly within '
                                               r'1\.\.teacher\.epochs \(15\)'):
    config.validate(cfg)


@pytest.mark.parametrize('group', [None, 'teacher', 'dataset'])
def test_validate_rejects_unknown_field(group):
  cfg = config.defaults()
  target = cfg if group is None else cfg[group]
  target.nope = 1
  prefix = '' if group is None else rf'{group}\.'
  # The message reads "unknown config field teacher.'nope'" (quotes around the last part).
  with pytest.raises(config.ConfigError, match=rf"unknown config field {prefix}'?nope'?"):
    config.validate(cfg)
  assert 'nope' not in config.defaults()  # the schema itself is untouched.


def test_finalize():
  cfg = config.defaults()
  assert config.finalize(cfg, None) is cfg and config.finalize(cfg, '') is cfg
  with pytest.raises(config.ConfigError, match="unknown config argument 'fast'"):
    config.finalize(config.defaults(), 'fast')
  small = config.finalize(config.defaults(), 'smoke')
  assert small.teacher.epochs == 2 and small.anchors.num == 2
  assert small.dataset.train_split == 'train[:20%]'
  assert config.anchor_epochs(small) == (1, 2)


@pytest.mark.parametrize('epochs, num, explicit, want', [
    (15, 3, (), (5, 10, 15)),
    (6, 3, (), (2, 4, 6)),
    (10, 1, (), (10,)),
    (15, 3, (3, 7, 15), (3, 7, 15)),
])
def test_anchor_epochs(epochs, num, explicit, want):
  cfg = config.defaults()
  cfg.teacher.epochs, cfg.anchors.num, cfg.anchors.epochs = epochs, num, explicit
  assert config.anchor_epochs(cfg) == want
  config.validate(cfg)


def test_anchor_epochs_of_default_config():
  cfg = config.defaults()
  assert (cfg.teacher.epochs, cfg.anchors.num, tuple(cfg.anchors.epochs)) == (15, 3, ())
  assert config.anchor_epochs(cfg) == (5, 10, 15)
  assert config.anchor_epochs(load_config_file('teacher_fmnist')) == (5, 10, 15)


# ------------------------------------------------------------------------- command line


@pytest.fixture(scope='module')
def cli(tmp_path_factory):
  """Runs the four bad-input command lines at once (each pays ~6 s of imports)."""
  root = tmp_path_factory.mktemp('cli')
  cases = {}

  bad_model = root / 'bad_model'
  bad_model.mkdir()
  cases['bad_model'] = (bad_model, ['--config.teacher.model=resnet999',
                                    '--workdir', str(bad_model / 'run')])

  unknown = root / 'unknown_override'
  unknown.mkdir()
  cases['unknown_override'] = (unknown, ['--config.teacher.nope=1',
                                         '--workdir', str(unknown / 'run')])

  other = root / 'other_run'
  other.mkdir()
  other_cfg = load_config_file('default')
  other_cfg.teacher.epochs = 99
  (other / 'config.json').write_text(json.dumps(json.loads(other_cfg.to_json()), indent=2) + '\n')
  (other / 'metrics.jsonl').write_text('{"step": 1}\n')
  (other / 'checkpoints').mkdir()
  cases['other_run'] = (other, ['--workdir', str(other)])

  foreign = root / 'foreign'
  foreign.mkdir()
  (foreign / 'notes.txt').write_text('not a run\n')
  cases['foreign'] = (foreign, ['--workdir', str(foreign)])

  before = {k: snapshot(d) for k, (d, _) in cases.items()}
  procs = {
      k: subprocess.Popen(
          [sys.executable, '-m', 'msmgan_jax.main', '--config', 'configs/default.py', *args],
          cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for k, (_, args) in cases.items()}
  results = {}
  try:
    for k, p in procs.items():
      out, err = p.communicate(timeout=240)
      results[k] = {'rc': p.returncode, 'stdout': out, 'stderr': err, 'dir': cases[k][0],
                    'before': before[k], 'after': snapshot(cases[k][0])}
  finally:
    for p in procs.values():
      if p.poll() is None:
        p.kill()
  return results


@pytest.mark.slow
def test_cli_unknown_model_exits_2_and_creates_nothing(cli):
  r = cli['bad_model']
  assert r['rc'] == 2, r['stderr'][-2000:]
  assert 'error: config field teacher.model' in r['stderr']
  assert "'resnet999'" in r['stderr']
  assert os.listdir(r['dir']) == [] and r['after'] == r['before'] == {}


@pytest.mark.slow
def test_cli_unknown_override_exits_2(cli):
  r = cli['unknown_override']
  assert 'nope' in r['stderr']
  assert r['rc'] == 2, r['stderr'][-2000:]


@pytest.mark.slow
def test_cli_unknown_override_creates_nothing(cli):
  r = cli['unknown_override']
  assert r['rc'] != 0
  assert os.listdir(r['dir']) == []


@pytest.mark.slow
def test_cli_workdir_of_another_config_is_refused(cli):
  r = cli['other_run']
  assert r['rc'] == 2, r['stderr'][-2000:]
  assert 'holds a run with another config' in r['stderr']
  assert 'teacher.epochs' in r['stderr']
  # config.json byte-identical, nothing added, removed or touched.
  assert r['after'] == r['before']
  assert set(r['after']) == {'config.json', 'metrics.jsonl', 'checkpoints/'}


@pytest.mark.slow
def test_cli_foreign_nonempty_workdir_is_refused(cli):
  r = cli['foreign']
  assert r['rc'] == 2, r['stderr'][-2000:]
  assert 'is not empty and holds no config.json' in r['stderr']
  assert r['after'] == r['before'] and set(r['after']) == {'notes.txt'}


def test_a_run_recorded_before_a_field_existed_reads_back_as_it_ran(tmp_path, monkeypatch):
  """registry.ADDED (msmgan's): a config.json without stages.block_stages / mutual.frozen_bn
  ran with block phases in every stage and a BatchNorm-updating copy, whatever the defaults
  say."""
  import json  # pylint: disable=g-import-not-at-top
  old = json.loads(config.defaults().to_json())
  del old['stages']['block_stages'], old['mutual']['frozen_bn']
  (tmp_path / 'config.json').write_text(json.dumps(old))
  original = config.defaults

  def changed_defaults():
    cfg = original()
    cfg.stages.block_stages, cfg.mutual.frozen_bn = 1, True
    return cfg
  monkeypatch.setattr(config, 'defaults', changed_defaults)
  back = workdir_lib.Workdir(str(tmp_path)).read_config()
  assert back['stages']['block_stages'] == -1 and back['mutual']['frozen_bn'] is False
  assert back['student'] == old['student']


def test_a_teacher_only_run_is_the_same_run_whatever_the_student_fields_say(tmp_path):
  """Student-side defaults may move (the comparisons' shared teacher must still resume
  and be reused); a teacher field still makes another run."""
  cfg = config.defaults()
  cfg.method = 'teacher'
  wd = workdir_lib.Workdir(str(tmp_path / 'teacher'))
  wd.claim(cfg)
  wd.release()
  cfg.student.lr, cfg.mutual.lr, cfg.stages.block_stages = 0.3, 0.5, 0
  wd.claim(cfg)  # the same teacher run.
  wd.release()
  cfg.teacher.epochs += 1
  with pytest.raises(config.ConfigError, match=r'another config \(fields differ: teacher.epochs\)'):
    wd.claim(cfg)
  cfg.teacher.epochs -= 1
  cfg.method = 'kd'  # a student run reads every field; the message names what differs.
  with pytest.raises(config.ConfigError, match=r'another config \(fields differ: method\)'):
    wd.claim(cfg)
  cfg.teacher.lr *= 2
  with pytest.raises(config.ConfigError,
                     match=r'another config \(fields differ: method, teacher.lr\)\. Use'):
    wd.claim(cfg)


def test_a_finished_teacher_run_is_returned_untouched_after_a_student_default_moves(tmp_path):
  """The shared teacher of the comparisons: its summary (wall time, commit) must survive."""
  import json  # pylint: disable=g-import-not-at-top
  from msmgan_jax.training import train  # pylint: disable=g-import-not-at-top
  cfg = config.defaults()
  cfg.method = 'teacher'
  old = json.loads(cfg.to_json())
  old['mutual']['lr'] = 0.01  # recorded under an older student default.
  (tmp_path / 'config.json').write_text(json.dumps(old))
  (tmp_path / 'summary.json').write_text(json.dumps({'wall_s': 4527.79}))
  stamp = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
  assert train.train_and_evaluate(cfg, str(tmp_path)) == {'wall_s': 4527.79}
  assert stamp == {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}


def _recorded(tmp_path, record):
  """The committed config.json `record` (written before fields moved), as a workdir reads it."""
  wd = tmp_path / record.replace('/', '_')
  wd.mkdir()
  (wd / 'config.json').write_text((REPO_ROOT / record).read_text())
  return json.loads((REPO_ROOT / record).read_text()), workdir_lib.Workdir(str(wd)).read_config()


def test_a_config_recorded_before_fields_moved_reads_them_where_they_are_now(tmp_path):
  """stages.num and stages.teacher_epochs are the anchors' now, the schedule and rates the
  student's; skd's and msmgan's own fields took, in their runs, what they read before."""
  old, skd = _recorded(tmp_path, 'results/lowdata_v2/runs/tune/skd/2/config.json')
  assert (skd['anchors']['num'], skd['anchors']['epochs']) == (3, [])
  assert (skd['student']['block_lr'], skd['student']['finetune_lr_mult']) == (0.2, 0.5)
  assert skd['skd']['phase_shares'] == old['stages']['phase_shares']
  assert set(skd['stages']) == set(config.defaults().stages)  # what is left is msmgan's.
  _, msmgan = _recorded(tmp_path, 'results/lowdata_v2/runs/tune/msmgan/3/config.json')
  assert (msmgan['msmgan']['tau'], msmgan['msmgan']['beta'], msmgan['kd']['beta']) == (4.0, 0.5, 0.5)
  # fields added since: the values those runs trained with (today's kd head, no adversary).
  assert (msmgan['msmgan']['loss'], msmgan['msmgan']['logit_std'], msmgan['msmgan']['ctkd'],
          msmgan['msmgan']['head_disc'], msmgan['kd']['logit_std']) == ('kd', False, False, 0.0,
                                                                        False)
  assert msmgan['student']['block_schedule'] == 'own'
  assert msmgan['student']['stage_shares'] == [0.2, 0.2, 0.6]
  _, kd = _recorded(tmp_path, 'results/lowdata_v2/runs/tune/kd/2/config.json')
  assert kd['kd']['beta'] == 0.5 and kd['msmgan']['beta'] == config.defaults().msmgan.beta
  _, teacher = _recorded(tmp_path, 'results/teacher/teacher_fmnist/config.json')
  assert teacher['anchors']['num'] == 3 and teacher['student']['block_lr'] == 0.05
  new = json.loads(config.defaults().to_json())
  assert workdir_lib.as_schema_now(new) == new  # today's configs are left as they are.


def test_a_setting_written_before_fields_moved_sets_them_where_they_are_now():
  """Settings recorded in comparisons ('stages.block_lr=0.2') mean what they meant: a moved
  field is set where it went; kd.tau / kd.beta in an msmgan setting set msmgan's own too
  (its head loss read them), and stages.phase_shares in an skd setting skd's."""
  from msmgan_jax.methods import registry  # pylint: disable=g-import-not-at-top
  assert registry.current_fields({'stages.block_lr': 0.2, 'student.lr': 0.2}, 'skd') == {
      'student.block_lr': 0.2, 'student.lr': 0.2}
  assert registry.current_fields({'stages.num': 1, 'stages.stage_shares': ()}, 'msmgan') == {
      'anchors.num': 1, 'student.stage_shares': ()}
  assert registry.current_fields({'kd.beta': 0.5}, 'msmgan') == {'kd.beta': 0.5,
                                                                 'msmgan.beta': 0.5}
  assert registry.current_fields({'kd.beta': 0.5}, 'kd') == {'kd.beta': 0.5}
  shares = (0.2, 0.2, 0.2, 0.4)
  assert registry.current_fields({'stages.phase_shares': shares}, 'skd') == {
      'stages.phase_shares': shares, 'skd.phase_shares': shares}
  assert registry.current_fields({'stages.phase_shares': shares}, 'msmgan') == {
      'stages.phase_shares': shares}
  assert registry.moved_to('stages.block_lr') == 'student.block_lr'
  assert registry.moved_to('kd.beta') is None and registry.moved_to('stages.greedy') is None
  cfg = config.defaults()
  cfg.stages.num = 2  # a config file written before the move.
  with pytest.raises(config.ConfigError, match='unknown config field stages.num; it is '
                                               'anchors.num now'):
    config.validate(cfg)
