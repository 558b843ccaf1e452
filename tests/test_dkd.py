"""dkd: its loss against hand-worked values of Zhao et al.'s formulas, and its fields."""
import math

import jax.numpy as jnp
import numpy as np
import pytest

from msmgan_jax import config
from msmgan_jax.core.phase import StepView
from msmgan_jax.methods import dkd


def _softmax(z):
  e = [math.exp(v) for v in z]
  return [v / sum(e) for v in e]


def test_tckd_and_nckd_by_hand():
  """Zhao et al. eq. 7 on one example, 3 classes, label 0, tau 1: b = [p_0, 1 - p_0] and p^
  the softmax over classes 1 and 2."""
  s, t = [1.0, 0.0, 0.0], [2.0, 0.0, 1.0]
  ps, pt = _softmax(s), _softmax(t)
  bs, bt = [ps[0], 1 - ps[0]], [pt[0], 1 - pt[0]]
  tckd = sum(b * math.log(b / a) for a, b in zip(bs, bt))
  hs, ht = _softmax(s[1:]), _softmax(t[1:])
  nckd = sum(b * math.log(b / a) for a, b in zip(hs, ht))
  got = dkd.tckd_nckd(jnp.array([s]), jnp.array([t]), jnp.array([0]), 1.0)
  assert float(got[0]) == pytest.approx(tckd, rel=1e-4)  # float32, a small KL.
  assert float(got[1]) == pytest.approx(nckd, rel=1e-4)
  # KL(p_T || p_S) = TCKD + (1 - p_T,0) NCKD (their eq. 5): the decomposition holds.
  kl = sum(b * math.log(b / a) for a, b in zip(ps, pt))
  assert tckd + (1 - pt[0]) * nckd == pytest.approx(kl, rel=1e-6)


def test_dkd_loss_weights_and_warmup():
  cfg = config.defaults()
  cfg.dkd.alpha, cfg.dkd.beta, cfg.dkd.tau, cfg.dkd.warmup_epochs = 1.0, 8.0, 2.0, 2.0
  s, t, y = jnp.array([[1.0, 0.5, -1.0]]), jnp.array([[0.2, 2.0, 0.0]]), jnp.array([1])
  tckd, nckd = (float(v) for v in dkd.tckd_nckd(s, t, y, 2.0))
  ce = -math.log(_softmax([1.0, 0.5, -1.0])[1])
  for step, weight in ((0, 0.0), (10, 0.5), (100, 1.0)):
    view = StepView(s, [], t, None, y, cfg, 0, None, step=jnp.int32(step),
                    images_per_step_epoch=0.1)  # epoch = step / 10.
    want = ce + weight * 4.0 * (1.0 * tckd + 8.0 * nckd)
    assert float(dkd.dkd_loss(view)) == pytest.approx(want, rel=1e-5)


def test_dkd_fields_are_checked_and_the_loss_stays_finite():
  for field, value in (('dkd.tau', 0.0), ('dkd.beta', -1.0), ('dkd.warmup_epochs', float('nan'))):
    cfg = config.defaults()
    group, name = field.split('.')
    cfg[group][name] = value
    with pytest.raises(config.ConfigError, match=field.replace('.', r'\.')):
      config.validate(cfg)
  assert np.isfinite(dkd.tckd_nckd(jnp.array([[50.0, 0.0, 0.0]]), jnp.array([[0.0, 50.0, 0.0]]),
                                   jnp.array([0]), 1.0)).all()
