"""The baselines as registered methods of the one trainer: which anchors guide them, which
phases they run and what each phase trains (tiny models, synthetic data)."""
import numpy as np
import pytest

from msmgan_jax import phases
from test_student import changed, make_distiller, run_phase_steps, tiny_cfg


def _names(result):
  return [[p['name'] for p in st['phases']] for st in result['stages']]


@pytest.mark.parametrize('method,stages,names', [
    ('kd', ['anchor1'], [['kd']]),
    ('rco', ['anchor0', 'anchor1'], [['kd'], ['kd']]),
    ('fitnets', ['anchor1'], [['hint', 'kd']]),
    ('at', ['anchor1'], [['at']]),
    ('skd', ['anchor1'], [['block_1', 'block_2', 'block_3', 'head']]),
])
def test_each_baseline_runs_with_its_anchors_and_phases(method, stages, names, tmp_path):
  d = make_distiller(tiny_cfg(method=method, **{'student.epochs': 1}), tmp_path)
  result = d.run()
  assert [st['anchor']['path'] for st in result['stages']] == stages
  assert _names(result) == names
  assert 0 <= result['test_accuracy'] <= 1
  assert sum(p['steps'] for st in result['stages'] for p in st['phases']) == pytest.approx(
      sum(phases.phase_steps(d.cfg, p, d.info.num_train, len(stages)) for p in d.phases)
      * len(stages))


def test_fitnets_hint_phase_trains_the_blocks_up_to_the_middle_one(tmp_path):
  d = make_distiller(tiny_cfg(method='fitnets'), tmp_path)
  hint = d.phases[0]
  assert hint.feature_blocks == (1,) and hint.hint and not hint.adversarial
  before, after, metrics = run_phase_steps(d, hint)
  trained = changed(before['g'].params, after['g'].params)
  want = lambda p: p.split('/')[1] in ('block1', 'block2', 'connector2')
  assert all(v == want(p) for p, v in trained.items()), trained
  assert set(metrics) == {'feat_mse_b2', 'g_loss'}


def test_skd_blocks_have_no_discriminator_and_its_head_trains_alone(tmp_path):
  d = make_distiller(tiny_cfg(method='skd'), tmp_path)
  assert not any(p.adversarial or p.mutual or p.kd for p in d.phases)
  before, after, _ = run_phase_steps(d, d.phases[-1])
  trained = changed(before['g'].params, after['g'].params)
  assert all(v == p.startswith('student/head/') for p, v in trained.items()), trained
  assert after['d'] is None and after['t'] is None


def test_attention_transfer_term_enters_the_loss_with_its_weight(tmp_path):
  losses = {}
  for beta in (0.0, 1000.0):
    d = make_distiller(tiny_cfg(method='at', **{'at.beta': beta}), tmp_path / str(beta))
    _, after, metrics = run_phase_steps(d, d.phases[0], n=1)
    losses[beta] = metrics['loss']
  assert losses[1000.0] > losses[0.0] + 1e-3  # random anchors and students attend differently.
  assert np.isfinite(losses[1000.0])
