"""srrl: its loss against a hand-worked value of Yang et al.'s formula."""
import math

import jax.numpy as jnp
import pytest

from msmgan_jax import config
from msmgan_jax.core.phase import StepView
from msmgan_jax.methods import srrl


def test_srrl_loss_by_hand():
  """CE + alpha MSE(C(f_S), f_T) + beta MSE(head_T(C(f_S)), z_T), with an identity connector
  and a head whose first logit is the mean of the map: every term computed by hand."""
  cfg = config.defaults()
  cfg.srrl.alpha, cfg.srrl.beta = 0.5, 2.0
  f_s = jnp.ones((1, 2, 2, 3)) * jnp.array([1.0, 2.0, 3.0])
  f_t = jnp.zeros((1, 2, 2, 3))
  z_t = jnp.array([[1.0, 0.0]])
  s_logits, y = jnp.array([[0.0, 0.0]]), jnp.array([0])
  head = lambda f: jnp.stack([jnp.mean(f, (1, 2, 3)), jnp.zeros(f.shape[0])], -1)  # [2, 0].
  view = StepView(s_logits, [f_s], z_t, [None, None, f_t], y, cfg, 2, lambda i, f: f, t_head=head)
  fm = (1 + 4 + 9) / 3
  sr = ((2 - 1) ** 2 + 0 ** 2) / 2
  assert float(srrl.srrl_loss(view)) == pytest.approx(math.log(2) + 0.5 * fm + 2.0 * sr, rel=1e-6)


def test_srrl_fields_are_checked():
  for field, value in (('srrl.alpha', float('nan')), ('srrl.beta', -1.0)):
    cfg = config.defaults()
    group, name = field.split('.')
    cfg[group][name] = value
    with pytest.raises(config.ConfigError, match=field.replace('.', r'\.')):
      config.validate(cfg)
