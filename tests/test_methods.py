"""The baselines as registered methods of the one trainer: which anchors guide them, which
phases they run and what each phase trains (tiny models, synthetic data)."""
import numpy as np
import pytest

from msmgan_jax.core import losses
from msmgan_jax.core.phase import ANCHOR, Phase, whole_student
from msmgan_jax.methods import registry as phases
from msmgan_jax.core import sharding
from support import (changed, host, make_distiller, make_teacher, run_phase_steps,
                     synthetic_batches, tiny_cfg)


def _names(result):
  return [[p['name'] for p in st['phases']] for st in result['stages']]


@pytest.mark.slow
@pytest.mark.parametrize('method,stages,names', [
    ('rco', ['anchor0', 'anchor1'], [['kd'], ['kd']]),
])
def test_each_baseline_runs_with_its_anchors_and_phases(method, stages, names, tmp_path):
  d = make_distiller(tiny_cfg(method=method, **{'student.epochs': 1}), tmp_path)
  result = d.run()
  assert [st['anchor']['path'] for st in result['stages']] == stages
  assert _names(result) == names
  assert 0 <= result['test_accuracy'] <= 1
  assert sum(p['steps'] for st in result['stages'] for p in st['phases']) == pytest.approx(
      sum(phases.phase_steps(d.cfg, p, d.info.num_train, len(stages)) for p in d.phases[0])
      * len(stages))


def test_fitnets_hint_phase_trains_the_blocks_up_to_the_middle_one(tmp_path):
  d = make_distiller(tiny_cfg(method='fitnets'), tmp_path)
  hint = d.phases[0][0]
  assert hint.feature_blocks == (1,) and hint.hint and not hint.adversarial
  before, after, metrics = run_phase_steps(d, hint)
  trained = changed(before['g'].params, after['g'].params)
  want = lambda p: p.split('/')[1] in ('block1', 'block2', 'connector2')
  assert all(v == want(p) for p, v in trained.items()), trained
  assert set(metrics) == {'feat_mse_b2', 'g_loss'}


def test_skd_blocks_have_no_discriminator_and_its_head_trains_alone(tmp_path):
  d = make_distiller(tiny_cfg(method='skd'), tmp_path)
  assert not any(p.adversarial or p.partner is not None for p in d.phases[0])
  before, after, _ = run_phase_steps(d, d.phases[0][-1])
  trained = changed(before['g'].params, after['g'].params)
  assert all(v == p.startswith('student/head/') for p, v in trained.items()), trained
  assert set(after) == {'g', 'rng'}  # no hook, no other state.


def test_attention_transfer_term_enters_the_loss_with_its_weight(tmp_path):
  losses = {}
  for beta in (0.0, 1000.0):
    d = make_distiller(tiny_cfg(method='at', **{'at.beta': beta}), tmp_path / str(beta))
    _, after, metrics = run_phase_steps(d, d.phases[0][0], n=1)
    losses[beta] = metrics['loss']
  assert losses[1000.0] > losses[0.0] + 1e-3  # random anchors and students attend differently.
  assert np.isfinite(losses[1000.0])


def test_dml_trains_student_and_a_fresh_peer_against_each_other(tmp_path):
  """DML from scratch: no anchor guides it; the peer (teacher.model, fresh) and the student
  each take CE + beta tau^2 KL(other || self) on the other's training-mode logits of the
  same batch, and both update."""
  d = make_distiller(tiny_cfg(method='dml'), tmp_path)
  assert d.anchors == [None] and [p.name for p in d.phases[0]] == ['dml']
  phase = d.phases[0][0]
  states = d.build_states(0, 0, d.init_carry())
  before = host(states)
  batch = sharding.shard_batch(next(synthetic_batches(0)), d.mesh)
  # The two forwards the step must use: training mode, the first batch, the initial params.
  (s_logits, _), _ = d.student.apply(
      {'params': before['g'].params['student'], 'batch_stats': before['g'].batch_stats['student']},
      batch['image'], train=True, mutable=['batch_stats'])
  (p_logits, _), _ = d.t_model.apply(
      {'params': before['t'].params, 'batch_stats': before['t'].batch_stats}, batch['image'],
      train=True, mutable=['batch_stats'])
  y = batch['label']
  step = d.step_fn(phase, None)
  after, metrics = step(states, batch)
  assert float(metrics['loss']) == pytest.approx(
      float(losses.cross_entropy(s_logits, y) + losses.kd(s_logits, p_logits, 1.0)), rel=1e-4)
  assert float(metrics['peer_loss']) == pytest.approx(
      float(losses.cross_entropy(p_logits, y) + losses.kd(p_logits, s_logits, 1.0)), rel=1e-4)
  after = host(step(after, batch)[0])  # the warmup's first rate is 0: a second step.
  assert all(changed(before['g'].params['student'], after['g'].params['student']).values())
  assert all(changed(before['t'].params, after['t'].params).values())
  # Fresh, not an anchor: the peer's initial parameters are no anchor's.
  anchor = host(make_teacher(d.cfg, 2).anchors[-1].variables['params'])
  assert any(changed(anchor, before['t'].params).values())


def test_head_feature_terms_train_the_connectors_with_the_head(tmp_path):
  """stages.head_feat > 0: the head phase keeps every block's feature MSE (through its
  connector, which now trains too) next to CE + KD; at 0 the connectors stay frozen."""
  for weight in (0.0, 1.0):
    d = make_distiller(tiny_cfg(**{'stages.head_feat': weight}), tmp_path / str(weight))
    head = d.phases[0][-1]
    assert head.trains_connectors == (weight > 0)
    before, after, _ = run_phase_steps(d, head, n=2)
    trained = changed(before['g'].params['connectors'], after['g'].params['connectors'])
    assert all(v == (weight > 0) for v in trained.values()), (weight, trained)


def _triple_mse(projected, teacher_map):
  """A feature phase's own loss: 3 x the default feature MSE."""
  return 3.0 * losses.feature_mse(projected, teacher_map)


def test_a_feature_phase_minimises_its_own_loss_with_its_weight(tmp_path):
  """A feature phase's `loss` and `weight` are what the step minimises (no config field in
  between): on the same first batch and states, the loss is logged as feat_loss_b<k> at 3x
  the default MSE, the student's loss is weight x that, and the update differs."""
  d = make_distiller(tiny_cfg(method='skd'), tmp_path)
  plain = d.phases[0][0]
  own = Phase('block_1', plain.share, (0,), loss=_triple_mse, weight=2.0)
  _, _, m_plain = run_phase_steps(d, plain, n=1)
  assert set(m_plain) == {'feat_mse_b1', 'g_loss'}
  assert float(m_plain['g_loss']) == pytest.approx(float(m_plain['feat_mse_b1']))
  _, after_plain, _ = run_phase_steps(d, plain, n=3)
  d.phases = [[own] + d.phases[0][1:]]
  _, _, m_own = run_phase_steps(d, own, n=1)
  assert set(m_own) == {'feat_loss_b1', 'g_loss'}
  assert float(m_own['feat_loss_b1']) == pytest.approx(3 * float(m_plain['feat_mse_b1']), rel=1e-5)
  assert float(m_own['g_loss']) == pytest.approx(2 * float(m_own['feat_loss_b1']), rel=1e-5)
  _, after_own, _ = run_phase_steps(d, own, n=3)
  differ = changed(after_plain['g'].params['student'], after_own['g'].params['student'])
  assert any(v for p, v in differ.items() if p.startswith('block1/')), differ


@pytest.mark.parametrize('fields,message', [
    (dict(name='head', share=1.0, loss=losses.cross_entropy, hint=True), 'hint cannot be set on a logit'),
    (dict(name='head', share=1.0, loss=losses.cross_entropy, weight=2.0),
     'weight cannot be set on a logit'),
    (dict(name='head', share=1.0, loss=losses.cross_entropy, critic=object()),
     'critic cannot be set on a logit'),
    (dict(name='head', share=1.0), 'a logit phase needs a loss'),
    (dict(name='block_1', share=0.1, feature_blocks=(0,), partner=ANCHOR),
     'partner cannot be set on a feature'),
    (dict(name='block_1', share=0.1, feature_blocks=(0,), finetune_all=True, standalone=True),
     'finetune_all, standalone cannot be set on a feature'),
    (dict(name='block_1', share=0.1, feature_blocks=(0,), weight=-1.0), 'weight must be'),
    (dict(name='block_1', share=0.1, feature_blocks=(1, 0)), 'increasing block indices'),
    (dict(name='block_1', share=0.1, feature_blocks=[0]), 'must be a tuple'),
    (dict(name='block_1', share=1.5, feature_blocks=(0,)), r'share must be a number in \[0, 1\]'),
    (dict(name='', share=0.5, loss=losses.cross_entropy), 'a phase needs a name'),
    (dict(name='block_1', share=0.1, feature_blocks=(0,), loss='mse'), 'loss must be a function'),
])
def test_a_phase_refuses_fields_of_the_other_kind_and_bad_values(fields, message):
  with pytest.raises(ValueError, match=message):
    Phase(**fields)


def test_the_one_phase_methods_share_one_pattern():
  """ce, kd, rco, dkd, at, dml, srrl: one phase training the whole student after the warmup."""
  for name in ('ce', 'kd', 'rco', 'dkd', 'at', 'dml', 'srrl'):
    cfg = tiny_cfg(method=name)
    (phase,) = phases.stage_phases(cfg, 3)
    assert phase.finetune_all and phase.standalone and phase.share == 1.0 and not phase.is_feature
    assert phases.stage_phases(cfg, 3)[0] is phase  # one value: compiled steps are shared.
  assert whole_student('x', losses.cross_entropy, ANCHOR, 0.5, True) == Phase(
      'x', 0.5, loss=losses.cross_entropy, partner=ANCHOR, finetune_all=True, standalone=True,
      trains_connectors=True)
