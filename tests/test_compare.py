"""The comparison runner: plan, fair choice on validation, resume, tables and plots; and, on
real Fashion-MNIST slices, every baseline not run elsewhere in smoke mode through it."""
import json
import os
import shutil

import pytest

from conftest import load_config, shrink
from msmgan_jax.lab import compare


from msmgan_jax import config


from msmgan_jax.files import io
from msmgan_jax.core import models
from msmgan_jax.methods import registry


def small(repo_root, teacher_run, tmp_path, methods, tuning=None, ablations=()):
  t_cfg, t_dir, _ = teacher_run
  cc = load_config(repo_root, 'compare_lowdata')
  cc.teacher, cc.teacher_workdir = t_cfg, t_dir
  cc.workdir, cc.out = str(tmp_path / 'runs'), str(tmp_path / 'results')
  shrink(cc.base, t_cfg.dataset.data_dir)
  cc.base.stages.num = t_cfg.stages.num
  cc.validation_split = 'train[97%:]'
  cc.methods, cc.ablations, cc.seeds = methods, ablations, 2
  for m in methods:
    cc.tuning[m] = tuning[m] if tuning else ('',)
  return cc


def expected_phases(cc, method, num_anchors) -> dict:
  """{method: the phase names of each stage} from the registry."""
  m = registry.METHODS[method]
  stages = num_anchors if (m.uses_teacher and m.all_anchors) else 1
  cfg = compare.apply(compare.copy_config(cc.base), {'method': method})
  k = models.create_model(cfg.student.model, 10).num_blocks
  return {method: [[p.name for p in registry.stage_phases(cfg, k, i)] for i in range(stages)]}


def test_every_baseline_runs_through_the_comparison_and_a_rerun_skips_them(
    repo_root, teacher_run, tmp_path, capsys):
  """The final runs of every registered method not smoke-tested elsewhere (ce and kd are, in
  test_pipeline; msmgan in its own tests), two seeds in one program each, a small CNN student:
  a method registered later runs here without being named; their tuning is faked
  here (`test_each_method_takes...` covers the choice)."""
  methods = tuple(m for m in registry.METHODS if m not in ('ce', 'kd', 'msmgan'))
  cc = small(repo_root, teacher_run, tmp_path, methods)
  cc.base.student.model = 'cnn'
  anchors = [a['path'] for a in teacher_run[2]['teacher']['anchors']]
  for m in methods:
    _fake_tuning(cc, m, [0.5], anchors)
  doc = compare.run_all(cc, cc.workdir)
  out = capsys.readouterr().out
  assert out.count('running') == len(methods)
  assert [r['name'] for r in doc['runs']] == list(methods)
  for r in doc['runs']:
    assert r['split'] == 'test[:10%]' and r['seeds'] == [0, 1] and len(r['accuracies']) == 2
    assert r['mean'] == pytest.approx(sum(r['accuracies']) / 2)
    # Two students, two initialisations: their last test losses differ (accuracies on 1,000
    # images may tie by chance).
    tests = [json.loads(l) for l in open(os.path.join(r['workdir'], 'metrics.jsonl'))
             if '"split": "test"' in l]
    last = {t['seed']: t['loss'] for t in tests}
    assert len(last) == 2 and last[0] != last[1], (r['name'], last)
    # 28 steps of 64 images: some methods are still near chance (0.1); none is broken.
    assert 0.05 < r['mean'] <= 1 and r['images_per_s'] > 0 and r['wall_s'] > 0
    assert len(r['curve']) >= 2  # eval_every_epochs=0.5: a point inside the phase, one at its end.
    summary = json.load(open(os.path.join(r['workdir'], 'summary.json')))
    guides = [st['anchor'] and st['anchor']['path'] for st in summary['student']['stages']]
    method = registry.METHODS[r['name']]
    assert guides == (anchors if method.all_anchors else anchors[-1:]) if method.uses_teacher \
        else [None]
    names = expected_phases(cc, r['name'], len(anchors))
    assert [[p['name'] for p in st['phases']] for st in summary['student']['stages']] == names[
        r['name']]
  md = open(os.path.join(cc.out, 'compare.md')).read()
  rco = doc['runs'][0]
  assert f'| rco | rco | defaults | {rco["mean"]:.4f} +- {rco["std"]:.4f} |' in md
  assert '| - | - |' in md  # no ce or kd in this comparison: no gains.
  assert json.load(open(os.path.join(cc.out, 'compare.json')))['runs'] == json.loads(
      json.dumps(doc['runs']))
  for png in ('accuracy_vs_images.png', 'accuracy_vs_wall.png'):
    assert os.path.getsize(os.path.join(cc.out, png)) > 5000
  for name in ('rco', 'tune/rco/0'):  # each finished run's record travels with the tables.
    assert sorted(os.listdir(os.path.join(cc.out, 'runs', name))) == [
        'config.json', 'metrics.jsonl', 'summary.json']
  stamps = {r['name']: os.path.getmtime(os.path.join(r['workdir'], 'summary.json'))
            for r in doc['runs']}
  again = compare.run_all(cc, cc.workdir)
  assert capsys.readouterr().out.count('finished, skipped') == 2 * len(methods)
  assert {r['name']: os.path.getmtime(os.path.join(r['workdir'], 'summary.json'))
          for r in again['runs']} == stamps
  assert compare.run_all(cc, cc.workdir, report_only=True)['runs'] == again['runs']
  # A fresh checkout: the workdirs are gone, the results folder's records remain.
  shutil.rmtree(cc.workdir)
  fresh = compare.run_all(cc, cc.workdir, report_only=True)  # --report alone adopts them too.
  assert capsys.readouterr().out.count('taken from its record') == 2 * len(methods)
  assert [r['accuracies'] for r in fresh['runs']] == [r['accuracies'] for r in again['runs']]
  compare.run_all(cc, cc.workdir)
  assert capsys.readouterr().out.count('finished, skipped') == 2 * len(methods)


def _fake_tuning(cc, method, accs, anchors=('a',)):
  """Finished tuning runs of `method` with these validation accuracies (None: not run)."""
  for i, acc in enumerate(accs):
    if acc is None:
      continue
    run = compare.Run('tune', f'tune/{method}/{i}', method, candidate=i)
    wd = run.workdir(cc.workdir)
    os.makedirs(wd, exist_ok=True)
    io.write_text(os.path.join(wd, 'config.json'),
                     compare.student_config(cc, run, list(anchors), {}).to_json())
    io.write_text(os.path.join(wd, 'metrics.jsonl'), '')
    io.write_json(os.path.join(wd, 'summary.json'), {'student': {
        'test_accuracy': acc, 'wall_s': 1.0, 'stages': []}})


def test_each_method_takes_its_best_validation_candidate(repo_root, teacher_run, tmp_path):
  tuning = {'kd': ('', 'kd.tau=2.0', 'kd.beta=0.5'), 'msmgan': ('', 'gan.alpha_adv=0.2',
                                                                 'stages.head_feat=1.0')}
  cc = small(repo_root, teacher_run, tmp_path, ('kd', 'msmgan'), tuning, ('no_gan',))
  root = cc.workdir
  _fake_tuning(cc, 'kd', [0.80, 0.83, 0.83])  # a tie goes to the earlier candidate.
  _fake_tuning(cc, 'msmgan', [0.85, 0.81, None])  # one candidate still to run.
  assert compare.choose(cc, root) == {'kd': 'kd.tau=2.0', 'msmgan': None}
  _fake_tuning(cc, 'msmgan', [None, None, 0.9])
  chosen = compare.choose(cc, root)
  assert chosen['msmgan'] == 'stages.head_feat=1.0'
  final = compare.student_config(cc, compare.Run('final', 'msmgan_no_gan', 'msmgan',
                                                 ablation='no_gan'), ['a', 'b'], chosen)
  # The ablation inherits msmgan's setting and changes only its own field; the test split.
  assert final.stages.head_feat == 1.0 and final.gan.alpha_adv == 0.0
  assert final.dataset.test_split == 'test[:10%]' and final.seeds == 2
  tune = compare.student_config(cc, compare.Run('tune', 'tune/kd/2', 'kd', candidate=2),
                                ['a', 'b'], chosen)
  assert tune.kd.beta == 0.5 and tune.kd.tau == 4.0 and tune.seeds == 1
  assert tune.dataset.test_split == 'train[97%:]' and tune.teacher.checkpoints == ('a', 'b')


@pytest.mark.parametrize('change, message', [
    (lambda cc: cc.tuning.update({'kd': ('', 'kd.tau=2.0')}), 'same number'),
    (lambda cc: cc.tuning.update({'kd': ('kd.tau=2.0',)}), r'tuning.kd\[0\] must be ""'),
    (lambda cc: setattr(cc, 'validation_split', cc.base.dataset.test_split), 'hold-out'),
    (lambda cc: setattr(cc, 'ablations', ('no_gann',)), "ablation 'no_gann' is not one of"),
    (lambda cc: cc.tuning.update({'kd': ('', 'kd.temp=2.0')}, msmgan=('', '')),
     'unknown config field kd.temp'),
])
def test_a_bad_comparison_is_refused_before_anything_trains(repo_root, teacher_run, tmp_path,
                                                            change, message):
  cc = small(repo_root, teacher_run, tmp_path, ('kd', 'msmgan'), None, ('no_gan',))
  change(cc)
  with pytest.raises(config.ConfigError, match=message):
    compare.run_all(cc, cc.workdir)
  assert not os.path.exists(cc.workdir) and not os.path.exists(cc.out)


def test_the_table_gives_gains_over_ce_and_kd_in_points(repo_root):
  cc = load_config(repo_root, 'compare_lowdata', None)
  row = lambda name, accs: {'name': name, 'method': name, 'ablation': None, 'setting': '',
                            'mean': sum(accs) / len(accs), 'std': 0.01, 'accuracies': accs,
                            'wall_s': 10.0, 'images_per_s': 100.0}
  rows = [row('ce', [0.80, 0.82]), row('kd', [0.83, 0.83]), row('msmgan', [0.85, 0.86])]
  md = compare.markdown(cc, rows, [], {}, [{'method': 'ce', 'mean': 0.805, 'std': 0.005,
                                            'accuracies': [0.80, 0.81]}], 'here')
  assert '| msmgan | msmgan | defaults | 0.8550 +- 0.0100 | 0.8500, 0.8600 | +4.50 | +2.50 |' in md
  assert '| ce | ce | defaults | 0.8100 +- 0.0100 | 0.8000, 0.8200 | - | -2.00 |' in md
  assert '| ce | 0.8050 +- 0.0050 | 0.8000, 0.8100 | 0.8100 +- 0.0100 | +0.50 |' in md
  assert 'Not run yet: rco, fitnets, at, dml, skd, msmgan_single_stage' in md


def test_a_final_row_names_the_candidate_its_config_carries(repo_root):
  cc = load_config(repo_root, 'compare_lowdata', None)
  anchors = ['/a', '/b', '/c']
  for i, setting in enumerate(cc.tuning.msmgan):
    for ablation in (None, 'single_stage', 'no_gan'):
      run = compare.Run('final', 'x', 'msmgan', ablation=ablation)
      cfg = json.loads(compare.student_config(cc, run, anchors, {'msmgan': setting}).to_json())
      assert compare._setting_of(cc, cfg, registry.ablations('msmgan').get(ablation, {})) == setting, (
          i, ablation)


def test_a_design_study_runs_tuning_only_and_tabulates_no_test_numbers(
    repo_root, teacher_run, tmp_path):
  """configs/compare_lowdata_design.py: msmgan candidates on the validation split, no final run,
  no test-split number in its table; combined with settings_from it is refused."""
  design = load_config(repo_root, 'compare_lowdata_design', None)
  assert [r.kind for r in compare.plan(design)] == ['tune'] * len(design.tuning.msmgan)
  lowdata = load_config(repo_root, 'compare_lowdata', None)
  # Every msmgan candidate of lowdata was measured in the design study (same settings).
  measured = [compare.parse_setting(t) for t in design.tuning.msmgan]
  assert all(compare.parse_setting(t) in measured for t in lowdata.tuning.msmgan)
  assert design.base.to_json() == lowdata.base.to_json()
  cc = small(repo_root, teacher_run, tmp_path, ('msmgan',),
             {'msmgan': ('', 'stages.block_stages=1')})
  cc.tune_only = True
  anchors = [a['path'] for a in teacher_run[2]['teacher']['anchors']]
  _fake_tuning(cc, 'msmgan', [0.7, 0.8], anchors)  # --report checks they are the planned runs.
  doc = compare.run_all(cc, cc.workdir, report_only=True)
  assert doc['runs'] == [] and doc['chosen'] == {'msmgan': 'stages.block_stages=1'}
  md = open(os.path.join(cc.out, 'compare.md')).read()
  assert 'no run here is tested on the test split' in md and 'test accuracy |' not in md
  assert '| msmgan | 1 | stages.block_stages=1 | 0.8000 | yes |' in md
  cc.settings_from = 'elsewhere/compare.json'
  with pytest.raises(config.ConfigError, match='tune_only'):
    compare.check(cc)


def test_a_finished_run_of_another_setting_is_refused_not_reused(repo_root, teacher_run,
                                                                 tmp_path):
  """An edited candidate list (or base) must not count an old run as this one's result."""
  cc = small(repo_root, teacher_run, tmp_path, ('kd',))
  anchors = [a['path'] for a in teacher_run[2]['teacher']['anchors']]
  _fake_tuning(cc, 'kd', [0.8], anchors)
  run = compare.Run('tune', 'tune/kd/0', 'kd', candidate=0)
  moved = ['/elsewhere/checkout' + a for a in anchors]  # a checkout at another path: the same.
  assert compare._config_diff(run.workdir(cc.workdir),  # pylint: disable=protected-access
                              compare.student_config(cc, run, moved, {})) == []
  tau, cc.base.kd.tau = cc.base.kd.tau, 3.0  # the planned tune/kd/0 is no longer on disk.
  with pytest.raises(config.ConfigError, match=r'tune/kd/0: .* holds a finished run of another '
                     r'config \(kd.tau differ\).*move it away'):
    compare.run_all(cc, cc.workdir)
  with pytest.raises(config.ConfigError, match=r'tune/kd/0: .*\(kd.tau differ\)'):
    compare.run_all(cc, cc.workdir, report_only=True)  # --report does not tabulate it either.
  assert os.path.exists(os.path.join(cc.workdir, 'tune', 'kd', '0', 'summary.json'))
  cc.base.kd.tau, cc.tuning['kd'] = tau, ('', 'kd.tau=2.0')  # a new candidate, not run: no setting is chosen yet,
  final = compare.Run('final', 'kd', 'kd').workdir(cc.workdir)  # so the final on disk
  os.makedirs(final)  # is not the planned one.
  shutil.copyfile(os.path.join(cc.workdir, 'tune', 'kd', '0', 'summary.json'),
                  os.path.join(final, 'summary.json'))
  with pytest.raises(config.ConfigError, match=r'kd: .* tuning that chooses the setting of kd '
                     r'is not finished'):
    compare.run_all(cc, cc.workdir, report_only=True)


def test_report_on_a_fresh_checkout_says_how_to_restore_the_teacher(repo_root, tmp_path,
                                                                    monkeypatch):
  """Without the teacher's workdir, --report names the committed record to copy back."""
  cc = load_config(repo_root, 'compare_full', None)
  monkeypatch.chdir(tmp_path)
  with pytest.raises(config.ConfigError, match='without --report first') as e:
    compare.run_all(cc, cc.workdir, report_only=True)
  assert 'cp -r' not in str(e.value)  # no record here: only the plain advice.
  record = tmp_path / 'results' / 'teacher' / os.path.basename(cc.teacher_workdir)
  record.mkdir(parents=True)
  (record / 'summary.json').write_text('{}')
  with pytest.raises(config.ConfigError, match=r'mkdir -p runs && cp -r results/teacher/'
                     r'teacher_fmnist runs/'):
    compare.run_all(cc, cc.workdir, report_only=True)
  assert not (tmp_path / 'runs').exists()  # nothing written.
