"""The student trainer: frozen leaves stay frozen, greedy steps are cheaper, steps compile once
per block index across stages, and an interrupted run resumes to the same result."""
import json

import jax
import numpy as np
import optax
import pytest

from msmgan_jax.training import workdir as workdir_lib
from msmgan_jax.core import optim
from msmgan_jax.core import steps
from msmgan_jax.training import states as states_lib
from msmgan_jax.methods import msmgan
from msmgan_jax.files import checkpoints
from msmgan_jax.core import sharding
from support import (changed, host, interrupt_at, make_distiller, reference_target,
                     run_phase_steps, synthetic_batches, tiny_cfg)


def test_block_phase_changes_only_block_k_its_connector_and_discriminator(tmp_path):
  d = make_distiller(tiny_cfg(), tmp_path)
  phase = d.phases[0][1]
  assert phase.name == 'block_2' and phase.adversarial
  before, after, metrics = run_phase_steps(d, phase)
  g_params = changed(before['g'].params, after['g'].params)
  assert g_params and all(v == (p.startswith('student/block2/') or p.startswith(
      'connectors/connector2/')) for p, v in g_params.items()), g_params
  g_stats = changed(before['g'].batch_stats, after['g'].batch_stats)
  assert all(v == (p.startswith('student/block2/') or p.startswith('connectors/connector2/'))
             for p, v in g_stats.items()), g_stats
  d_params = changed(before['d'].params, after['d'].params)
  assert set(p.split('/')[0] for p in d_params) == {'disc2'}
  assert all(d_params.values())  # the unit and the teacher trunk (mutual learning) both learn.
  assert any(p.startswith('disc2/trunk/block3/') for p in d_params)
  assert {'feat_mse_b2', 'g_adv_b2', 'd_loss_b2', 'd_acc_real_b2', 'd_acc_fake_b2'} <= set(metrics)


def test_no_mutual_freezes_the_discriminator_trunk(tmp_path):
  d = make_distiller(tiny_cfg(**{'mutual.enabled': False}), tmp_path)
  before, after, _ = run_phase_steps(d, d.phases[0][0])
  d_params = changed(before['d'].params, after['d'].params)
  d_stats = changed(before['d'].batch_stats, after['d'].batch_stats)
  assert all(v == p.startswith('disc1/real_fake/') for p, v in d_params.items()), d_params
  assert not any(d_stats.values())


def test_head_only_phase_keeps_blocks_and_statistics(tmp_path):
  d = make_distiller(tiny_cfg(**{'stages.finetune_all': False, 'mutual.enabled': False}), tmp_path)
  phase = d.phases[0][-1]
  assert phase.name == 'head' and not phase.finetune_all
  before, after, _ = run_phase_steps(d, phase)
  g_params = changed(before['g'].params, after['g'].params)
  assert all(v == p.startswith('student/head/') for p, v in g_params.items()), g_params
  assert not any(changed(before['g'].batch_stats, after['g'].batch_stats).values())
  assert set(after) == {'g', 'rng'}  # the anchor's logits: nothing else trains.


def test_masks_cover_every_parameter_exactly_once():
  params = {'student': {'block1': {'k': 1}, 'head': {'k': 2}}, 'connectors': {'connector1': {'k': 3}}}
  rules = states_lib.rules({'train': ['student/block1/.*', 'connectors/connector1/.*']})
  labels = optim.label_params(params, rules)
  assert labels == {'student': {'block1': {'k': 'train'}, 'head': {'k': 'frozen'}},
                    'connectors': {'connector1': {'k': 'train'}}}
  with pytest.raises(ValueError, match='matches 2 optimizer rules'):
    optim.label_params(params, [('.*', 'a'), ('student/.*', 'b')])
  with pytest.raises(ValueError, match='matches 0 optimizer rules'):
    optim.label_params(params, [('student/.*', 'a')])


def _flops(fn, *args):
  cost = fn.lower(*args).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost['flops'])


def _phase_flops(d, phase):
  """FLOPs of one student update of `phase`, discriminator update included."""
  states = d.build_states(0, d.phases[0].index(phase), d.init_carry())
  batch = sharding.shard_batch(next(synthetic_batches(0)), d.mesh)
  return _flops(d.steps_for(phase).feature_step, states['g'], states['d'],
                d.anchors[0].variables, batch)


@pytest.mark.slow  # about ten seconds: lowers and compiles two phases.
def test_greedy_block_1_step_costs_fewer_flops_than_end_to_end(tmp_path):
  cfg = tiny_cfg(**{'student.model': 'resnet8', 'teacher.model': 'resnet14'})
  greedy = make_distiller(cfg, tmp_path / 'g')
  e2e = make_distiller(tiny_cfg(**{'student.model': 'resnet8', 'teacher.model': 'resnet14',
                                   'stages.greedy': False}), tmp_path / 'e')
  assert e2e.phases[0][0].name == 'blocks'
  f_block1, f_e2e = _phase_flops(greedy, greedy.phases[0][0]), _phase_flops(e2e, e2e.phases[0][0])
  assert 0 < f_block1 < 0.8 * f_e2e, (f_block1, f_e2e)


@pytest.mark.slow
def test_each_step_traces_once_per_block_index_across_stages(tmp_path):
  steps.TRACES.clear()
  d = make_distiller(tiny_cfg(**{'stages.block_stages': -1}), tmp_path)  # blocks every stage.
  result = d.run()
  names = [p['name'] for s in result['stages'] for p in s['phases']]
  assert names == ['block_1', 'block_2', 'block_3', 'head'] * 2
  expected = {f'feature_step {p.name}{p.signature}' for p in d.phases[0][:3]}
  expected.add(f'logit_step head{d.phases[0][3].signature}')
  assert set(steps.TRACES) == expected
  assert all(count == 1 for count in steps.TRACES.values()), dict(steps.TRACES)
  for s in result['stages']:
    for p in s['phases']:
      assert p['steps'] >= 1 and p['wall_s'] > 0 and p['images_per_s'] > 0
      assert 0 <= p['test_accuracy'] <= 1
  block_params = [p['trainable_params'] for p in result['stages'][0]['phases'][:3]]
  assert block_params == sorted(block_params) and result['params'] > block_params[-1]


@pytest.mark.slow
@pytest.mark.parametrize('block_stages, crash_at, position', [
    (-1, 11, [1, 3, 1]),  # stage 2 = 4 phases: its head, after its first checkpoint.
    (1, 8, [1, 0, 1]),  # stage 2 = the head alone (4 steps): after its first checkpoint.
])
def test_interrupted_run_resumes_mid_phase_to_the_same_student(tmp_path, monkeypatch,
                                                               block_stages, crash_at, position):
  cfg = tiny_cfg(**{'checkpoint_every_steps': 1, 'stages.block_stages': block_stages})
  reference = make_distiller(cfg, tmp_path / 'ref').run()
  ref_params = host(checkpoints.Checkpoints(str(tmp_path / 'ref' / 'checkpoints' / 'student_final'))
                    .restore(0, reference_target(cfg))[0])
  # Per stage: block_1, block_2, block_3 (1 step each), head (3 steps, checkpointed after
  # steps 1 and 2). Crash at the 11th update: stage 2's head, after its first checkpoint.
  assert [reference['stages'][0]['phases'][i]['steps'] for i in range(4)] == [1, 1, 1, 3]
  interrupt_at(cfg, tmp_path / 'run', crash_at, monkeypatch)
  ckpt = checkpoints.Checkpoints(str(tmp_path / 'run' / 'checkpoints' / 'student'))
  assert ckpt.meta(ckpt.latest_step())['position'] == position
  resumed = make_distiller(cfg, tmp_path / 'run').run()
  got = host(checkpoints.Checkpoints(str(tmp_path / 'run' / 'checkpoints' / 'student_final'))
             .restore(0, reference_target(cfg))[0])
  np.testing.assert_equal(got, ref_params)  # bit for bit: same data, same states, same steps.
  assert resumed['test_accuracy'] == reference['test_accuracy']
  assert [[p['name'], p['steps'], p['test_accuracy']] for s in resumed['stages']
          for p in s['phases']] == [[p['name'], p['steps'], p['test_accuracy']]
                                    for s in reference['stages'] for p in s['phases']]
  # metrics.jsonl holds each event once, as an uninterrupted run writes it.
  def events(path):
    return [(r['stage'], r['phase'], r['split'], r['step'])
            for r in map(json.loads, open(path / 'metrics.jsonl'))]
  assert events(tmp_path / 'run') == events(tmp_path / 'ref')


def _as_before_the_move(cfg) -> dict:
  """`cfg`'s config.json as the code before methods declared their fields wrote it
  (8db3b4d): one `stages` group holding the anchors' and the trainer's fields too, no
  `anchors`, `msmgan` or `skd` group."""
  new = json.loads(cfg.to_json())
  st, an = new['student'], new.pop('anchors')
  s = new['stages']
  new['stages'] = {'num': an['num'], 'teacher_epochs': an['epochs'], 'greedy': s['greedy'],
                   'phase_shares': s['phase_shares'], 'stage_shares': st.pop('stage_shares'),
                   'block_stages': s['block_stages'], 'schedule': st.pop('schedule'),
                   'block_schedule': st.pop('block_schedule'), 'block_lr': st.pop('block_lr'),
                   'finetune_all': s['finetune_all'],
                   'finetune_lr_mult': st.pop('finetune_lr_mult'), 'head_feat': s['head_feat']}
  del new['msmgan'], new['skd']
  return new


@pytest.mark.slow
def test_a_workdir_written_before_the_move_is_recognised_and_resumes(tmp_path, monkeypatch):
  """A run interrupted under the layout of 8db3b4d (config.json with stages.num and the
  trainer's rates under `stages`; checkpoints with 'd' and 't' slots in every phase, None
  where the phase had no such state, and no list of their names) is the same run today:
  the workdir is claimed without "fields differ", and it resumes bit for bit."""
  cfg = tiny_cfg(**{'checkpoint_every_steps': 1, 'stages.block_stages': -1})
  reference = make_distiller(cfg, tmp_path / 'ref').run()
  ref_params = host(checkpoints.Checkpoints(str(tmp_path / 'ref' / 'checkpoints' / 'student_final'))
                    .restore(0, reference_target(cfg))[0])
  interrupt_at(cfg, tmp_path / 'run', 11, monkeypatch)  # stage 2's head, after its first checkpoint.
  # Rewrite what the run left as the code before the move wrote it.
  (tmp_path / 'run' / 'config.json').write_text(json.dumps(_as_before_the_move(cfg)))
  d = make_distiller(cfg, tmp_path / 'run')
  step = d.ckpt.latest_step()
  meta = d.ckpt.meta(step)
  m, i, _ = meta['position']
  states = d._restore(step, meta, d.build_states(m, i, d.init_carry()))  # pylint: disable=protected-access
  assert set(states) == {'g', 'rng', 't'}  # mid-head: the mutual copy's state.
  old_meta = {k: v for k, v in meta.items() if k not in ('states', 'disc_watch')}
  d.ckpt.save(step, {'g': states['g'], 'd': None, 't': states['t'], 'rng': states['rng']},
              {**old_meta, 'disc_watch': meta.get('disc_watch')})
  wd = workdir_lib.Workdir(str(tmp_path / 'run'))
  wd.claim(cfg)  # recognised: no "fields differ".
  wd.release()
  resumed = make_distiller(cfg, tmp_path / 'run').run()
  got = host(checkpoints.Checkpoints(str(tmp_path / 'run' / 'checkpoints' / 'student_final'))
             .restore(0, reference_target(cfg))[0])
  np.testing.assert_equal(got, ref_params)
  assert resumed['test_accuracy'] == reference['test_accuracy']
  assert json.loads((tmp_path / 'run' / 'config.json').read_text()) == _as_before_the_move(cfg)


def test_conv_discriminator_hinge_and_two_d_steps_per_g(tmp_path):
  d = make_distiller(tiny_cfg(**{'disc.kind': 'conv', 'gan.loss': 'hinge',
                                 'disc.steps_per_g': 2}), tmp_path)
  before, after, metrics = run_phase_steps(d, d.phases[0][2], n=2)
  assert int(after['d'].step) == 4 and int(after['g'].step) == 2  # two D updates per G update.
  d_params = changed(before['d'].params, after['d'].params)
  assert set(p.split('/')[0] for p in d_params) == {'disc3'} and not any('trunk' in p
                                                                         for p in d_params)
  # The hinge loss's gradient on the unit's bias is -1 + 1 = 0 while every score is inside
  # the margins (as here, at init); every other parameter learns.
  assert all(v for p, v in d_params.items() if p != 'disc3/real_fake/bias'), d_params
  assert 0 <= metrics['d_acc_real_b3'] <= 1 and np.isfinite(metrics['g_adv_b3'])


def test_mutual_head_phase_trains_the_anchor_copy_not_the_anchor(tmp_path):
  d = make_distiller(tiny_cfg(), tmp_path)
  phase = d.phases[0][-1]
  assert phase.partner is msmgan.COPY
  before, after, metrics = run_phase_steps(d, phase)  # asserts the anchor is untouched.
  t_params = changed(before['t'].params, after['t'].params)
  assert all(t_params.values())
  assert any(changed(before['t'].batch_stats, after['t'].batch_stats).values())
  np.testing.assert_equal(before['t'].params, host(d.anchors[0].variables['params']))
  assert all(changed(before['g'].params['student'], after['g'].params['student']).values())
  assert {'loss', 'accuracy', 'teacher_copy_loss', 'teacher_copy_accuracy'} <= set(metrics)
  frozen = make_distiller(tiny_cfg(**{'mutual.frozen_bn': True}), tmp_path / 'frozen')
  before, after, _ = run_phase_steps(frozen, frozen.phases[0][-1])
  # mutual.frozen_bn: the copy learns with the anchor's BatchNorm statistics, left unchanged.
  assert all(changed(before['t'].params, after['t'].params).values())
  assert not any(changed(before['t'].batch_stats, after['t'].batch_stats).values())


@pytest.mark.slow
def test_several_seeds_in_one_program_match_their_separate_runs(tmp_path):
  """seeds=2 trains, in one jitted program per step (unrolled, the CPU default), the
  students that seed=0 and seed=1 runs train one at a time: same data orders, same
  initialisations, same numbers (to float tolerance: the program adds in another order)."""
  fields = {'anchors.num': 1, 'seed_batching': 'unroll', 'method': 'skd', 'student.epochs': 1}
  cfgs = [tiny_cfg(**fields, seed=s) for s in (0, 1)]
  runs = [make_distiller(c, tmp_path / f'seed{c.seed}', num_anchors=1).run() for c in cfgs]
  both_cfg = tiny_cfg(**fields, seeds=2)
  both = make_distiller(both_cfg, tmp_path / 'both', num_anchors=1).run()
  assert both['seeds'] == [0, 1]
  np.testing.assert_allclose(both['test_accuracies'], [r['test_accuracy'] for r in runs],
                             atol=0.05)
  assert both['test_accuracy'] == pytest.approx(np.mean(both['test_accuracies']))
  for j, seed in enumerate((0, 1)):
    final = 'student_final' + (f'_{seed}' if j else '')
    got = host(checkpoints.Checkpoints(str(tmp_path / 'both' / 'checkpoints' / final))
               .restore(0, reference_target(both_cfg))[0])
    want = host(checkpoints.Checkpoints(str(tmp_path / f'seed{seed}' / 'checkpoints' / 'student_final'))
                .restore(0, reference_target(both_cfg))[0])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4), got, want)
  records = [json.loads(line) for line in open(tmp_path / 'both' / 'metrics.jsonl')]
  single = [json.loads(line) for line in open(tmp_path / 'seed0' / 'metrics.jsonl')]
  assert [r['seed'] for r in records] == [0, 1] * len(single)  # one record per seed and event.
  for r, s in zip(records[::2], single):
    assert (r['phase'], r['split'], r['step']) == (s['phase'], s['split'], s['step'])


def test_vmapped_seeds_step_like_their_single_seed_steps(tmp_path):
  """seed_batching=vmap (for accelerators): one block_1 step (student, connector and
  discriminator states) for 2 seeds equals each seed's own step."""
  multi = make_distiller(tiny_cfg(seeds=2, seed_batching='vmap'), tmp_path / 'multi')
  singles = [make_distiller(tiny_cfg(seed=s), tmp_path / f's{s}') for s in (0, 1)]
  for i in (0,):
    phase = multi.phases[0][i]
    states = multi.build_states(0, i, multi.init_carry())
    batches = [next(synthetic_batches(s)) for s in (0, 1)]
    stacked = {k: np.stack([b[k] for b in batches]) for k in batches[0]}
    after, _ = multi.step_fn(phase, multi.anchors[0])(states, jax.device_put(stacked))
    for j, d in enumerate(singles):
      one = d.build_states(0, i, d.init_carry())
      want, _ = d.step_fn(phase, d.anchors[0])(one, sharding.shard_batch(batches[j], d.mesh))
      for side in ('g', 'd'):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a[j], b, rtol=1e-4, atol=1e-5),
                     host(after[side].params), host(want[side].params))


def test_global_schedule_continues_across_phases_and_stages(tmp_path):
  """student.schedule=global: each phase's optimizer starts its schedule where the phases
  before it stopped; per phase (the old way) each starts at 0."""
  d = make_distiller(tiny_cfg(**{'student.stage_shares': (0.25, 0.75), 'student.epochs': 40,
                                 'stages.block_stages': -1}), tmp_path / 'g')
  steps = [d.num_steps(p, m) for m in range(2) for p in d.phases[0]]
  # student.stage_shares splits the budget over the stages: 3x the steps in the second.
  assert sum(steps[len(d.phases[0]):]) == pytest.approx(3 * sum(steps[:len(d.phases[0])]), rel=0.1)
  assert d.global_steps(0, 0)[0] == sum(steps)  # pylint: disable=protected-access
  carry = d.init_carry()
  for m, i in ((0, 1), (0, 3), (1, 0), (1, 3)):
    counts = optax.tree_utils.tree_get_all_with_path(
        d.build_states(m, i, carry)['g'].opt_state, 'count')
    assert {int(c) for _, c in counts} == {sum(steps[:m * len(d.phases[0]) + i])}
  p = make_distiller(tiny_cfg(**{'student.schedule': 'phase', 'stages.block_stages': -1}),
                     tmp_path / 'p')
  counts = optax.tree_utils.tree_get_all_with_path(
      p.build_states(1, 2, p.init_carry())['g'].opt_state, 'count')
  assert {int(c) for _, c in counts} == {0}


def test_block_stages_runs_block_phases_in_leading_stages_only(tmp_path):
  """stages.block_stages=1: the first stage has the greedy block phases, the later ones a
  single head phase with the stage's whole budget; -1 keeps them in every stage."""
  d = make_distiller(tiny_cfg(**{'stages.block_stages': 1, 'student.epochs': 40}), tmp_path / 'b')
  assert [p.name for p in d.phases[0]] == ['block_1', 'block_2', 'block_3', 'head']
  assert [p.name for p in d.phases[1]] == ['head']
  per_stage = [sum(d.num_steps(p, m) for p in d.phases[m]) for m in range(2)]
  assert abs(per_stage[0] - per_stage[1]) <= 3  # equal stage budgets (rounding per phase).
  assert d.global_steps(1, 0) == (sum(per_stage), per_stage[0])  # pylint: disable=protected-access
  every = make_distiller(tiny_cfg(**{'stages.block_stages': -1}), tmp_path / 'e')
  assert [p.name for p in every.phases[1]] == [p.name for p in every.phases[0]]


def test_start_at_moves_schedules_only_not_adams_bias_correction():
  """A phase that continues the global schedule sets the schedule's count; an Adam inside the
  same optimizer keeps its own count (its bias correction counts its own updates)."""
  params = {'a': jax.numpy.ones(3), 'b': jax.numpy.ones(2)}
  tx = optax.multi_transform({'sgd': optim.sgd(lambda c: 0.1 * c, 0.9, 0.0),
                              'adam': optax.adam(1e-3)}, {'a': 'sgd', 'b': 'adam'})
  state = optim.start_at(tx.init(params), 7)
  counts = {}
  def visit(n):
    if hasattr(n, '_fields') and 'count' in n._fields:
      counts[type(n).__name__] = int(n.count)
    return n
  jax.tree.map(visit, state, is_leaf=lambda n: hasattr(n, '_fields') and 'count' in n._fields)
  assert counts == {'ScaleByScheduleState': 7, 'ScaleByAdamState': 0}, counts
