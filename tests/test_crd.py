"""crd: its NCE loss against a hand-worked value, its negatives and memory banks, its state
through a step and a resume, and a run through `main` and through `compare` on real data."""
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from msmgan_jax import config
from msmgan_jax import main
from msmgan_jax.files import checkpoints
from msmgan_jax.lab import compare
from msmgan_jax.methods import crd
from support import (changed, host, interrupt_at, load_config, make_distiller,
                     reference_target, run_phase_steps, shrink, synthetic_batches,
                     teacher_config_file, tiny_cfg)

# Five unit rows in 2-D; anchors [1, 0] and [0, 1] whose positives are rows 0 and 1.
BANK = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0], [0.6, 0.8]], np.float32)
V = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
INDEX = np.array([0, 1], np.int32)
NEGATIVES = np.array([[2, 4], [3, 4]], np.int32)


def nce_by_hand(z):
  """Tian et al.'s eq. 18 as RepDistiller computes it, written out for BANK, V, tau = 1:
  the critic h = exp(w . v / tau) / Z, noise K / N = 2 / 5, eps = 1e-7."""
  e, eps, noise = math.e, 1e-7, 2 / 5
  # exp(w . v) for (positive, negative 1, negative 2) of each anchor:
  # anchor 0: w0.v = 1, w2.v = -1, w4.v = 0.6; anchor 1: w1.v = 1, w3.v = -1, w4.v = 0.8.
  scores = [[e, 1 / e, e ** 0.6], [e, 1 / e, e ** 0.8]]
  total = 0.0
  for pos, *negs in scores:
    total += math.log((pos / z) / (pos / z + noise + eps))
    total += sum(math.log(noise / (n / z + noise + eps)) for n in negs)
  return -total / 2


def test_nce_loss_by_hand_with_a_fixed_and_an_estimated_normalisation():
  loss, z = crd.nce_loss(jnp.asarray(V), jnp.asarray(BANK), jnp.asarray(INDEX),
                         jnp.asarray(NEGATIVES), jnp.float32(2.0), 1.0)
  assert float(z) == 2.0
  assert float(loss) == pytest.approx(nce_by_hand(2.0), rel=1e-6)
  # Z unset (< 0): the first batch sets it, mean of the six exp(w . v) times N = 5.
  z_first = (2 * math.e + 2 / math.e + math.e ** 0.6 + math.e ** 0.8) / 6 * 5
  loss, z = crd.nce_loss(jnp.asarray(V), jnp.asarray(BANK), jnp.asarray(INDEX),
                         jnp.asarray(NEGATIVES), jnp.float32(-1.0), 1.0)
  assert float(z) == pytest.approx(z_first, rel=1e-6)
  assert float(loss) == pytest.approx(nce_by_hand(z_first), rel=1e-6)
  # The anchors get a gradient; Z and the bank are constants to it.
  grad = jax.grad(lambda v: crd.nce_loss(v, jnp.asarray(BANK), jnp.asarray(INDEX),
                                         jnp.asarray(NEGATIVES), jnp.float32(-1.0), 1.0)[0])(
                                             jnp.asarray(V))
  assert np.all(np.isfinite(grad)) and np.any(grad != 0)


def test_negatives_are_uniform_over_the_other_examples():
  index = jnp.arange(5, dtype=jnp.int32)
  neg = np.asarray(crd.sample_negatives(jax.random.key(0), index, 5, 4000))
  assert neg.shape == (5, 4000) and neg.dtype == np.int32
  for i in range(5):
    counts = np.bincount(neg[i], minlength=5)
    assert counts[i] == 0 and np.all(np.abs(counts[np.arange(5) != i] - 1000) < 120), counts
  assert crd.num_negatives(4096, 60000) == 4096 and crd.num_negatives(4096, 64) == 63


def test_bank_update_moves_the_batch_rows_by_momentum_and_renormalises():
  new = np.asarray(crd.update_bank(jnp.asarray(BANK), jnp.array([1, 4]),
                                   jnp.array([[1.0, 0.0], [0.0, 1.0]]), 0.5))
  # Row 1: 0.5 [0, 1] + 0.5 [1, 0] = [0.5, 0.5] -> [1, 1] / sqrt(2);
  # row 4: 0.5 [0.6, 0.8] + 0.5 [0, 1] = [0.3, 0.9] -> [1, 3] / sqrt(10).
  np.testing.assert_allclose(new[1], np.array([1, 1]) / math.sqrt(2), rtol=1e-6)
  np.testing.assert_allclose(new[4], np.array([1, 3]) / math.sqrt(10), rtol=1e-6)
  np.testing.assert_array_equal(new[[0, 2, 3]], BANK[[0, 2, 3]])


def test_a_step_trains_student_and_heads_and_writes_the_banks_at_the_batch_rows(tmp_path):
  d = make_distiller(tiny_cfg(method='crd'), tmp_path, num_anchors=1)
  (phase,) = d.phases[0]
  assert set(phase.states) == {'crd'} and phase.partner.state is None
  before, after, metrics = run_phase_steps(d, phase, n=2)  # step 1 is at warmup's rate 0.
  assert set(after) == {'g', 'rng', 'crd'}
  g_params = changed(before['g'].params, after['g'].params)
  assert all(v == p.startswith('student/') for p, v in g_params.items()), g_params
  heads = changed(before['crd'].params, after['crd'].params)
  assert heads and all(heads.values()), heads  # both embedding heads learn from the loss.
  batches = synthetic_batches(0, with_index=True)
  rows = np.union1d(next(batches)['index'], next(batches)['index'])
  for bank in ('memory_s', 'memory_t'):
    moved = np.any(before['crd'].buffers[bank] != after['crd'].buffers[bank], axis=1)
    np.testing.assert_array_equal(np.flatnonzero(moved), rows)
    np.testing.assert_allclose(np.linalg.norm(after['crd'].buffers[bank][rows], axis=1), 1,
                               rtol=1e-5)
  z = after['crd'].buffers['z']
  assert np.all(before['crd'].buffers['z'] == -1) and np.all(z > 0)  # set by the first batch.
  assert math.isfinite(float(metrics['loss']))


@pytest.mark.slow
def test_an_interrupted_crd_run_resumes_mid_phase_to_the_same_state(tmp_path, monkeypatch):
  """Student, heads, banks, Z and the negatives' key all come back from the checkpoint: the
  resumed run ends bit for bit where the uninterrupted one does."""
  cfg = tiny_cfg(method='crd', checkpoint_every_steps=1, **{'student.epochs': 2})
  reference = make_distiller(cfg, tmp_path / 'ref').run()
  interrupt_at(cfg, tmp_path / 'run', 6, monkeypatch)  # 8 steps: after checkpoint 5.
  ckpt = checkpoints.Checkpoints(str(tmp_path / 'run' / 'checkpoints' / 'student'))
  assert ckpt.meta(ckpt.latest_step())['position'] == [0, 0, 5]
  assert 'crd' in ckpt.meta(ckpt.latest_step())['states']
  resumed = make_distiller(cfg, tmp_path / 'run').run()

  def final(run):
    d = make_distiller(cfg, tmp_path / run)
    step = d.ckpt.latest_step()
    fresh = d.build_states(0, 0, d.init_carry())
    states = d._restore(step, d.ckpt.meta(step), fresh)  # pylint: disable=protected-access
    student = checkpoints.Checkpoints(str(tmp_path / run / 'checkpoints' / 'student_final'))
    return host(states['crd']), host(student.restore(0, reference_target(cfg))[0])
  (ref_crd, ref_student), (got_crd, got_student) = final('ref'), final('run')
  np.testing.assert_equal(got_student, ref_student)
  np.testing.assert_equal(got_crd.params, ref_crd.params)
  np.testing.assert_equal(got_crd.buffers, ref_crd.buffers)
  assert resumed['test_accuracy'] == reference['test_accuracy']
  # Both heads' parameters: from the cnn student's 128 channels and resnet8's 64, to 128.
  assert reference['stages'][0]['phases'][0]['embed_params'] == (128 + 1) * 128 + (64 + 1) * 128


def test_crd_fields_are_checked():
  for field, value in (('crd.nce_t', 0.0), ('crd.nce_m', 1.0), ('crd.nce_k', 0),
                       ('crd.feat_dim', 0), ('crd.beta', -1.0)):
    cfg = config.defaults()
    cfg.method = 'crd'
    cfg.crd[field.split('.')[1]] = value
    with pytest.raises(config.ConfigError, match=field.replace('.', r'\.')):
      config.validate(cfg)


@pytest.mark.slow
def test_crd_trains_through_main_on_real_data(teacher_run, tmp_path, capsys):
  """`python -m msmgan_jax.main` (in process) from the shared teacher's final anchor: the
  real pipeline's batches carry each example's index, and a usable student comes out."""
  anchor = teacher_run[2]['teacher']['anchors'][-1]['path']
  config_file = teacher_config_file(tmp_path, teacher_run[0].dataset.data_dir)
  code = main.run(['main', '--config', f'{config_file}:msmgan_jax,{anchor}',
                   '--config.method=crd', '--workdir', str(tmp_path / 'run')])
  assert code == 0, capsys.readouterr().err
  student = json.loads((tmp_path / 'run' / 'summary.json').read_text())['student']
  (phase,) = student['stages'][0]['phases']
  assert phase['name'] == 'crd' and phase['steps'] == 28  # 1,800 images / 64 a batch.
  assert phase['embed_params'] == (128 + 1) * 128 + (64 + 1) * 128  # both heads.
  assert 0.3 < student['test_accuracy'] <= 1  # one epoch of the small slice: off chance.


@pytest.mark.slow
def test_crd_runs_through_the_comparison(repo_root, teacher_run, tmp_path, capsys):
  """crd in a comparison of its own: its tuning and final runs (two seeds in one program,
  each with its own banks), its row in the table, and a rerun that skips them."""
  t_cfg, t_dir, _ = teacher_run
  cc = load_config(repo_root, 'compare_lowdata')
  cc.teacher, cc.teacher_workdir = t_cfg, t_dir
  cc.workdir, cc.out = str(tmp_path / 'runs'), str(tmp_path / 'results')
  shrink(cc.base, t_cfg.dataset.data_dir)
  cc.base.anchors.num, cc.base.student.model = t_cfg.anchors.num, 'cnn'
  cc.validation_split = 'train[97%:]'
  cc.methods, cc.ablations, cc.seeds = ('crd',), (), 2
  cc.tuning['crd'] = ('',)
  doc = compare.run_all(cc, cc.workdir)
  (run,) = doc['runs']
  assert run['name'] == 'crd' and run['seeds'] == [0, 1] and len(run['accuracies']) == 2
  tests = [json.loads(l) for l in open(f'{run["workdir"]}/metrics.jsonl')
           if '"split": "test"' in l]
  last = {t['seed']: t['loss'] for t in tests}
  assert len(last) == 2 and last[0] != last[1]  # two seeds, two students.
  assert 0.3 < run['mean'] <= 1
  assert '| crd | crd | defaults |' in (tmp_path / 'results' / 'compare.md').read_text()
  capsys.readouterr()
  compare.run_all(cc, cc.workdir)
  assert capsys.readouterr().out.count('finished, skipped') == 2  # its tuning and final runs.
