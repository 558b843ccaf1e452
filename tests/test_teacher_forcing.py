"""MS-MGANs v3's teacher forcing: the greedy block phases (`stages.teacher_forced`,
`Phase.teacher_forced`), where student block k learns from the anchor's block k-1 map so the
student's own earlier blocks play no part in it, and the joint form in the head phase
(`stages.forced_joint`, `StepView.forced`); the config refuses pairs whose maps do not fit."""
import types

import jax
import numpy as np
import pytest

from msmgan_jax import config as config_lib
from msmgan_jax.core import losses, models
from msmgan_jax.core import phase as phase_lib
from msmgan_jax.core.steps import PhaseSteps
from msmgan_jax.core import sharding
from support import host, make_distiller, run_phase_steps, synthetic_batches, tiny_cfg


def _block_2_after_one_step(tmp_path, forced: bool, nudge: float):
  """Student block 2's parameters after one block_2 step, with block 1's parameters moved
  by `nudge` first."""
  cfg = tiny_cfg(method='msmgan', **{'teacher.model': 'resnet8', 'student.model': 'resnet8',
                                     'stages.teacher_forced': forced})
  d = make_distiller(cfg, tmp_path / f'{forced}_{nudge}')
  i = [p.name for p in d.phases[0]].index('block_2')
  phase = d.phases[0][i]
  assert phase.teacher_forced is forced and phase.feature_blocks == (1,)
  states = d.build_states(0, i, d.init_carry())
  student = dict(states['g'].params['student'])
  b1, b2 = d.student.block_names[0], d.student.block_names[1]
  student[b1] = jax.tree.map(lambda a: a + nudge, student[b1])
  states['g'] = states['g'].replace(params={**states['g'].params, 'student': student})
  step = d.step_fn(phase, d.anchors[0])
  states, metrics = step(states, sharding.shard_batch(next(synthetic_batches(0)), d.mesh))
  assert np.isfinite(float(metrics['g_loss']))
  return host(states['g'].params['student'][b2])


@pytest.mark.slow  # seconds: trains a phase (compiles its steps).
def test_a_forced_block_learns_the_same_whatever_the_blocks_before_it(tmp_path):
  same = [_block_2_after_one_step(tmp_path, True, n) for n in (0.0, 0.05)]
  jax.tree.map(np.testing.assert_array_equal, *same)
  free = [_block_2_after_one_step(tmp_path, False, n) for n in (0.0, 0.05)]
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(free[0]),
                                                      jax.tree.leaves(free[1])))


def test_pairs_whose_maps_do_not_fit_are_refused():
  with pytest.raises(config_lib.ConfigError, match=r'stages\.teacher_forced.*resnet8 gives'):
    tiny_cfg(method='msmgan', **{'stages.teacher_forced': True})  # a cnn student: 32/64 wide.
  with pytest.raises(config_lib.ConfigError, match=r'stages\.greedy=True'):
    tiny_cfg(method='msmgan', **{'student.model': 'resnet8', 'stages.teacher_forced': True,
                                 'stages.greedy': False})


def test_a_forced_phase_cannot_train_the_blocks_before_it():
  with pytest.raises(ValueError, match='teacher_forced feeds'):
    phase_lib.Phase('block_2', 0.1, (1,), hint=True, teacher_forced=True)
  with pytest.raises(ValueError, match='cannot be set on a logit phase'):
    phase_lib.Phase('head', 0.5, loss=lambda v: 0.0, teacher_forced=True)


def test_a_teacher_map_of_another_shape_is_refused_when_traced():
  """What the config cannot check (an external teacher's maps): channels and downsampling."""
  fake = types.SimpleNamespace(student=models.create_model('resnet8', 10))  # 16/32/64, 1/2/4.
  fits = np.ones((2, 14, 14, 32), np.float32)  # block 2's map of 28x28 images, block 3's input.
  np.testing.assert_array_equal(PhaseSteps._forced_input(fake, fits, (2, 28, 28, 1), 2), fits)
  for wrong in ((2, 14, 14, 16), (2, 7, 7, 32), (2, 28, 28, 32)):
    with pytest.raises(ValueError, match=r'block 2 gives \(14, 14, 32\)'):
      PhaseSteps._forced_input(fake, np.ones(wrong, np.float32), (2, 28, 28, 1), 2)


def _head_loss_after_one_step(tmp_path, weight: float):
  """(the head phase's logged loss on the first synthetic batch, the states before it, the
  distiller) for a resnet8 -> resnet8 msmgan with stages.forced_joint = `weight` (the anchor
  as the head's partner: mutual.enabled=False)."""
  cfg = tiny_cfg(method='msmgan', **{'teacher.model': 'resnet8', 'student.model': 'resnet8',
                                     'mutual.enabled': False, 'stages.forced_joint': weight})
  d = make_distiller(cfg, tmp_path / str(weight))
  head = d.phases[0][-1]
  assert head.trains_connectors == (weight > 0)
  before, _, metrics = run_phase_steps(d, head, n=1)
  return float(metrics['loss']), before, d


@pytest.mark.slow  # seconds: compiles two head steps.
def test_the_joint_form_adds_each_blocks_mse_with_the_anchors_map_as_its_input(tmp_path):
  """stages.forced_joint = w adds w x sum_k MSE(C_k(S_k(T_{k-1}(x))), T_k(x)) to the head
  phase's loss (LIT's joint form): checked against the blocks, connectors and anchor applied
  here one at a time, each student block fed the anchor's previous map."""
  plain, before, _ = _head_loss_after_one_step(tmp_path, 0.0)
  joint, before_joint, d = _head_loss_after_one_step(tmp_path, 0.5)
  jax.tree.map(np.testing.assert_array_equal, before['g'].params, before_joint['g'].params)
  x = next(synthetic_batches(0))['image']
  _, t_maps = d.t_model.apply(d.anchors[0].variables, x, train=False)
  g = before['g']
  expected = 0.0
  for k in range(d.student.num_blocks):
    h = x if k == 0 else t_maps[k - 1]
    (_, out), _ = d.student.apply({'params': g.params['student'],
                                   'batch_stats': g.batch_stats['student']}, h, train=True,
                                  start=k, stop=k + 1, with_head=False, mutable=['batch_stats'])
    proj, _ = d.connectors.apply({'params': g.params['connectors'],
                                  'batch_stats': g.batch_stats['connectors']}, out[0], k,
                                 train=True, mutable=['batch_stats'])
    expected += float(losses.feature_mse(proj, t_maps[k]))
  assert expected > 0
  assert joint - plain == pytest.approx(0.5 * expected, rel=1e-4)


def test_the_joint_form_needs_maps_that_fit_and_the_blocks_training():
  with pytest.raises(config_lib.ConfigError, match=r'stages\.forced_joint.*resnet8 gives'):
    tiny_cfg(method='msmgan', **{'stages.forced_joint': 1.0})  # a cnn student.
  with pytest.raises(config_lib.ConfigError, match=r'stages\.forced_joint.*finetune_all'):
    tiny_cfg(method='msmgan', **{'student.model': 'resnet8', 'stages.forced_joint': 1.0,
                                 'stages.finetune_all': False})
  with pytest.raises(config_lib.ConfigError, match=r'stages\.forced_joint'):
    tiny_cfg(method='msmgan', **{'student.model': 'resnet8', 'stages.forced_joint': -1.0})


def test_the_ablations_of_the_joint_form_remove_what_it_has():
  """For a design with the joint form and no block phase: end_to_end keeps the blocks'
  terms at the same weight but on the student's own maps, no_blocks removes them, no_gan
  removes the head's discriminator; an ablation removing a part the design lacks is named
  by `inapplicable` (it would train the design itself), and `variant` names each."""
  from msmgan_jax.methods import registry
  from msmgan_jax.methods.msmgan import config as ms_config
  base = {'student.model': 'resnet8', 'stages.block_stages': 0, 'stages.forced_joint': 0.5}
  joint = tiny_cfg(method='msmgan', **base)
  assert ms_config.inapplicable(joint) == ['no_gan'] and registry.variant(joint) == []
  e2e = registry.ablation_overrides('msmgan', 'end_to_end', joint)
  assert e2e['stages.forced_joint'] == 0.0 and e2e['stages.head_feat'] == 0.5
  assert registry.variant(tiny_cfg(method='msmgan', **{**base, **e2e})) == ['end_to_end']
  no_blocks = registry.ablation_overrides('msmgan', 'no_blocks', joint)
  assert registry.variant(tiny_cfg(method='msmgan', **{**base, **no_blocks})) == ['no_blocks']
  adv = tiny_cfg(method='msmgan', **base, **{'msmgan.head_disc': 0.1})
  assert ms_config.inapplicable(adv) == []
  no_gan = registry.ablation_overrides('msmgan', 'no_gan', adv)
  assert ms_config.inapplicable(tiny_cfg(method='msmgan', **base, **no_gan)) == ['no_gan']
  # Today's greedy design (forced_joint 0): its ablations are the overrides they always were.
  greedy = tiny_cfg(method='msmgan')
  assert ms_config.inapplicable(greedy) == []
  assert registry.ablation_overrides('msmgan', 'end_to_end', greedy) == {
      'stages.greedy': False, 'stages.teacher_forced': False}
