"""Several candidates in one program (`candidates`, `core.runs`): the fields in which the
candidates differ (student.lr and the method's run fields) are per-run inputs of one
compiled step, so every run trains the student its own run of that candidate and seed
trains, within float rounding; fields that shape the program are refused."""
import json

import jax
import numpy as np
import pytest

from msmgan_jax import config
from msmgan_jax.core import runs
from msmgan_jax.files import checkpoints
from msmgan_jax.methods import registry
from support import host, interrupt_at, make_distiller, reference_target, tiny_cfg


def _final(path, cfg, name='student_final'):
  return host(checkpoints.Checkpoints(str(path / 'checkpoints' / name))
              .restore(0, reference_target(cfg))[0])


def _rel(a, b):
  num = sum(np.sum((x - y) ** 2) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  return float(np.sqrt(num / sum(np.sum(x ** 2) for x in jax.tree.leaves(a))))


def _apply(cfg, text):
  one = config.copy_config(cfg)
  return config.apply_setting(one, config.parse_setting(text))


def _check_against_separate_runs(tmp_path, base: dict, settings: tuple, tol: float,
                                 batching: str = 'auto'):
  """Trains `settings` x 2 seeds in one program and each candidate apart (2 seeds each):
  every run's final student and test accuracy agree, and its logs are its own run's."""
  cfg = tiny_cfg(**base, seeds=2, candidates=settings, seed_batching=batching)
  together = make_distiller(cfg, tmp_path / 'together').run()
  assert [c['setting'] for c in together['candidates']] == list(settings)
  assert together['run_candidates'] == [0, 0, 1, 1][:2 * len(settings)] + (
      [2, 2] if len(settings) == 3 else [])
  logged = [json.loads(line) for line in open(tmp_path / 'together' / 'metrics.jsonl')]
  for c, text in enumerate(settings):
    one_cfg = tiny_cfg(**base, seeds=2, seed_batching=batching)
    one_cfg = _apply(one_cfg, text)
    config.validate(one_cfg)
    apart = make_distiller(one_cfg, tmp_path / f'apart{c}').run()
    mine = together['candidates'][c]
    assert mine['seeds'] == apart['seeds']
    np.testing.assert_allclose(mine['test_accuracies'], apart['test_accuracies'], atol=0.07)
    for j, seed in zip(mine['runs'], mine['seeds']):
      name = 'student_final' + (f'_c{c}_s{seed}' if j else '')
      ref = 'student_final' + (f'_{seed}' if seed != apart['seeds'][0] else '')
      rel = _rel(_final(tmp_path / f'apart{c}', cfg, ref), _final(tmp_path / 'together', cfg, name))
      assert rel < tol, (text, seed, rel)
    # The program's log of this candidate is the separate run's, event for event, with
    # training losses within rounding.
    theirs = [json.loads(line) for line in open(tmp_path / f'apart{c}' / 'metrics.jsonl')]
    ours = [r for r in logged if r.get('candidate') == c]
    key = lambda r: (r['stage'], r['phase'], r['split'], r['step'], r['seed'])
    assert [key(r) for r in ours] == [key(r) for r in theirs]
    for a, b in zip(ours, theirs):
      if a['split'] == 'train':
        np.testing.assert_allclose(a['loss'], b['loss'], rtol=2e-3, atol=1e-4)
  return together


def test_kd_candidates_in_one_program_train_their_own_runs_students(tmp_path):
  # Candidates that differ in the learning rate, the temperature and the weight at once.
  _check_against_separate_runs(tmp_path, {'method': 'kd', 'student.epochs': 2},
                               ('', 'student.lr=0.2; kd.tau=2.0', 'kd.beta=0.5'), tol=1e-3)


def test_dkd_candidates_vmapped_train_their_own_runs_students(tmp_path):
  # vmap: the per-run values are batched tracers (the accelerators' path).
  _check_against_separate_runs(tmp_path, {'method': 'dkd', 'student.epochs': 2},
                               ('dkd.beta=2.0', 'student.lr=0.05; dkd.alpha=0.5; dkd.tau=2.0'),
                               tol=1e-3, batching='vmap')


@pytest.mark.slow  # a minute: msmgan's joint form with the mutual copy, 2 candidates x 2 seeds.
def test_msmgan_candidates_in_one_program_train_their_own_runs_students(tmp_path):
  base = {'method': 'msmgan', 'student.epochs': 4, 'stages.block_stages': 0,
          'teacher.model': 'resnet8', 'student.model': 'resnet8',
          'stages.forced_joint': 1.0, 'student.init': 'first_anchor'}
  _check_against_separate_runs(
      tmp_path, base, ('', 'student.lr=0.2; kd.beta=0.5; stages.forced_joint=0.3; kd.tau=2.0'),
      tol=2e-3)


def test_fields_that_shape_the_program_are_refused():
  bad = {
      ('kd', "('', 'student.epochs=3')"): 'changes student.epochs',
      ('kd', "('', 'kd.beta=0.0')"): 'is 0 (its term off)',
      ('kd', "('', 'kd.logit_std=True')"): 'changes kd.logit_std',
      ('dkd', "('', 'dkd.warmup_epochs=0.0')"): 'changes dkd.warmup_epochs',
      ('kd', "('', 'seeds=3')"): 'sets seeds',
      ('kd', "('', 'kd.nope=1')"): 'unknown config field kd.nope',
      ('kd', "('', 'kd.tau=-1.0')"): 'kd.tau',
      ('teacher', "('',)"): 'a teacher run trains one teacher',
  }
  for (method, text), words in bad.items():
    cfg = config.defaults()
    cfg.method, cfg.candidates = method, eval(text)  # pylint: disable=eval-used
    with pytest.raises(config.ConfigError, match='candidates') as e:
      config.validate(cfg)
    assert words in str(e.value), (text, str(e.value))


def test_the_per_run_fields_are_the_ones_the_candidates_set_apart():
  cfg = config.defaults()
  cfg.method, cfg.candidates = 'msmgan', ('', 'kd.beta=0.5; student.lr=0.2')
  config.validate(cfg)
  fields, values = config.candidate_values(cfg)
  # kd.beta is copied into msmgan.beta for msmgan, which reads only the latter.
  assert fields == ('msmgan.beta', 'student.lr')
  assert values == [{'msmgan.beta': 0.9, 'student.lr': 0.1}, {'msmgan.beta': 0.5, 'student.lr': 0.2}]
  assert 'kd.beta' in config.run_fields('msmgan')
  for name, method in registry.METHODS.items():  # every method may tune its learning rate.
    assert 'student.lr' in config.run_fields(name), name
    assert set(method.run_fields) <= set(config.flat_fields(config.defaults().to_dict())), name


def test_a_config_view_reads_the_bound_runs_values_and_nothing_else():
  cfg = config.defaults()
  view = runs.ConfigView(cfg)
  assert view.kd.tau == cfg.kd.tau and view['kd']['beta'] == cfg.kd.beta
  with runs.bound({'kd.tau': 7.0}):
    assert view.kd.tau == 7.0 and view.kd.beta == cfg.kd.beta and runs.get(cfg, 'kd.tau') == 7.0
    assert 'kd' in view and view.get('nope', 3) == 3
  assert view.kd.tau == cfg.kd.tau
  with pytest.raises(AttributeError):
    view.kd.tau = 1.0
  sched = runs.per_run_lr(lambda c: 0.1 * (c + 1), 0.1)
  assert sched(1) == pytest.approx(0.2)
  with runs.bound({'student.lr': 0.3}):
    assert float(sched(1)) == pytest.approx(0.6)


def test_a_program_of_candidates_killed_mid_phase_resumes_bit_for_bit(tmp_path, monkeypatch):
  cfg = tiny_cfg(method='kd', candidates=('', 'student.lr=0.2; kd.tau=2.0'),
                 checkpoint_every_steps=3, **{'student.epochs': 2})
  whole = make_distiller(cfg, tmp_path / 'whole').run()
  interrupt_at(cfg, tmp_path / 'run', 5, monkeypatch)  # after the checkpoint at step 3.
  resumed = make_distiller(cfg, tmp_path / 'run').run()
  assert resumed['candidates'][1]['test_accuracies'] == whole['candidates'][1]['test_accuracies']
  for name in ('student_final', 'student_final_c1_s0'):
    jax.tree.map(np.testing.assert_array_equal, _final(tmp_path / 'run', cfg, name),
                 _final(tmp_path / 'whole', cfg, name))


@pytest.mark.slow  # a few seconds per method.
@pytest.mark.parametrize('method', sorted(registry.METHODS))
def test_every_methods_learning_rate_is_a_per_run_input(method, tmp_path):
  """student.lr, which every method may tune in one program, reaches every optimizer that
  runs at the student's rate (a peer's, CRD's embeddings', CTKD's temperature's)."""
  fields = {'method': method, 'student.epochs': 2}
  if method == 'msmgan':
    fields['stages.block_stages'] = -1
  settings = ('', 'student.lr=0.3')
  cfg = tiny_cfg(**fields, candidates=settings)
  make_distiller(cfg, tmp_path / 'together').run()
  for c, text in enumerate(settings):
    one = _apply(tiny_cfg(**fields), text)
    make_distiller(one, tmp_path / f'apart{c}').run()
    name = 'student_final' + (f'_c{c}_s0' if c else '')
    rel = _rel(_final(tmp_path / f'apart{c}', cfg), _final(tmp_path / 'together', cfg, name))
    assert rel < 1e-3, (text, rel)


def test_candidates_at_several_steps_per_dispatch_train_the_same_students(tmp_path):
  """The scanned program (`steps_per_dispatch`) carries each run's values with its states."""
  fields = dict(method='kd', candidates=('', 'student.lr=0.2; kd.tau=2.0'),
                **{'student.epochs': 2, 'log_every_steps': 4})
  one = tiny_cfg(**fields)
  make_distiller(one, tmp_path / 'one').run()
  make_distiller(tiny_cfg(**fields, steps_per_dispatch=2), tmp_path / 'two').run()
  for name in ('student_final', 'student_final_c1_s0'):
    assert _rel(_final(tmp_path / 'one', one, name), _final(tmp_path / 'two', one, name)) < 1e-3


def test_one_candidate_of_one_seed_is_a_program_of_one_run(tmp_path):
  cfg = tiny_cfg(method='kd', candidates=('kd.tau=2.0',), **{'student.epochs': 1})
  out = make_distiller(cfg, tmp_path).run()
  assert out['candidates'][0]['test_accuracies'] == [out['test_accuracy']]
  assert out['candidates'][0]['seeds'] == [0] and out['run_candidates'] == [0]
