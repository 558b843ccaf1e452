"""CTKD (`methods/ctkd.py`) and MS-MGANs v3's head adversary (`methods/msmgan/adversarial.py`):
the gradient reversal, the curriculum, and each trained for a few steps."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from msmgan_jax.core import losses
from msmgan_jax.methods import ctkd
from support import make_distiller, run_phase_steps, tiny_cfg


def test_reverse_gradient_is_the_identity_forward_and_flips_the_gradient_back():
  f = lambda x, s: jnp.sum(jnp.sin(ctkd.reverse_gradient(x, s)))
  x = jnp.array([0.3, -1.2])
  assert np.allclose(ctkd.reverse_gradient(x, 0.7), x)
  np.testing.assert_allclose(jax.grad(f)(x, 0.7), -0.7 * jnp.cos(x), rtol=1e-6)
  np.testing.assert_allclose(jax.grad(f)(x, 0.0), 0.0)


def test_the_curriculum_rises_on_a_cosine_then_stays():
  c = lambda e: float(ctkd.curriculum(jnp.asarray(e), 0.0, 1.0, 2.0))
  assert c(0.0) == pytest.approx(0.0) and c(1.0) == pytest.approx(0.5)
  assert c(2.0) == pytest.approx(1.0) and c(5.0) == pytest.approx(1.0)
  assert c(0.5) == pytest.approx(0.5 * (1 - math.cos(math.pi / 4)))
  assert float(ctkd.curriculum(jnp.asarray(0.0), 0.0, 1.0, 0.0)) == 1.0


def test_the_temperature_starts_at_their_value_and_climbs_the_kd_loss(tmp_path):
  """w = 1 gives tau = 1 + 20 sigmoid(1); with lambda 1 from the start, w moves in the first
  step (its direction: `test_the_reversed_step_goes_up_the_loss_it_reverses`)."""
  cfg = tiny_cfg(method='ctkd', **{'ctkd.lambda_min': 1.0, 'ctkd.lambda_max': 1.0})
  d = make_distiller(cfg, tmp_path, num_anchors=1)
  phase = d.phases[0][0]
  before, after, metrics = run_phase_steps(d, phase, n=1)
  w0 = float(before['temperature'].params['w'])
  assert w0 == 1.0
  assert 1 + 20 / (1 + math.exp(-1)) == pytest.approx(float(ctkd.temperature(
      jnp.asarray(w0), 1.0, 20.0, 1.0)))
  w1 = float(after['temperature'].params['w'])
  assert w1 != w0 and math.isfinite(float(metrics['loss']))


def test_the_reversed_step_goes_up_the_loss_it_reverses():
  """The update w - lr * grad (grad reversed) equals w + lr * d loss / d w: checked on the KD
  term at fixed logits."""
  s = jnp.array([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
  t = jnp.array([[3.0, -1.0, 0.0], [0.0, 2.0, 1.0]])
  loss = lambda w, scale: losses.kd(s, t, ctkd.temperature(w, 1.0, 20.0, scale))
  plain = jax.grad(lambda w: losses.kd(s, t, 1.0 + 20.0 * jax.nn.sigmoid(w)))(1.0)
  np.testing.assert_allclose(jax.grad(loss)(1.0, 0.5), -0.5 * plain, rtol=1e-5)


@pytest.mark.parametrize('fields,parts', [
    ({'msmgan.ctkd': True}, {'w'}),
    ({'msmgan.head_disc': 0.1}, {'disc'}),
    ({'msmgan.ctkd': True, 'msmgan.head_disc': 0.1, 'msmgan.loss': 'dkd'}, {'w', 'disc'}),
])
def test_msmgans_head_adversary_trains_its_parts(fields, parts, tmp_path):
  cfg = tiny_cfg(method='msmgan', **{'mutual.enabled': False}, **fields)
  d = make_distiller(cfg, tmp_path)
  head = d.phases[0][-1]
  assert head.name == 'head' and set(head.states) == {'head_adv'}
  before, after, metrics = run_phase_steps(d, head, n=2)
  assert set(before['head_adv'].params) == parts
  for part in parts:
    moved = jax.tree.leaves(jax.tree.map(lambda a, b: not np.array_equal(a, b),
                                         before['head_adv'].params[part],
                                         after['head_adv'].params[part]))
    assert any(moved), part
  assert math.isfinite(float(metrics['loss']))


def test_a_head_disc_without_finetune_all_is_refused():
  from msmgan_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  with pytest.raises(config_lib.ConfigError, match=r'msmgan\.head_disc'):
    tiny_cfg(method='msmgan', **{'msmgan.head_disc': 0.1, 'stages.finetune_all': False})
