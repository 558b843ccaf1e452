"""MS-MGANs v2's parts: the teacher as task critic, the head's task term, block phases on
their own schedule, a single-stage ablation with the same block budget, and the student
initialised from an anchor (weight selection)."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from msmgan_jax.core import losses, models, optim, sharding
from msmgan_jax.methods import msmgan, registry
from msmgan_jax.methods.msmgan import discriminators
from msmgan_jax.methods.msmgan import losses as gan_losses
from support import (changed, host, make_distiller, run_phase_steps, synthetic_batches,
                     tiny_cfg)

TASK = {'disc.kind': 'task', 'gan.alpha_task': 1.0}


def test_the_task_critic_trains_block_k_and_a_copy_of_the_teachers_upper_network(tmp_path):
  d = make_distiller(tiny_cfg(**TASK), tmp_path)
  phase = d.phases[0][1]
  assert phase.name == 'block_2' and phase.critic is msmgan.TASK
  before, after, metrics = run_phase_steps(d, phase)
  g_params = changed(before['g'].params, after['g'].params)
  assert all(v == (p.startswith('student/block2/') or p.startswith('connectors/connector2/'))
             for p, v in g_params.items()), g_params
  d_params = changed(before['d'].params, after['d'].params)
  # D_2 is the anchor's block 3 and head, and all of it learns (mutual learning).
  assert {p.split('/')[2] for p in d_params} == {'block3', 'head'} and all(d_params.values())
  assert not any(changed(before['d'].batch_stats, after['d'].batch_stats).values())
  assert {'task_kl_b2', 'g_adv_b2', 'd_loss_b2', 'd_acc_real_b2', 'd_acc_fake_b2',
          'd_class_acc_b2'} <= set(metrics)
  assert float(metrics['task_kl_b2']) > 0


def test_the_task_term_is_the_kl_of_the_anchors_upper_network_on_both_maps(tmp_path):
  """With only the task term on (no MSE, no adversary), the student's loss is
  tau^2 KL(T_up(f_T) || T_up(C(f_S))) of the frozen anchor, computed here by hand."""
  cfg = tiny_cfg(**TASK, **{'gan.alpha_adv': 0.0, 'gan.alpha_feat': 0.0})
  d = make_distiller(cfg, tmp_path)
  phase = d.phases[0][0]
  assert phase.critic is msmgan.TASK and registry.variant(cfg) == ['no_gan']
  states = d.build_states(0, 0, d.init_carry())
  assert states['d'] is None  # no adversary: nothing of the critic's to train.
  p, s = host(states['g'].params), host(states['g'].batch_stats)
  anchor = d.anchors[0].variables
  batch = next(synthetic_batches(0))
  x = jnp.asarray(batch['image'])
  _, (f_s,) = d.student.apply({'params': p['student'], 'batch_stats': s['student']}, x,
                              train=True, stop=1, with_head=False, mutable=['batch_stats'])[0]
  proj, _ = d.connectors.apply({'params': p['connectors'], 'batch_stats': s['connectors']},
                               f_s, 0, train=True, mutable=['batch_stats'])
  _, t_feats = d.t_model.apply(anchor, x, train=False)
  up = lambda f: d.t_model.apply(anchor, f, train=False, start=1)[0]
  expected = losses.kd(up(proj), up(t_feats[0]), cfg.msmgan.tau)
  _, metrics = d.step_fn(phase, d.anchors[0])(states, sharding.shard_batch(batch, d.mesh))
  np.testing.assert_allclose(metrics['task_kl_b1'], expected, rtol=2e-4)
  np.testing.assert_allclose(metrics['g_loss'], expected, rtol=2e-4)


def test_realness_is_the_logsumexp_of_the_class_logits():
  logits = jnp.array([[0.0, 0.0], [3.0, -1.0]])
  np.testing.assert_allclose(discriminators.task_realness(logits), [np.log(2), np.log(np.exp(3) + np.exp(-1))],
                             rtol=1e-6)
  # D(x) = Z / (Z + 1) with Z = sum exp(l): sigmoid of the realness.
  z = np.exp(logits).sum(-1)
  np.testing.assert_allclose(jax.nn.sigmoid(discriminators.task_realness(logits)), z / (z + 1), rtol=1e-6)


def test_the_head_task_term_trains_the_last_connector_with_the_head(tmp_path):
  d = make_distiller(tiny_cfg(**{'gan.head_task': 1.0, 'mutual.enabled': False}), tmp_path)
  phase = d.phases[0][-1]
  assert phase.name == 'head' and phase.trains_connectors
  before, after, _ = run_phase_steps(d, phase)
  # Only the last block's connector runs (its BatchNorm statistics move) and gets
  # gradients; the others change by weight decay alone: a common factor on every weight.
  stats = changed(before['g'].batch_stats, after['g'].batch_stats)
  assert any(v for p, v in stats.items() if p.startswith('connectors/connector3/'))
  assert not any(v for p, v in stats.items() if p.startswith('connectors/connector1/'))
  ratio = lambda c: (after['g'].params['connectors'][c]['Conv_0']['kernel']
                     / before['g'].params['connectors'][c]['Conv_0']['kernel'])
  decay = ratio('connector1')
  np.testing.assert_allclose(decay, decay.flat[0], rtol=1e-5)
  assert np.ptp(ratio('connector3')) > 100 * np.ptp(decay)


def test_own_block_schedule_takes_block_phases_out_of_the_global_warmup(tmp_path):
  d = make_distiller(tiny_cfg(**{'student.block_schedule': 'own', 'student.epochs': 40}), tmp_path)
  blocks = [p for p in d.phases[0] if p.is_feature]
  heads = sum(d.num_steps(p, m) for m in range(2) for p in d.phases[m] if not p.is_feature)
  assert len(blocks) == 3 and d.global_steps(0, 3) == (heads, 0)
  carry = d.init_carry()
  block = d.build_states(0, 1, carry)['g']
  counts = optax.tree_utils.tree_get_all_with_path(block.opt_state, 'count')
  assert {int(c) for _, c in counts} == {0}  # its own cosine, from block_lr at step 0.
  n = d.num_steps(d.phases[0][1], 0)
  sched = optim.lr_schedule(d.cfg.student.block_lr, n, 0)
  assert float(sched(0)) == pytest.approx(d.cfg.student.block_lr)
  head = d.build_states(1, 0, carry)['g']
  first_head = d.num_steps(d.phases[0][-1], 0)
  counts = optax.tree_utils.tree_get_all_with_path(head.opt_state, 'count')
  assert {int(c) for _, c in counts} == {first_head}  # the global one counts heads only.


def test_single_stage_keeps_the_block_and_head_budgets(tmp_path):
  cfg = tiny_cfg(**{'student.stage_shares': (0.25, 0.75), 'stages.block_stages': 1,
                    'student.epochs': 40})
  over = registry.ablation_overrides('msmgan', 'single_stage', cfg)
  assert over['stages.phase_shares'] == pytest.approx((0.025, 0.025, 0.025, 0.925))
  full = make_distiller(cfg, tmp_path / 'full')
  one_cfg = tiny_cfg(**{'student.stage_shares': (0.25, 0.75), 'stages.block_stages': 1,
                        'student.epochs': 40, **over})
  one = make_distiller(one_cfg, tmp_path / 'one', num_anchors=1)
  steps = lambda d: {p.name: sum(d.num_steps(q, m) for m in range(len(d.phases))
                                 for q in d.phases[m] if q.name == p.name)
                     for p in d.phases[0]}
  a, b = steps(full), steps(one)
  assert set(a) == set(b) and all(abs(a[k] - b[k]) <= 2 for k in a), (a, b)
  assert registry.variant(one_cfg) == ['single_stage']
  # Without block phases there is no block budget to keep.
  assert registry.ablation_overrides('msmgan', 'single_stage', tiny_cfg(**{
      'stages.block_stages': 0})) == {'anchors.num': 1, 'student.stage_shares': ()}


def test_weight_selection_takes_the_anchors_arrays_by_name_and_leading_slices():
  r8, r20 = models.create_model('resnet8', 10), models.create_model('resnet20', 10)
  v8 = optim.init_variables(r8, jax.random.key(0), (28, 28, 1))
  v20 = optim.init_variables(r20, jax.random.key(1), (28, 28, 1))
  out, taken, total = models.select_weights(v8, v20)
  assert taken == total  # resnet8 nests in resnet20 by name: every array is the teacher's.
  np.testing.assert_array_equal(out['params']['block2']['BasicBlock_0']['Conv_0']['kernel'],
                                v20['params']['block2']['BasicBlock_0']['Conv_0']['kernel'])
  # A narrower net: each axis takes the leading elements; arrays the teacher lacks stay.
  narrow = {'params': {'head': {'Dense_0': {'kernel': jnp.zeros((32, 10)),
                                             'extra': jnp.ones(3)}}}}
  out, taken, total = models.select_weights(narrow, v20)
  np.testing.assert_array_equal(out['params']['head']['Dense_0']['kernel'],
                                v20['params']['head']['Dense_0']['kernel'][:32])
  np.testing.assert_array_equal(out['params']['head']['Dense_0']['extra'], jnp.ones(3))
  assert (taken, total) == (320, 323)
  wider = {'params': {'head': {'Dense_0': {'kernel': jnp.zeros((128, 10))}}}}
  assert models.select_weights(wider, v20)[1] == 0  # larger than the teacher's: kept.
  # The share a pair would take, from shapes alone (what `student.init`'s check reads).
  shapes = lambda name: jax.eval_shape(lambda: optim.init_variables(
      models.create_model(name, 10), jax.random.key(0), (28, 28, 1)))
  assert models.selectable_share(v8, v20) == models.selectable_share(v8, shapes('resnet20')) == 1.0
  assert models.selectable_share(narrow, v20) == pytest.approx(320 / 323)
  assert 0.0 < models.selectable_share(shapes('cnn'), v20) < 0.01  # the head's bias only.


@pytest.mark.slow
def test_student_init_starts_the_student_from_the_first_anchor(tmp_path, capsys):
  cfg = tiny_cfg(**{'student.model': 'resnet8', 'student.init': 'first_anchor',
                    'method': 'kd', 'student.epochs': 1})
  d = make_distiller(cfg, tmp_path)
  params, stats = host(d.init_carry())
  anchor = host(d.teacher.anchors[0].variables)
  np.testing.assert_array_equal(params['student']['block1']['Conv_0']['kernel'],
                                anchor['params']['block1']['Conv_0']['kernel'])
  np.testing.assert_array_equal(stats['student']['block3']['BasicBlock_0']['BatchNorm_0']['mean'],
                                anchor['batch_stats']['block3']['BasicBlock_0']['BatchNorm_0']['mean'])
  assert d.states.init_record['selected'] == d.states.init_record['total'] > 0
  d.run()  # the console says where the start came from and how much of it was taken.
  assert (f'student: started from the anchor of teacher epoch 1 (first_anchor): '
          f'{d.states.init_record["total"]:,} of its {d.states.init_record["total"]:,} '
          'parameters and statistics selected') in capsys.readouterr().out
  random = make_distiller(tiny_cfg(**{'student.model': 'resnet8'}), tmp_path / 'r')
  assert not np.array_equal(host(random.init_carry())[0]['student']['block1']['Conv_0']['kernel'],
                            anchor['params']['block1']['Conv_0']['kernel'])


@pytest.mark.slow
def test_a_student_started_from_an_anchor_trains_without_sharing_its_buffers(tmp_path):
  """Weight selection hands the student copies, not the anchor's own arrays: every update
  step donates the student's state while the anchor is an argument too, and one seed (no
  stacking, which copies) used to make the first update of every method fail with "a
  buffer that was previously donated" (kd's step as msmgan's: the copy is made in one place,
  checked here for every array; msmgan's block, head and mutual steps run)."""
  cfg = tiny_cfg(**TASK, **{'student.model': 'resnet8', 'student.init': 'first_anchor',
                            'student.epochs': 1, 'seeds': 1, 'gan.relativistic': True})
  d = make_distiller(cfg, tmp_path)
  carry = d.init_carry()  # the student's parameters and BatchNorm statistics.
  pointers = lambda tree: [x.unsafe_buffer_pointer() for x in jax.tree_util.tree_leaves(tree)]
  held = {p for a in d.teacher.anchors for p in pointers(a.variables)}
  assert not held & set(pointers(carry))
  # Nor may a phase's states (the donated argument: student, critic or teacher copy and
  # their optimizer states, built from the anchor) hold one buffer twice (optax#1059's kind).
  for m, stage in enumerate(d.phases):
    for i, phase in enumerate(stage):
      mine = pointers(d.build_states(m, i, carry))
      assert len(mine) == len(set(mine)) and not held & set(mine), (m, phase.name)
  d.run()
  assert np.isfinite(np.asarray(host(d.teacher.anchors[0].variables)['params']['head'][
      'Dense_0']['kernel'])).all()  # the anchor is still readable after every donation.


def test_student_init_checkpoint_starts_the_student_from_that_anchor(tmp_path):
  """`student.init_checkpoint` (what a comparison gives its single_stage ablation) starts the
  student from the anchor saved there, not from the run's own first anchor; a missing one
  or one trained on other data is refused before the run writes anything; it needs a
  student.init other than random."""
  from msmgan_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from msmgan_jax import errors  # pylint: disable=g-import-not-at-top
  from msmgan_jax.files import checkpoints  # pylint: disable=g-import-not-at-top
  from msmgan_jax.training import teacher as teacher_lib  # pylint: disable=g-import-not-at-top
  from support import INFO, make_teacher  # pylint: disable=g-import-not-at-top
  cfg = tiny_cfg(**{'student.model': 'resnet8', 'student.init': 'first_anchor',
                    'method': 'kd', 'student.epochs': 1})
  saved = host(make_teacher(cfg, 3).anchors[2].variables)  # unlike the run's anchors 1, 2.
  store = checkpoints.Checkpoints(str(tmp_path / 'anchors'))
  store.save(7, saved, {'epoch': 7, 'test_accuracy': 0.5, 'model': cfg.teacher.model,
                        'data': INFO.record()})
  cfg.student.init_checkpoint = str(tmp_path / 'anchors' / '7')
  config_lib.validate(cfg)
  teacher_lib.check_student_init(cfg, INFO)
  d = make_distiller(cfg, tmp_path / 'run')
  params, _ = host(d.init_carry())
  np.testing.assert_array_equal(params['student']['block1']['Conv_0']['kernel'],
                                saved['params']['block1']['Conv_0']['kernel'])
  assert d.states.init_record['epoch'] == 7
  assert not np.array_equal(saved['params']['block1']['Conv_0']['kernel'], host(
      d.teacher.anchors[0].variables)['params']['block1']['Conv_0']['kernel'])
  cfg.student.init_checkpoint = str(tmp_path / 'anchors' / '8')
  with pytest.raises(errors.CheckpointError, match='not found'):
    teacher_lib.check_student_init(cfg, INFO)
  store.save(9, saved, {'epoch': 9, 'test_accuracy': 0.5, 'model': cfg.teacher.model,
                        'data': dict(INFO.record(), num_classes=100)})
  cfg.student.init_checkpoint = str(tmp_path / 'anchors' / '9')
  with pytest.raises(errors.CheckpointError, match='classes'):  # refused before any write.
    teacher_lib.check_student_init(cfg, INFO)
  cfg.student.init = 'random'
  with pytest.raises(config_lib.ConfigError, match='student.init_checkpoint'):
    config_lib.validate(cfg)


def test_relativistic_realness_and_its_losses_by_hand():
  real, fake = jnp.array([5.0, 7.0]), jnp.array([6.0, 4.0])
  r, f = gan_losses.relativistic(real, fake)
  np.testing.assert_allclose(r, [0.0, 2.0])
  np.testing.assert_allclose(f, [0.0, -2.0])
  sp = lambda x: np.log1p(np.exp(x))
  # RaSGAN: D minimises softplus(-r) + softplus(f); G the same with the roles swapped.
  np.testing.assert_allclose(gan_losses.gan_d('bce', r, f), np.mean(sp(-np.array([0.0, 2.0])))
                             + np.mean(sp(np.array([0.0, -2.0]))), rtol=1e-6)
  np.testing.assert_allclose(gan_losses.gan_d('bce', f, r), np.mean(sp(-np.array([0.0, -2.0])))
                             + np.mean(sp(np.array([0.0, 2.0]))), rtol=1e-6)


def test_a_relativistic_task_critic_trains_and_reports_relative_accuracies(tmp_path):
  d = make_distiller(tiny_cfg(**TASK, **{'gan.relativistic': True}), tmp_path)
  before, after, metrics = run_phase_steps(d, d.phases[0][0])
  assert all(changed(before['d'].params, after['d'].params).values())
  assert all(np.isfinite(metrics[k]) for k in ('g_adv_b1', 'd_loss_b1'))
  for key in ('d_acc_real_b1', 'd_acc_fake_b1'):
    assert 0 <= float(metrics[key]) <= 1
