"""Several training steps per dispatch (`steps_per_dispatch`, `training.loop.scanned`): the
loop hands the device up to k batches at once and never runs a program past a step where
something happens (a log, an evaluation, a checkpoint, the end), so a run logs, evaluates
and checkpoints at the steps a run of one step per dispatch does, resumes bit for bit, and
trains the same student within float rounding (XLA fuses across the steps it is given at
once: an ulp-level difference per step)."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from msmgan_jax.core import models, optim
from msmgan_jax.files import checkpoints
from msmgan_jax.training import loop, student
from support import host, make_distiller, reference_target, synthetic_batches, tiny_cfg


def _exact_step(state, batch):
  """A step whose arithmetic is exact (integers): the state counts steps and sums labels."""
  new = {'n': state['n'] + 1, 'total': state['total'] + jnp.sum(batch['label'])}
  return new, {'loss': jnp.sum(batch['label']).astype(jnp.float32), 'n': new['n']}


def _run_loop(k: int, start: int = 0, stop: int = 23, state=None, window=()):
  """`loop.train_loop` over `_exact_step` with logs every 4, a checkpoint at 10 and 20, an
  evaluation at 7 and 14 and epochs of 9 steps; returns what it did and its dispatch sizes."""
  did, sizes = [], []
  step_fn = jax.jit(_exact_step)
  program = loop.scanned(_exact_step)

  def multi(states, stacked):
    sizes.append(int(stacked['label'].shape[0]))
    return program(states, stacked)

  def one(states, batch):
    sizes.append(1)
    return step_fn(states, batch)

  def after(step, states):
    if step in (7, 14):
      did.append(('eval', step, int(states['total'])))
    return states

  state = state or {'n': jnp.int32(0), 'total': jnp.int32(0)}
  out, _, first = loop.train_loop(
      state, one, batches=synthetic_batches(0, skip=start), start=start, stop=stop,
      mesh=None, batch_size=16, log_every=4, log=lambda s, m: did.append(
          ('log', s, {k_: v for k_, v in m.items() if k_ != 'images_per_s'})),
      after_step=after, save=lambda s, st, w: did.append(('save', s, int(st['total']), list(w))),
      save_at=lambda s: s in (10, 20), where='test', window=window, epoch_steps=9,
      multi_step=multi, steps_per_dispatch=k, event_at=lambda s: s in (7, 14))
  return did, sizes, out, first


def test_dispatches_stop_where_something_happens_and_do_what_one_step_does(monkeypatch):
  monkeypatch.setattr(loop.sharding, 'shard_batch', lambda b, mesh: b)
  ref, ref_sizes, ref_state, _ = _run_loop(1)
  assert ref_sizes == [1] * 23
  for k in (3, 4, 32):
    did, sizes, state, first = _run_loop(k)
    assert did == ref, k  # the same logs (means of the same steps), evaluations, checkpoints.
    assert int(state['total']) == int(ref_state['total']) and sum(sizes) == 23
    ends = np.cumsum(sizes)
    boundaries = {4, 8, 12, 16, 20, 23, 10, 20, 7, 14, 9, 18}
    # A dispatch ends at each boundary; none runs past one; none is longer than k.
    assert boundaries <= set(ends.tolist()) and max(sizes) <= k
    assert first == sizes[0]
  # Resumed from the checkpoint at step 10 with its window: the same logs from there on.
  did, _, _, _ = _run_loop(4)
  save10 = next(d for d in did if d[:2] == ('save', 10))
  resumed, _, _, _ = _run_loop(4, start=10, state={'n': jnp.int32(10),
                                                   'total': jnp.int32(save10[2])},
                               window=save10[3])
  assert resumed == [d for d in ref if d[1] > 10 or (d[0] == 'save' and d[1] > 10)]


def test_a_scanned_classifier_step_is_the_steps_one_after_another():
  """The teacher's step: 4 steps in one program against 4 dispatches, within float rounding."""
  model = models.create_model('cnn', 10)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(4, 16, 28, 28, 1)).astype(np.float32)
  y = rng.integers(0, 10, (4, 16)).astype(np.int32)
  v = model.init(jax.random.key(0), x[0], train=False)

  def fresh():
    return optim.TrainState.create(apply_fn=None, params=jax.tree.map(jnp.copy, v['params']),
                                   batch_stats=jax.tree.map(jnp.copy, v['batch_stats']),
                                   tx=optax.sgd(0.1, 0.9))
  step = loop.make_classifier_step(model)
  one, losses = fresh(), []
  for i in range(4):
    one, m = step(one, {'image': x[i], 'label': y[i]})
    losses.append(float(m['loss']))
  many, m = loop.scanned(step)(fresh(), {'image': x, 'label': y})
  np.testing.assert_allclose(np.asarray(m['loss']), losses, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               host(one.params), host(many.params))
  assert int(many.step) == 4


def _final(tmp_path, cfg):
  return host(checkpoints.Checkpoints(str(tmp_path / 'checkpoints' / 'student_final'))
              .restore(0, reference_target(cfg))[0])


def _events(path):
  return [(r['stage'], r['phase'], r['split'], r['step'], r.get('seed'))
          for r in map(json.loads, open(path / 'metrics.jsonl'))]


@pytest.mark.slow  # a minute: three whole msmgan runs of 2 seeds (block, head and mutual phases).
def test_a_run_of_k_steps_per_dispatch_trains_one_steps_student_and_resumes_bit_for_bit(
    tmp_path, monkeypatch):
  fields = {'seeds': 2, 'student.epochs': 6, 'log_every_steps': 6, 'checkpoint_every_steps': 3,
            'stages.block_stages': -1}
  cfg1, cfg3 = tiny_cfg(**fields), tiny_cfg(**fields, steps_per_dispatch=3)
  one = make_distiller(cfg1, tmp_path / 'one').run()
  sizes, real = [], student.Distiller.multi_step_fn

  def counted(self, phase, anchor):
    fn = real(self, phase, anchor)

    def wrapped(states, stacked):
      sizes.append(int(jax.tree.leaves(stacked)[0].shape[0]))
      return fn(states, stacked)
    return wrapped
  monkeypatch.setattr(student.Distiller, 'multi_step_fn', counted)
  three = make_distiller(cfg3, tmp_path / 'three').run()
  monkeypatch.setattr(student.Distiller, 'multi_step_fn', real)
  assert 3 in sizes, sizes  # programs of 3 steps ran.
  assert _events(tmp_path / 'one') == _events(tmp_path / 'three')
  a, b = _final(tmp_path / 'one', cfg1), _final(tmp_path / 'three', cfg3)
  rel = np.sqrt(sum(np.sum((x - y) ** 2) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
                / sum(np.sum(x ** 2) for x in jax.tree.leaves(a)))
  assert rel < 1e-3, rel
  np.testing.assert_allclose(three['test_accuracy'], one['test_accuracy'], atol=0.07)
  # Killed at its 4th dispatch, rerun: bit for bit the uninterrupted run of 3 per dispatch.
  calls = {'n': 0}

  def crashing(self, phase, anchor):
    fn = real(self, phase, anchor)

    def wrapped(states, stacked):
      calls['n'] += 1
      if calls['n'] == 4:
        raise KeyboardInterrupt
      return fn(states, stacked)
    return wrapped
  monkeypatch.setattr(student.Distiller, 'multi_step_fn', crashing)
  with pytest.raises(KeyboardInterrupt):
    make_distiller(cfg3, tmp_path / 'run').run()
  monkeypatch.setattr(student.Distiller, 'multi_step_fn', real)
  assert calls['n'] == 4
  resumed = make_distiller(cfg3, tmp_path / 'run').run()
  jax.tree.map(np.testing.assert_array_equal, _final(tmp_path / 'run', cfg3),
               _final(tmp_path / 'three', cfg3))
  assert resumed['test_accuracy'] == three['test_accuracy']
  assert _events(tmp_path / 'run') == _events(tmp_path / 'three')
