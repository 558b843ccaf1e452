"""Each loss against a value worked out by hand."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from msmgan_jax.core import losses


from msmgan_jax.core import models


def test_kd_matches_hand_value_with_tau_squared():
  s = jnp.array([[0.0, 0.0]])
  t = jnp.array([[math.log(3.0), 0.0]])
  # tau = 1: p_t = (3/4, 1/4), p_s = (1/2, 1/2): KL = 3/4 ln(3/2) + 1/4 ln(1/2).
  assert float(losses.kd(s, t, 1.0)) == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5),
                                                     abs=1e-6)
  # tau = 2: p_t = (sqrt3, 1) / (sqrt3 + 1); KL against uniform, times tau^2 = 4.
  p = math.sqrt(3) / (math.sqrt(3) + 1)
  kl = p * math.log(2 * p) + (1 - p) * math.log(2 * (1 - p))
  assert float(losses.kd(s, t, 2.0)) == pytest.approx(4 * kl, abs=1e-6)
  assert float(losses.kd(t, t, 4.0)) == pytest.approx(0.0, abs=1e-6)


def test_feature_mse_through_connector_with_pooling():
  conn = models.Connector(1)
  x = jnp.arange(16.0).reshape(1, 4, 4, 1)
  variables = conn.init(jax.random.key(0), x)
  variables = {'params': {'Conv_0': {'kernel': jnp.full((1, 1, 1, 1), 2.0)},
                          'BatchNorm_0': {'scale': jnp.ones(1), 'bias': jnp.full(1, 1.0)}},
               'batch_stats': {'BatchNorm_0': {'mean': jnp.zeros(1), 'var': jnp.ones(1)}}}
  projected = conn.apply(variables, x, train=False)  # 2x / sqrt(1 + eps) + 1
  np.testing.assert_allclose(projected[0, :, :, 0], 2 * np.arange(16.0).reshape(4, 4) /
                             math.sqrt(1 + 1e-5) + 1, rtol=1e-6)
  # The 4x4 student map is average-pooled to the 2x2 teacher map before the MSE.
  teacher = jnp.zeros((1, 2, 2, 1))
  pooled = np.array([[2.5, 4.5], [10.5, 12.5]]) * 2 / math.sqrt(1 + 1e-5) + 1
  assert float(losses.feature_mse(projected, teacher)) == pytest.approx(np.mean(pooled ** 2),
                                                                       rel=1e-6)
  assert float(losses.feature_mse(jnp.ones((2, 3, 3, 4)), jnp.full((2, 3, 3, 4), 3.0))) == 4.0


def test_dml_both_ways_values_and_stop_gradient():
  s = jnp.array([[0.0, 0.0]])
  t = jnp.array([[math.log(3.0), 0.0]])
  y = jnp.array([0])
  kl_ts = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)       # KL(T || S)
  kl_st = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)  # KL(S || T)
  # Student side: (1 - beta) CE(S) + beta KL(T || S), beta = 0.9, tau = 1.
  assert float(losses.dml(s, t, y, 0.9, 1.0, 0.1)) == pytest.approx(
      0.1 * math.log(2) + 0.9 * kl_ts, abs=1e-6)
  # Teacher side: CE(T) + beta_t KL(S || T), beta_t = 0.5.
  assert float(losses.dml(t, s, y, 0.5, 1.0)) == pytest.approx(
      -math.log(0.75) + 0.5 * kl_st, abs=1e-6)
  # Each side treats the peer as a constant.
  g_peer = jax.grad(lambda peer: losses.dml(s, peer, y, 0.9, 1.0))(t)
  np.testing.assert_array_equal(g_peer, np.zeros_like(t))


def test_attention_transfer_matches_hand_value():
  # Student: one example, 1x2 positions, channels (1, 1) and (2, 0): channel means of f^2
  # are 1 and 2, normalised (1, 2) / sqrt(5). Teacher: the attention (1, 0).
  fs = jnp.array([[[[1.0, 1.0], [2.0, 0.0]]]])
  ft = jnp.array([[[[3.0, 0.0], [0.0, 0.0]]]])
  np.testing.assert_allclose(losses.attention_map(fs), [[1 / math.sqrt(5), 2 / math.sqrt(5)]],
                             rtol=1e-6)
  want = ((1 / math.sqrt(5) - 1) ** 2 + (2 / math.sqrt(5)) ** 2) / 2
  assert float(losses.attention_transfer(fs, ft)) == pytest.approx(want, rel=1e-6)
  # Attention ignores the scale of the map and its channel count.
  assert float(losses.attention_transfer(5 * fs, jnp.concatenate([fs, fs], -1))) == \
      pytest.approx(0.0, abs=1e-7)
