"""The comparison runner: plan, fair choice on validation, resume, tables and plots; and, on
real Fashion-MNIST slices, one baseline of each kind in smoke mode through it."""
import copy
import json
import os
import pathlib
import shutil

import ml_collections
import pytest

from support import load_config, shrink
from msmgan_jax.lab import compare


from msmgan_jax import config


from msmgan_jax.files import io
from msmgan_jax.core import models
from msmgan_jax.methods import registry
from msmgan_jax.methods.msmgan import config as msmgan_config
from msmgan_jax.training import runner


def small(repo_root, teacher_run, tmp_path, methods, tuning=None, ablations=()):
  t_cfg, t_dir, _ = teacher_run
  cc = load_config(repo_root, 'compare_lowdata')
  cc.teacher, cc.teacher_workdir = t_cfg, t_dir
  cc.workdir, cc.out = str(tmp_path / 'runs'), str(tmp_path / 'results')
  shrink(cc.base, t_cfg.dataset.data_dir)
  cc.base.anchors.num = t_cfg.anchors.num
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


@pytest.mark.slow
def test_one_method_of_each_kind_runs_through_the_comparison_and_a_rerun_skips_them(
    repo_root, teacher_run, tmp_path, capsys):
  """The final runs of one method of each kind the comparison plans differently, two seeds
  in one program each, a small CNN student: rco (one stage per anchor), fitnets (a hint phase
  before its kd phase, one anchor) and dml (no teacher: a peer). The comparison names no
  method (it reads the registry), and every registered method, a later one included, trains
  through the same trainer in test_registry's smoke run (synthetic batches, one seed), so the
  others (dkd, srrl, at, skd: one-anchor methods like fitnets) would add minutes here and only
  real data and a second seed. Their tuning is faked here
  (`test_each_method_takes...` covers the choice)."""
  methods = ('rco', 'fitnets', 'dml')
  assert all(m in registry.METHODS for m in methods)
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
  """Finished tuning runs of `method` with these validation accuracies (None: not run; a
  list: one per tuning seed)."""
  for i, acc in enumerate(accs):
    if acc is None:
      continue
    run = compare.Run('tune', f'tune/{method}/{i}', method, candidate=i)
    wd = run.workdir(cc.workdir)
    os.makedirs(wd, exist_ok=True)
    io.write_text(os.path.join(wd, 'config.json'),
                     compare.student_config(cc, run, list(anchors), {}).to_json())
    io.write_text(os.path.join(wd, 'metrics.jsonl'), '')
    accs_ = list(acc) if isinstance(acc, (list, tuple)) else [acc]
    io.write_json(os.path.join(wd, 'summary.json'), {'student': {
        'test_accuracy': sum(accs_) / len(accs_), 'test_accuracies': accs_,
        'seeds': list(range(len(accs_))), 'wall_s': 1.0, 'stages': []}})


@pytest.mark.slow
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
  # A tuning run's console names its validation slice, never 'test'.
  assert runner.eval_label(tune) == 'accuracy on train[97%:]'
  assert runner.eval_label(final) == 'test accuracy'


@pytest.mark.slow
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


def _row(name, accs, method=None, seeds=None, **kw):
  return {'name': name, 'method': method or name, 'ablation': None, 'setting': '',
          'mean': sum(accs) / len(accs), 'std': 0.01, 'accuracies': accs,
          'seeds': seeds or list(range(len(accs))), 'wall_s': 10.0, 'images_per_s': 100.0, **kw}


def test_the_paired_difference_is_a_student_t_interval_over_shared_seeds():
  a = _row('a', [0.80, 0.82, 0.84])
  b = _row('b', [0.79, 0.80, 0.83])
  d = compare.paired_difference(a, b)  # differences 1, 2, 1 points: sd 0.577, t_2 = 4.303.
  assert d['n'] == 3 and d['mean'] == pytest.approx(4 / 3)
  assert d['high'] - d['mean'] == pytest.approx(4.3027 * 0.57735 / 3 ** 0.5, rel=1e-4)
  assert d['low'] == pytest.approx(2 * d['mean'] - d['high'])
  # Only the seeds both ran pair up; a single shared seed gives no interval.
  c = _row('c', [0.90, 0.70, 0.95], seeds=[2, 7, 0])
  pairs = compare.paired_difference(a, c)
  assert pairs['n'] == 2 and pairs['mean'] == pytest.approx(100 * ((0.80 - 0.95) + (0.84 - 0.90)) / 2)
  assert compare.paired_difference(a, _row('d', [0.5], seeds=[1])) is None


def test_ours_against_pytorch_is_welchs_interval_not_a_seed_pairing():
  """The two frameworks' seeds share no random numbers: Welch's unequal-variance interval,
  checked against its formula (Welch 1947; Welch-Satterthwaite degrees of freedom)."""
  import scipy.stats  # pylint: disable=g-import-not-at-top
  ours, theirs = [0.80, 0.82], [0.80, 0.81]
  va, vb = 0.0002 / 2, 0.00005 / 2  # sample variances over n: 2e-4 and 5e-5, n = 2 each.
  df = (va + vb) ** 2 / (va ** 2 + vb ** 2)  # = 1.4706 (each side's n - 1 = 1).
  half = 100 * scipy.stats.t.ppf(0.975, df) * (va + vb) ** 0.5
  d = compare.unpaired_difference({'accuracies': ours}, {'accuracies': theirs})
  assert d['mean'] == pytest.approx(0.5) and d['low'] == pytest.approx(0.5 - half)
  assert d['high'] == pytest.approx(0.5 + half) and half == pytest.approx(6.9185, abs=1e-3)
  # Seed labels play no part: reversing one side's order changes nothing.
  assert compare.unpaired_difference({'accuracies': ours[::-1]}, {'accuracies': theirs}) == d
  assert compare.unpaired_difference({'accuracies': [0.8]}, {'accuracies': theirs}) is None


def test_the_table_gives_paired_differences_to_kd_and_the_best_baseline(repo_root, tmp_path):
  cc = load_config(repo_root, 'compare_lowdata', None)
  rows = [_row('ce', [0.80, 0.82]), _row('kd', [0.83, 0.83]), _row('at', [0.84, 0.86]),
          _row('msmgan', [0.85, 0.86])]
  for r in rows:  # each final run's record: the PyTorch table reads its start from there.
    cfg = config.defaults()
    cfg.method = r['method']
    (tmp_path / r['name']).mkdir()
    (tmp_path / r['name'] / 'config.json').write_text(cfg.to_json())
    r.update(kind='final', workdir=str(tmp_path / r['name']))
  md = compare.markdown(cc, rows, [], {}, [
      {'method': 'ce', 'mean': 0.805, 'std': 0.005, 'accuracies': [0.80, 0.81]},
      {'method': 'kd', 'init': 'first_anchor:anchors/5', 'mean': 0.83, 'std': 0.0,
       'accuracies': [0.83, 0.83]}], 'here')
  # Two pairs: differences 2 and 3 points to kd, 1 and 0 to at (t_1 = 12.706). Beside each,
  # Holm over the table's 5 distinct comparisons (ce-kd, ce-at, kd-at, msmgan-kd, msmgan-at):
  # ce-at (-4, -4: no spread, p = 0) is rejected at 1 - 0.05 / 5; the next is not, so it and
  # every later one get the interval at 1 - 0.05 / 4 (t_1 = 50.92: msmgan-kd's sd/sqrt(2)
  # is 0.5, so +-25.46).
  import scipy.stats  # pylint: disable=g-import-not-at-top
  assert 0.5 * scipy.stats.t.ppf(1 - 0.05 / 8, 1) == pytest.approx(25.46, abs=0.005)
  assert ('| msmgan | msmgan | defaults | 0.8550 +- 0.0100 | 0.8500, 0.8600 | +4.50 | '
          '+2.50 [-3.85, +8.85]; Holm [-22.96, +27.96] | +0.50 [-5.85, +6.85]; Holm '
          '[-24.96, +25.96] |') in md
  assert 'vs best baseline (at): paired 95% CI; Holm' in md
  assert ('| ce | ce | defaults | 0.8100 +- 0.0100 | 0.8000, 0.8200 | - | -2.00 [-14.71, +10.71]; '
          'Holm [-52.92, +48.92] | -4.00 [-4.00, -4.00]; Holm [-4.00, -4.00] |') in md
  # at - kd is kd - at mirrored: one comparison of the family, shown in two rows.
  assert ('| at | at | defaults | 0.8500 +- 0.0100 | 0.8400, 0.8600 | +4.00 | +2.00 [-10.71, '
          '+14.71]; Holm [-48.92, +52.92] | - |') in md
  assert '| kd | kd | defaults | 0.8300 +- 0.0100 | 0.8300, 0.8300 | +2.00 | - | -2.00 ' in md
  assert "corrected over this table's 5 distinct seed-paired comparisons" in md
  # Ours against PyTorch: unpaired (Welch), below; its std the sample std of its seeds.
  assert ('| ce | random | 0.8050 +- 0.0071 | 0.8000, 0.8100 | 0.8100 +- 0.0100 | +0.50 '
          '[-6.42, +7.42] |') in md
  # A PyTorch row from a start none of our final runs took is set against none of them.
  assert '| kd | first_anchor:anchors/5 | 0.8300 +- 0.0000 | 0.8300, 0.8300 | - | - |' in md
  assert 'Not run yet: rco, fitnets, dml, skd, msmgan_single_stage' in md


def test_a_budget_table_holds_the_main_runs_that_already_use_its_setting(repo_root,
                                                                         monkeypatch):
  """`with_main`: msmgan's defaults start from an anchor, so its main row joins the table of
  kd and dkd given that start, and the paired differences there are like against like."""
  cc = load_config(repo_root, 'compare_lowdata', None)
  cc.method_defaults = ml_collections.ConfigDict({'msmgan': 'student.init=first_anchor'})
  cc.budgets = ml_collections.ConfigDict({'init': ml_collections.ConfigDict({
      'setting': 'student.init=first_anchor', 'methods': ('kd',), 'with_main': ('msmgan',)})})
  compare.check(cc)
  rows = [_row('kd', [0.83, 0.83]), _row('msmgan', [0.88, 0.89]),
          _row('kd@init', [0.86, 0.88], method='kd', budget='init')]
  assert [r['name'] for r in compare.budget_rows(cc, rows, 'init')] == ['kd@init', 'msmgan']
  md = compare.markdown(cc, rows, [], {}, [], 'here')
  table = md[md.index('## init'):]
  assert 'The rows of msmgan are their main runs' in table
  # msmgan - kd@init per seed: 2 and 1 points (t_1 = 12.706); kd@init is the best baseline.
  # The table's family: msmgan-kd@init (shown twice, counted once) and kd@init-kd (the
  # column below): 2 comparisons, neither rejected, both at 1 - 0.05 / 2.
  assert '| msmgan | msmgan | defaults | 0.8850 +- 0.0100 | 0.8800, 0.8900 | - | ' \
         '+1.50 [-4.85, +7.85]; Holm [-11.23, +14.23] | +1.50 [-4.85, +7.85]; Holm [-11.23, ' \
         '+14.23] | - |' in table
  assert "over this table's 2 distinct seed-paired comparisons" in table
  # What the start itself is worth: kd@init against kd's main run, seed by seed (3, 5 points).
  assert 'vs itself at the main budget: paired 95% CI; Holm |' in table
  assert '| - | +4.00 [-8.71, +16.71]; Holm [-21.45, +29.45] |' in table.split(
      '| kd@init |')[1].split('\n')[0]
  assert 'vs itself' not in md[:md.index('## init')]  # the main table keeps its columns.
  # Main rows alone are no comparison; a missing row is named.
  assert 'Not run yet.' in compare.markdown(cc, rows[:2], [], {}, [], 'here').split('## init')[1]
  partial = compare.markdown(cc, rows[::2], [], {}, [], 'here').split('## init')[1]
  assert '| kd@init |' in partial and 'Not run yet: msmgan.' in partial
  # with_main joins no budget that runs the method itself, and best_other is never one of it.
  cc.budgets.init.methods = ('kd', 'msmgan')
  with pytest.raises(config.ConfigError, match='not run at the budget itself'):
    compare.check(cc)
  cc.budgets.init.methods, cc.budgets.init.with_main = ('kd', 'best_other'), ('msmgan', 'at')
  cc.method_defaults.at = 'student.init=first_anchor'
  compare.check(cc)
  scores = {m: 0.5 for m in cc.methods}
  scores.update(at=0.99, dml=0.6)  # at scored best, but its main row is in the table already.
  monkeypatch.setattr(compare, 'validation_scores', lambda cc, root: scores)
  assert compare.budget_methods(cc, 'init', root='runs') == ['kd', 'dml']
  cc.budgets.init.methods, cc.budgets.init.with_main = ('kd',), ('msmgan',)
  # A setting chosen elsewhere (settings_from) may not undo the budget's setting either.
  compare.check_with_main_settings(cc, {'msmgan': 'kd.beta=0.5'})
  with pytest.raises(config.ConfigError, match=r"changes \['student.init'\]"):
    compare.check_with_main_settings(cc, {'msmgan': 'student.init=random'})
  # A main run without the setting, or a candidate that changes it, cannot join.
  cc.method_defaults.msmgan = ''
  with pytest.raises(config.ConfigError, match='must already use'):
    compare.check(cc)
  cc.method_defaults.msmgan = 'student.init=first_anchor'
  cc.tuning.msmgan = ('', 'student.init=random', 'kd.beta=0.5')
  with pytest.raises(config.ConfigError, match=r'tuning.msmgan\[1\] changes a field'):
    compare.check(cc)


def test_a_budget_names_its_missing_best_other_run(repo_root):
  """The budget table's "Not run yet" line names the run best_other has become (the method
  whose chosen candidate scored best on validation), not just the methods named in the
  config, and says so while tuning has not named it yet."""
  cc = load_config(repo_root, 'compare_lowdata', None)
  cc.methods, cc.ablations = ('ce', 'kd', 'at', 'fitnets', 'msmgan'), ()
  cc.budgets = ml_collections.ConfigDict({'twice': ml_collections.ConfigDict({
      'setting': 'student.epochs=30', 'methods': ('ce', 'best_other', 'msmgan')})})
  compare.check(cc)
  rows = [_row('ce', [0.83, 0.84]), _row('msmgan', [0.88, 0.89]),
          _row('ce@twice', [0.85, 0.86], method='ce', budget='twice')]
  def tune(method, candidate, mean):
    return {'method': method, 'candidate': candidate, 'mean': mean,
            'setting': cc.tuning[method][candidate]}
  # at's chosen candidate (its best, 1) scored 0.90 on validation, fitnets' 0.88, kd's 0.80
  # (kd is not named in the budget: it may become best_other too); at's unchosen candidate
  # 0 (0.70) does not count.
  tuning = [tune('kd', 0, 0.80), tune('at', 0, 0.70), tune('at', 1, 0.90),
            tune('fitnets', 0, 0.88)]
  chosen = {'kd': cc.tuning.kd[0], 'at': cc.tuning.at[1], 'fitnets': cc.tuning.fitnets[0]}
  twice = lambda md: md.split('## twice')[1].split('## ')[0]
  table = twice(compare.markdown(cc, rows, tuning, chosen, [], 'here'))
  assert 'Not run yet: at@twice, msmgan@twice.' in table
  # Fitnets' tuning unfinished: nothing names best_other yet, and the line says so.
  table = twice(compare.markdown(cc, rows, tuning[:3], {'kd': cc.tuning.kd[0],
                                                        'at': cc.tuning.at[1]}, [], 'here'))
  assert ('Not run yet: msmgan@twice, best_other@twice (named once every tuning run has '
          'finished).') in table


def test_the_verdict_follows_from_the_paired_intervals(repo_root):
  """compare.md's Verdict: "met" only with the margin reached and the interval above zero,
  "provisional" while an opponent that could change it has not run, "not met" before that
  where no later run can change it, in the main table and
  in a budget table that holds msmgan's main run; ablations are never opponents; a
  malformed target is refused; the committed configs carry the issue's targets."""
  cc = load_config(repo_root, 'compare_lowdata', None)
  cc.methods, cc.ablations, cc.seeds = ('ce', 'kd', 'msmgan'), ('no_gan',), 5
  cc.target = ml_collections.ConfigDict({'margin': 1.0, 'against': ('best',)})
  cc.method_defaults = ml_collections.ConfigDict({'msmgan': 'student.init=first_anchor'})
  cc.budgets = ml_collections.ConfigDict({'init': ml_collections.ConfigDict({
      'setting': 'student.init=first_anchor', 'methods': ('kd',), 'with_main': ('msmgan',)})})
  compare.check(cc)
  seeds5 = lambda base, steps: [base + 0.01 * s for s in steps]
  ce, kd = _row('ce', seeds5(0.80, [0, 1, 0, 1, 0])), _row('kd', seeds5(0.85, [0, 0, 1, 0, 1]))
  # msmgan - kd per seed: 2, 3, 1, 2, 1 points: mean 1.8, t_4 interval [0.76, 2.84].
  ms = _row('msmgan', seeds5(0.87, [0, 1, 0, 0, 0]))
  # An ablation scoring above msmgan is no opponent (nor msmgan's own row).
  ablation = _row('msmgan_no_gan', seeds5(0.95, [0] * 5), method='msmgan', ablation='no_gan')
  kd_init = _row('kd@init', seeds5(0.86, [0, 1, 0, 1, 0]), method='kd', budget='init')
  md = compare.markdown(cc, [ce, kd, ms, ablation, kd_init], [], {}, [], 'here')
  v = md[md.index('## Verdict'):]
  # What msmgan's rows hold where it has method_defaults (its start here): finals and tuning.
  assert md.count('Every setting of msmgan (its candidates, final, ablation and budget runs) '
                  'applies on top of its method_defaults `student.init=first_anchor`') == 2
  assert 'Target: msmgan above the best baseline by at least 1.00 points, each seed-paired ' \
         'interval above zero after Holm\'s correction over its table\'s comparisons; judged ' \
         'on the main budget.' in v
  # msmgan's comparison has the largest p-value of its table: Holm tests it at 95%.
  assert '- main budget: vs kd (the best of ce, kd) +1.80 [+0.76, +2.84]; Holm [+0.76, +2.84]: ' \
         '**met**.' in v
  # Against kd started from the anchor: 1, 1, 1, 0, 1 points: above zero, short of 1 point.
  assert '- init: vs kd@init +0.80 [+0.24, +1.36]; Holm [+0.10, +1.50] (short): **not met**.' in v
  # The verdict reads the corrected interval: the same 1, 1, 1, 0, 1 points over kd (t = 4,
  # p = 0.016) in a table of 5 comparisons, 3 of them noisier, are tested at 1 - 0.05 / 4:
  # the plain interval is above zero, the corrected one is not, and the target (margin 0) is
  # not met.
  cc.target.margin = 0.0
  close = _row('msmgan', [0.86, 0.86, 0.87, 0.85, 0.87])
  noisier = [_row(f'msmgan_{a}', acc, method='msmgan', ablation=a) for a, acc in (
      ('no_gan', [0.90, 0.83, 0.89, 0.84, 0.87]), ('no_mutual', [0.84, 0.87, 0.83, 0.88, 0.85]),
      ('no_blocks', [0.87, 0.84, 0.88, 0.83, 0.86]))]
  md = compare.markdown(cc, [ce, kd, close] + noisier, [], {}, [], 'here')
  assert '- main budget: vs kd (the best of ce, kd) +0.80 [+0.24, +1.36]; Holm [-0.06, +1.66] ' \
         '(short): **not met**.' in md
  assert 'corrected over this table\'s 5 distinct seed-paired comparisons' in md
  assert '**met**' in compare.markdown(cc, [ce, kd, close], [], {}, [], 'here')  # 2 in all.
  cc.target.margin = 1.0
  # 1.2 points on average, but the seeds disagree (5, -2, 3, -1, 1): not told apart.
  noisy = _row('msmgan', [0.90, 0.83, 0.89, 0.84, 0.87])
  assert 'vs kd (the best of ce, kd) +1.20 [-2.36, +4.76]; Holm [-2.36, +4.76] (short): ' \
         '**not met**.' in \
      compare.markdown(cc, [ce, kd, noisy], [], {}, [], 'here')
  # Exactly the margin (per-seed differences summed in floating point) meets it.
  exact = _row('msmgan', [0.8612, 0.8547, 0.8733, 0.8598, 0.8710])
  kd_exact = _row('kd', [0.8512, 0.8447, 0.8633, 0.8498, 0.8610])
  assert '+1.00 [+1.00, +1.00]; Holm [+1.00, +1.00]: **met**.' in compare.markdown(cc, [ce, kd_exact, exact], [],
                                                              {}, [], 'here')
  # A baseline not run yet leaves 'best' open; msmgan not run: nothing to judge.
  assert '**provisional** (not run yet: ce)' in compare.markdown(cc, [kd, ms], [], {}, [],
                                                                 'here')
  # Short of the margin on the mean against the best so far, every seed shared: settled,
  # since a baseline still to run can only raise the best baseline's mean.
  short = _row('msmgan', seeds5(0.855, [0, 1, 0, 0, 0]))  # +0.20 over kd on average.
  v = compare.markdown(cc, [kd, short], [], {}, [], 'here').split('- main budget:')[1]
  assert v.split('\n')[0].endswith(
      "(short): **not met** (settled: a baseline still to run can only raise the best "
      "baseline's mean; not run yet: ce)."), v
  # Not settled: the margin reached on the mean (interval too wide), or a seed not shared.
  assert '(short): **provisional** (not run yet: ce).' in compare.markdown(
      cc, [kd, noisy], [], {}, [], 'here')
  kd4 = _row('kd', kd['accuracies'][:4])
  assert '(short): **provisional** (not run yet: ce).' in compare.markdown(
      cc, [kd4, short], [], {}, [], 'here')
  cc.seeds = 6  # a baseline still to run would have a seed msmgan lacks: not settled.
  assert '(short): **provisional** (not run yet: ce).' in compare.markdown(
      cc, [kd, short], [], {}, [], 'here')
  cc.seeds = 5
  # Margin 0: a paired mean below zero settles it; exactly zero (the interval across) does not.
  cc.target.margin = 0.0
  assert '(short): **not met** (settled:' in compare.markdown(
      cc, [kd, _row('msmgan', seeds5(0.845, [0, 0, 1, 0, 1]))], [], {}, [], 'here')
  assert '+0.00 [-1.24, +1.24]; Holm [-1.24, +1.24] (short): **provisional** (not run yet: ' \
         'ce).' in \
      compare.markdown(cc, [kd, _row('msmgan', seeds5(0.85, [0, 1, 0, 1, 0]))], [], {}, [],
                       'here')
  cc.target.margin = 1.0
  assert '- main budget: not run yet.' in compare.markdown(cc, [ce, kd], [], {}, [], 'here')
  assert '- init: not run yet.' in compare.markdown(cc, [ce, kd, ms], [], {}, [], 'here')
  # A budget's best_other is waited for until a run of a method it does not name is there.
  cc.budgets.init.methods = ('kd', 'best_other')
  compare.check(cc)
  ce_init = _row('ce@init', seeds5(0.80, [0] * 5), method='ce', budget='init')
  # (msmgan is short of kd@init on the mean already: settled, best_other still listed.)
  assert "**not met** (settled: a baseline still to run can only raise the best baseline's " \
         'mean; not run yet: best_other).' in compare.markdown(
             cc, [ce, kd, ms, kd_init], [], {}, [], 'here').split('- init:')[1].split('\n')[0]
  assert '**provisional** (not run yet: best_other).' in compare.markdown(
      cc, [ce, kd, ms, dict(kd_init, accuracies=kd_init['accuracies'][:4], seeds=[0, 1, 2, 3])],
      [], {}, [], 'here').split('- init:')[1].split('\n')[0]
  assert '- init: vs kd@init (the best of kd@init, ce@init) +0.80 [+0.24, +1.36]; Holm ' \
         '[+0.01, +1.59] (short): ' \
         '**not met**.' in compare.markdown(cc, [ce, kd, ms, kd_init, ce_init], [], {}, [],
                                            'here')
  cc.budgets.init.methods = ('kd',)
  # Named opponents: one that ran and falls short settles it, whatever else is to run.
  cc.target.against, cc.target.margin = ('kd',), 2.0
  assert '- main budget: vs kd +1.80 [+0.76, +2.84]; Holm [+0.76, +2.84] (short): **not met**.' \
      in compare.markdown(
      cc, [kd, ms], [], {}, [], 'here')
  cc.methods, cc.target.against = ('ce', 'kd', 'dkd', 'msmgan'), ('kd', 'dkd')
  assert '- main budget: vs kd +1.80 [+0.76, +2.84]; Holm [+0.76, +2.84] (short); vs dkd: not ' \
         'run yet: **not met** ' \
         '(settled: vs kd is final; not run yet: dkd).' in compare.markdown(
             cc, [kd, ms], [], {}, [], 'here')
  # A named opponent short on its interval only (mean past the margin) is final too.
  cc.target.margin = 1.0
  assert '+1.20 [-2.36, +4.76]; Holm [-2.36, +4.76] (short); vs dkd: not run yet: **not met** ' \
         '(settled: vs kd is ' \
         'final; not run yet: dkd).' in compare.markdown(cc, [kd, noisy], [], {}, [], 'here')
  cc.target.margin = 2.0
  # Settled stays settled when the last opponent cannot be judged (one shared seed).
  assert '(short); vs dkd: fewer than 2 shared seeds: **not met**.' in compare.markdown(
      cc, [kd, ms, _row('dkd', [0.86], seeds=[4])], [], {}, [], 'here')
  cc.methods, cc.target.against = ('ce', 'kd', 'msmgan'), ('kd',)
  assert 'Target: msmgan above kd by at least 2.00 points' in compare.markdown(
      cc, [kd, ms], [], {}, [], 'here')
  cc.target.margin = 0.0
  assert 'Target: msmgan above kd, each seed-paired interval above zero after Holm' in \
      compare.markdown(cc, [kd, ms], [], {}, [], 'here')
  # One shared seed gives no interval: no verdict either way.
  one = compare.markdown(cc, [_row('kd', [0.85]), _row('msmgan', [0.87])], [], {}, [], 'here')
  assert 'vs kd: fewer than 2 shared seeds: **cannot be judged**' in one
  for bad in ({'margin': -1.0, 'against': ('kd',)}, {'margin': 1.0, 'against': ('msmgan',)},
              {'margin': 1.0, 'against': ('fitnets',)}, {'margin': 1.0, 'against': ()}):
    cc.target = ml_collections.ConfigDict(bad)
    with pytest.raises(config.ConfigError, match='target'):
      compare.check(cc)
  cc.target, cc.seeds = ml_collections.ConfigDict({'margin': 1.0, 'against': ('kd',)}), 1
  with pytest.raises(config.ConfigError, match='target.*seeds >= 2'):
    compare.check(cc)
  lowdata, full = (load_config(repo_root, n, None).target
                   for n in ('compare_lowdata_v2', 'compare_full_v2'))
  assert (lowdata.margin, tuple(lowdata.against)) == (1.0, ('best',))
  assert (full.margin, tuple(full.against)) == (0.0, ('kd', 'dkd'))


def test_v2_gives_kd_and_dkd_msmgans_start_right_after_msmgan(monkeypatch):
  """Once the design study chooses a start from an anchor, lowdata v2 and full v2 run kd and
  dkd with it right after msmgan's final run, in one table with msmgan's main run."""
  from configs import compare_full_v2  # pylint: disable=g-import-not-at-top
  from configs import compare_lowdata_v2  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(compare_lowdata_v2, 'design_choice',
                      lambda: "stages.block_schedule=own; student.init = 'first_anchor'")
  for module in (compare_lowdata_v2, compare_full_v2):
    cc = module.get_config()
    compare.check(cc)
    b = cc.budgets.init
    assert b.setting == 'student.init=first_anchor' and tuple(b.methods) == ('kd', 'dkd')
    assert tuple(b.with_main) == ('msmgan',)
    names = [r.name for r in compare.plan(cc)]
    i = names.index('msmgan')
    assert names[i + 1:i + 3] == ['kd@init', 'dkd@init'], names
  # lowdata v2: msmgan's ablations right after kd and dkd with its start, then the other
  # baselines (which can only raise the best baseline once msmgan is below dkd).
  ablations = ['msmgan_single_stage', 'msmgan_end_to_end', 'msmgan_no_gan',
               'msmgan_no_mutual', 'msmgan_no_blocks']
  finals = [r.name for r in compare.plan(compare_lowdata_v2.get_config()) if r.kind == 'final']
  assert finals[:17] == ['ce', 'kd', 'dkd', 'msmgan', 'kd@init', 'dkd@init', *ablations,
                         'srrl', 'rco', 'fitnets', 'at', 'dml', 'skd'], finals
  cc = compare_lowdata_v2.get_config()
  cc.ablations_last = True  # every method's final first, then the ablations.
  finals = [r.name for r in compare.plan(cc) if r.kind == 'final']
  assert finals[:12] == ['ce', 'kd', 'dkd', 'msmgan', 'kd@init', 'dkd@init', 'srrl', 'rco',
                         'fitnets', 'at', 'dml', 'skd'], finals
  assert [n for n in finals[12:] if '@' not in n] == ablations
  monkeypatch.setattr(compare_lowdata_v2, 'design_choice', lambda: 'stages.block_schedule=own')
  assert 'init' not in compare_lowdata_v2.get_config().budgets
  assert not compare_full_v2.get_config().budgets


def test_full_v3_gives_every_logit_baseline_msmgans_start_and_tunes_nothing(repo_root):
  """Full v3 (issue 36): lowdata v3b's settings, nothing tuned again; kd, dkd and dkd_ls
  start where msmgan starts, ce at random, kd and dkd at random as a budget; every run
  sees the whole training split."""
  cc = load_config(repo_root, 'compare_full_v3', None)
  compare.check(cc)
  assert cc.settings_from == 'results/lowdata_v3b/compare.json'
  start = compare.parse_setting(cc.method_defaults.msmgan)['student.init']
  assert start != 'random'
  for m in ('kd', 'dkd', 'dkd_ls'):
    assert compare.parse_setting(cc.method_defaults[m])['student.init'] == start, m
  assert 'ce' not in cc.method_defaults
  runs = compare.plan(cc)
  assert not [r for r in runs if r.kind != 'final'], 'nothing is tuned at full scale'
  assert [r.name for r in runs] == ['ce', 'kd', 'dkd', 'msmgan', 'dkd_ls', 'kd@random_start',
                                    'dkd@random_start']
  assert cc.base.dataset.train_split == 'train' and cc.seeds == 3


def test_v3c_runs_the_design_studys_choice_over_all_its_candidates_and_v3s_baselines(
    repo_root):
  """Lowdata v3c (issue 36): msmgan's defaults are the design study's best over every
  candidate it screened (read from its committed compare.json); every baseline run is the
  very config v3 ran, so v3's records are adopted, not trained again; msmgan's four
  candidates train four different students, and no ablation trains msmgan itself again."""
  v3, v3c = (load_config(repo_root, n, None) for n in ('compare_lowdata_v3', 'compare_lowdata_v3c'))
  compare.check(v3c)
  study = json.loads((repo_root / 'results' / 'lowdata_v3_design' / 'compare.json').read_text())
  done = [t for t in study['tuning'] if t['method'] == 'msmgan' and t['mean'] is not None]
  from configs import compare_lowdata_v3c  # pylint: disable=g-import-not-at-top
  assert len(done) == compare_lowdata_v3c.SCREENED, 'every candidate screened has its score'
  best = max(done, key=lambda t: (t['mean'], -t['candidate']))
  assert v3c.method_defaults.msmgan.endswith('; ' + best['setting'])
  design = compare.apply(compare.copy_config(v3c.base), {
      'method': 'msmgan', **compare.parse_setting(v3c.method_defaults.msmgan)})
  assert set(v3c.ablations) == set(v3.ablations) - set(msmgan_config.inapplicable(design))
  anchors = [f'/t/anchors/{e}' for e in (5, 10, 15)]
  as_json = lambda cc, run, chosen: compare.student_config(cc, run, anchors, chosen).to_json()
  own = [r for r in compare.plan(v3c) if r.method != 'msmgan']
  assert own and {r.name for r in own} <= {r.name for r in compare.plan(v3)}
  for run in own:
    for setting in v3c.tuning[run.method]:  # whichever candidate v3's tuning chose.
      chosen = {run.method: setting}
      assert as_json(v3c, run, chosen) == as_json(v3, run, chosen), run.name
  students = {as_json(v3c, compare.Run('tune', f'tune/msmgan/{i}', 'msmgan', candidate=i), {})
              for i in range(len(v3c.tuning.msmgan))}
  assert len(students) == len(v3c.tuning.msmgan) == 4
  assert 'stages.forced_joint=0.3' in ' '.join(v3c.tuning.msmgan)


@pytest.mark.slow
def test_the_choice_is_mechanical_and_reads_validation_numbers_only(repo_root, teacher_run,
                                                                    tmp_path):
  """The best mean over the tuning seeds wins (ties: the earlier); reordering the candidates
  moves the choice with them; the finals' test numbers play no part; a tuning run that was
  evaluated on the test split is refused."""
  tuning = {'kd': ('', 'kd.tau=2.0', 'kd.beta=0.5', 'student.lr=0.2')}
  cc = small(repo_root, teacher_run, tmp_path, ('kd',), tuning)
  cc.tune_seeds = 2
  # Candidate 1 has the best single seed (0.95), candidate 2 the best mean.
  _fake_tuning(cc, 'kd', [[0.80, 0.82], [0.95, 0.70], [0.86, 0.88], [0.87, 0.87]])
  assert compare.choose(cc, cc.workdir) == {'kd': 'kd.beta=0.5'}
  assert compare.validation_scores(cc, cc.workdir) == {'kd': pytest.approx(0.87)}
  # The tie between candidates 2 and 3 (both 0.87) goes to the earlier one.
  final = compare.Run('final', 'kd', 'kd').workdir(cc.workdir)
  os.makedirs(final)
  io.write_json(os.path.join(final, 'summary.json'), {'student': {'test_accuracy': 0.99}})
  assert compare.choose(cc, cc.workdir) == {'kd': 'kd.beta=0.5'}  # test numbers: no say.
  shutil.rmtree(cc.workdir)
  cc.tuning['kd'] = ('', 'student.lr=0.2', 'kd.tau=2.0', 'kd.beta=0.5')
  _fake_tuning(cc, 'kd', [[0.80, 0.82], [0.87, 0.87], [0.95, 0.70], [0.86, 0.88]])
  assert compare.choose(cc, cc.workdir) == {'kd': 'student.lr=0.2'}  # now the earlier one.
  # Every candidate runs with tune_seeds seeds on the validation split.
  run = compare.Run('tune', 'tune/kd/3', 'kd', candidate=3)
  cfg = compare.student_config(cc, run, ['a'], {})
  assert cfg.seeds == 2 and cfg.dataset.test_split == cc.validation_split
  # A tuning run evaluated on another split (the test split) cannot enter the choice.
  wd = run.workdir(cc.workdir)
  cfg.dataset.test_split = cc.base.dataset.test_split
  io.write_text(os.path.join(wd, 'config.json'), cfg.to_json())
  with pytest.raises(config.ConfigError, match='not on the validation split'):
    compare.choose(cc, cc.workdir)


def test_the_v2_protocol_gives_every_method_the_same_powered_tuning(repo_root):
  """configs/compare_lowdata_v2.py: >= 4 candidates x >= 2 seeds for every method, each
  grid changing the method's learning rate and its own loss weights; >= 5 final seeds; a
  validation hold-out of >= 20,000 images; the 30-epoch budget for the named methods."""
  cc = load_config(repo_root, 'compare_lowdata_v2', None)
  compare.check(cc)
  counts = {len(cc.tuning[m]) for m in cc.methods}
  assert len(counts) == 1 and counts.pop() >= 4
  assert cc.tune_seeds >= 2 and cc.seeds >= 5 and cc.min_validation_images >= 20_000
  own = {'ce': (), 'kd': ('kd.beta', 'kd.tau'), 'rco': ('kd.beta', 'kd.tau'),
         'dkd': ('dkd.',), 'srrl': ('srrl.',), 'fitnets': ('fitnets.', 'kd.'), 'at': ('at.',),
         'dml': ('dml.',), 'skd': (), 'msmgan': ('gan.', 'kd.')}
  assert set(own) == set(cc.methods)
  for m in cc.methods:
    fields = {f for t in cc.tuning[m] for f in compare.parse_setting(t)}
    assert fields & {'student.lr', 'stages.block_lr'}, m
    for prefix in own[m]:
      assert any(f.startswith(prefix) for f in fields), (m, prefix)
  runs = compare.plan(cc)
  assert sum(r.kind == 'tune' for r in runs) == 4 * len(cc.methods)
  # best_other: not known before tuning; kd and dkd with msmgan's start if it has one.
  starts = 'student.init=' in cc.method_defaults.msmgan
  budgeted = [r.name for r in runs if r.budget]
  assert [n for n in budgeted if n.endswith('@epochs30')] == [
      'ce@epochs30', 'kd@epochs30', 'dkd@epochs30', 'msmgan@epochs30']
  assert [n for n in budgeted if not n.endswith('@epochs30')] == (
      ['kd@init', 'dkd@init'] if starts else [])
  cfg = compare.student_config(cc, next(r for r in runs if r.name == 'kd@epochs30'), ['/a'] * 3,
                              {'kd': 'kd.beta=0.5'})
  assert cfg.student.epochs == 30 and cfg.kd.beta == 0.5 and cfg.seeds == 5
  # The design study scores on its own slice, disjoint from the tuning's and the students'.
  design = load_config(repo_root, 'compare_lowdata_v2_design', None)
  assert design.validation_split == 'train[20%:60%]' and cc.validation_split == 'train[60%:]'
  assert design.base.to_json() == cc.base.to_json()


@pytest.mark.slow
def test_best_other_is_the_best_validation_score_and_a_budget_run_trains(
    repo_root, teacher_run, tmp_path, capsys):
  cc = small(repo_root, teacher_run, tmp_path, ('ce', 'kd', 'at', 'fitnets'))
  cc.base.student.model = 'cnn'
  cc.budgets = {'twice': ml_collections.ConfigDict({
      'setting': 'student.epochs=2', 'methods': ('ce', 'best_other')})}
  anchors = [a['path'] for a in teacher_run[2]['teacher']['anchors']]
  _fake_tuning(cc, 'ce', [0.5], anchors)
  _fake_tuning(cc, 'kd', [0.9], anchors)  # named nowhere in the budget, but it is kd.
  _fake_tuning(cc, 'at', [0.6], anchors)
  assert compare.budget_methods(cc, 'twice', cc.workdir) == ['ce']  # fitnets not tuned yet.
  _fake_tuning(cc, 'fitnets', [0.7], anchors)
  assert compare.budget_methods(cc, 'twice', cc.workdir) == ['ce', 'kd']
  cc.methods = ('ce',)  # train only ce and its 2-epoch run (re-planned once ce is tuned).
  cc.budgets['twice'].methods = ('ce',)
  doc = compare.run_all(cc, cc.workdir)
  assert [r['name'] for r in doc['runs']] == ['ce', 'ce@twice']
  steps = {r['name']: json.load(open(os.path.join(r['workdir'], 'summary.json')))['student']
           for r in doc['runs']}
  phase_steps = lambda s: sum(p['steps'] for st in s['stages'] for p in st['phases'])
  assert phase_steps(steps['ce@twice']) == 2 * phase_steps(steps['ce'])
  assert doc['runs'][1]['setting'] == '' and doc['runs'][1]['budget'] == 'twice'
  md = open(os.path.join(cc.out, 'compare.md')).read()
  assert '| ce@twice | ce |' in md and md.index('| ce |') < md.index('## twice')


@pytest.mark.slow
def test_the_validation_slice_must_be_large_enough_and_disjoint(repo_root, teacher_run,
                                                                tmp_path):
  cc = small(repo_root, teacher_run, tmp_path, ('kd',))
  compare.check_validation_split(cc)  # train[:3%] and train[97%:].
  cc.min_validation_images = 2000
  with pytest.raises(config.ConfigError, match='holds 1,800 images, fewer than'):
    compare.check_validation_split(cc)
  cc.min_validation_images, cc.validation_split = 0, 'train[2%:5%]'
  with pytest.raises(config.ConfigError, match=r'overlaps the train split .*examples 1200\.\.1799'):
    compare.check_validation_split(cc)


def test_a_final_row_names_the_candidate_its_config_carries(repo_root):
  cc = load_config(repo_root, 'compare_lowdata', None)
  anchors = ['/a', '/b', '/c']
  for i, setting in enumerate(cc.tuning.msmgan):
    for ablation in (None, 'single_stage', 'no_gan'):
      run = compare.Run('final', 'x', 'msmgan', ablation=ablation)
      cfg = json.loads(compare.student_config(cc, run, anchors, {'msmgan': setting}).to_json())
      fixed = registry.ablation_overrides('msmgan', ablation, ml_collections.ConfigDict(cfg))
      assert compare._setting_of(cc, cfg, fixed) == setting, (
          i, ablation)


def test_the_single_stage_ablation_keeps_msmgans_start(repo_root):
  """lowdata v2's msmgan starts from the shared teacher's first anchor (`student.init`); its
  single_stage ablation trains one stage on the last anchor and must still start from the
  first (the run's own first anchor would be the last: a second change). Runs that start at
  random, or whose stages take every anchor, are left as they were."""
  cc = load_config(repo_root, 'compare_lowdata_v2', None)
  anchors = ['/t/checkpoints/anchors/5', '/t/checkpoints/anchors/10', '/t/checkpoints/anchors/15']
  cfg = lambda method, ablation=None: compare.student_config(
      cc, compare.Run('final', 'x', method, ablation=ablation), anchors,
      {'msmgan': '', 'kd': ''})
  single = cfg('msmgan', 'single_stage')
  assert single.anchors.num == 1 and tuple(single.teacher.checkpoints) == (anchors[-1],)
  assert single.student.init == 'first_anchor' and single.student.init_checkpoint == anchors[0]
  assert cfg('msmgan').student.init_checkpoint == ''  # its 3 stages hold the first anchor.
  assert cfg('msmgan', 'no_gan').student.init_checkpoint == ''
  assert cfg('kd').student.init == 'random' and cfg('kd').student.init_checkpoint == ''
  config.validate(single)


@pytest.mark.slow
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
  assert '| msmgan | 1 | stages.block_stages=1 | 0.8000 | 0.8000 | yes |' in md
  cc.settings_from = 'elsewhere/compare.json'
  with pytest.raises(config.ConfigError, match='tune_only'):
    compare.check(cc)


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_fresh_checkout_restores_the_shared_teacher_from_its_committed_record(
    repo_root, teacher_run, tmp_path, monkeypatch, capsys):
  """Without the teacher's workdir, a comparison copies back the committed record
  (results/teacher/<name>) when it trained this very teacher config, instead of training the
  teacher again; an incomplete record, or one of another teacher config, is not used, and
  --report then says why and writes nothing."""
  t_cfg, t_dir, _ = teacher_run
  monkeypatch.chdir(tmp_path)
  cc = small(repo_root, teacher_run, tmp_path, ('kd',))
  cc.teacher_workdir = os.path.join('runs', 'teacher_x')
  with pytest.raises(config.ConfigError, match='holds no finished teacher run; run the '
                     'comparison without --report first'):
    compare.run_all(cc, cc.workdir, report_only=True)
  record = tmp_path / 'results' / 'teacher' / 'teacher_x'
  record.mkdir(parents=True)
  (record / 'summary.json').write_text('{}')
  with pytest.raises(config.ConfigError, match=r'results/teacher/teacher_x is incomplete'):
    compare.run_all(cc, cc.workdir, report_only=True)
  assert not (tmp_path / 'runs').exists()  # nothing written.
  shutil.rmtree(record)
  shutil.copytree(t_dir, record)
  other = copy.deepcopy(cc)
  other.teacher.seed += 1
  with pytest.raises(config.ConfigError, match='trained another teacher config'):
    compare.run_all(other, other.workdir, report_only=True)
  assert not (tmp_path / 'runs').exists()
  capsys.readouterr()
  compare.run_all(cc, cc.workdir, report_only=True)
  assert 'the shared teacher restored into runs/teacher_x' in capsys.readouterr().out
  restored = tmp_path / 'runs' / 'teacher_x'
  assert json.loads((restored / 'summary.json').read_text()) == json.loads(
      (record / 'summary.json').read_text())
  assert sorted(os.listdir(restored / 'checkpoints' / 'anchors')) == sorted(
      os.listdir(record / 'checkpoints' / 'anchors'))
  compare.run_all(cc, cc.workdir, report_only=True)  # found there now: not copied again.
  assert 'restored' not in capsys.readouterr().out
  damaged = os.path.join(cc.out, 'compare.json')  # --report reads its machine line there.
  with open(damaged, 'w') as f:
    f.write('{"machine": ')
  with pytest.raises(config.ConfigError, match='compare.json is not valid JSON.*move it away'):
    compare.run_all(cc, cc.workdir, report_only=True)
  assert open(damaged).read() == '{"machine": '  # not overwritten.


COMMITTED = sorted(p.stem for p in (pathlib.Path(__file__).resolve().parent.parent / 'configs')
                   .glob('compare_*.py'))


@pytest.mark.parametrize('name', COMMITTED)
def test_report_rebuilds_the_committed_tables_from_the_committed_runs(repo_root, tmp_path,
                                                                      monkeypatch, name):
  """What a fresh clone's `--report` does, on a copy of each committed comparison: the
  teacher restored from its record, every run adopted from results/<name>/runs/, and
  compare.json and compare.md rebuilt byte for byte (the README's and docs/results.md's
  tables and claims are tested against those files), on another host too: the machine line
  stays the one of the host that ran the comparison. A comparison not committed yet is skipped."""
  cc = load_config(repo_root, name, None)
  out = repo_root / cc.out
  if not (out / 'compare.json').exists():
    pytest.skip(f'{cc.out} is not committed yet')
  shutil.copytree(repo_root / compare.TEACHER_RECORDS, tmp_path / compare.TEACHER_RECORDS)
  shutil.copytree(out, tmp_path / cc.out, ignore=shutil.ignore_patterns('*.png'))
  if cc.get('settings_from'):  # the full comparisons' settings: another comparison's choice.
    other = os.path.dirname(cc.settings_from)
    shutil.copytree(repo_root / other, tmp_path / other, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns('*.png'))
  monkeypatch.chdir(tmp_path)
  monkeypatch.setattr(compare, 'machine', lambda: 'another host')  # --report keeps the
  # committed machine line: it names the host the runs ran on, not the one rewriting it.
  compare.run_all(cc, cc.workdir, report_only=True)
  for f in ('compare.json', 'compare.md'):
    assert (tmp_path / cc.out / f).read_text() == (out / f).read_text(), (
        f'{cc.out}/{f} is not what --report makes of the committed runs: rerun '
        f'python -m msmgan_jax.compare --config configs/{name}.py --report and commit it')


@pytest.mark.slow
def test_a_methods_candidates_train_in_one_program_and_record_as_their_own_runs(
    repo_root, teacher_run, tmp_path, capsys):
  """`candidates_per_program`: kd's candidates that differ only in per-run fields train in
  one program; each gets the workdir its own run would have written (its planned config,
  so a rerun adopts and skips it); candidates that shape the program train apart."""
  cc = small(repo_root, teacher_run, tmp_path, ('kd', 'dkd'),
             {'kd': ('', 'student.lr=0.2; kd.tau=2.0', 'kd.beta=0.5'),
              'dkd': ('', 'dkd.warmup_epochs=0.0', 'dkd.beta=2.0')})
  cc.tune_only, cc.tune_seeds, cc.candidates_per_program = True, 2, True
  doc = compare.run_all(cc, cc.workdir)
  out = capsys.readouterr().out
  assert 'tune/kd/0, tune/kd/1, tune/kd/2 train in one program' in out
  # dkd's candidate 1 changes the program (its warm-up's Python `if`): it alone trains apart.
  assert 'tune/dkd/1 trains apart from tune/dkd/0' in out and 'dkd.warmup_epochs' in out
  assert 'tune/dkd/0, tune/dkd/2 train in one program' in out
  programs = sorted(os.listdir(os.path.join(cc.workdir, 'program')))
  assert [p.rsplit('_', 1)[0] for p in programs] == ['dkd_0_2', 'kd_0_1_2']
  program = os.path.join(cc.workdir, 'program', programs[1])
  whole = json.load(open(os.path.join(program, 'summary.json')))['student']
  anchors = [a['path'] for a in teacher_run[2]['teacher']['anchors']]
  for i in range(3):
    run = compare.Run('tune', f'tune/kd/{i}', 'kd', candidate=i)
    cfg, _ = compare._planned_config(cc, run, cc.workdir, anchors)
    assert compare._config_diff(run.workdir(cc.workdir), cfg) == []  # its own run's config.
    row = compare.result(cc, run, cc.workdir)
    assert row['accuracies'] == whole['candidates'][i]['test_accuracies']
    assert row['seeds'] == [cfg.seed, cfg.seed + 1] and len(row['curve']) >= 1
  assert doc['chosen']['kd'] in cc.tuning.kd and doc['chosen']['dkd'] in cc.tuning.dkd
  # Each member's wall time is its share of the program's, in its summary and its log.
  mine = json.load(open(os.path.join(cc.workdir, 'tune', 'kd', '1', 'summary.json')))
  assert mine['student']['wall_s'] == pytest.approx(whole['wall_s'] / 3, abs=0.02)
  compare.run_all(cc, cc.workdir)  # a rerun: every run finished, nothing trains again.
  assert capsys.readouterr().out.count('finished, skipped') == 6


def test_candidates_share_a_program_on_an_accelerator_unless_told(repo_root, monkeypatch):
  cc = load_config(repo_root, 'compare_lowdata', None)
  assert not compare.candidates_together(cc)  # 'auto' on this CPU.
  import jax  # pylint: disable=g-import-not-at-top

  class Gpu:
    platform = 'gpu'
  monkeypatch.setattr(jax, 'devices', lambda: [Gpu()])
  assert compare.candidates_together(cc)
  cc.candidates_per_program = False
  assert not compare.candidates_together(cc)
  del cc['candidates_per_program']
  cc.candidates_per_program = 'yes'
  with pytest.raises(config.ConfigError, match='candidates_per_program'):
    compare.check(cc)
