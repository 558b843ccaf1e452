"""The logit losses v3 added: logit standardisation (kd_ls, dkd_ls, msmgan.logit_std) and
msmgan's DKD head loss, each against the formula worked in numpy."""
import types

import jax.numpy as jnp
import numpy as np
import pytest

from msmgan_jax import config as config_lib
from msmgan_jax.core import losses
from msmgan_jax.methods import dkd, kd
from msmgan_jax.methods.msmgan import head

RNG = np.random.default_rng(0)
S = RNG.normal(size=(6, 10)).astype(np.float32) * 3
T = RNG.normal(size=(6, 10)).astype(np.float32) * 5 + 1
Y = np.array([0, 3, 9, 2, 2, 7], np.int32)


def _log_softmax(z):
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _kl(t, s, tau):  # tau^2 KL(softmax(t/tau) || softmax(s/tau)), batch mean.
  lt, ls = _log_softmax(t / tau), _log_softmax(s / tau)
  return tau ** 2 * np.mean(np.sum(np.exp(lt) * (lt - ls), -1))


def _ce(s, y):
  return -np.mean(_log_softmax(s)[np.arange(len(y)), y])


def _z(x):
  return (x - x.mean(-1, keepdims=True)) / (x.std(-1, keepdims=True) + 1e-7)


def _dkd(s, t, y, tau, alpha, beta):  # Zhao et al.'s eq. 7 written out with probabilities.
  ps, pt = np.exp(_log_softmax(s / tau)), np.exp(_log_softmax(t / tau))
  mask = np.eye(s.shape[1], dtype=bool)[y]
  bs = np.stack([ps[mask], 1 - ps[mask]], -1)
  bt = np.stack([pt[mask], 1 - pt[mask]], -1)
  tckd = np.mean(np.sum(bt * np.log(bt / bs), -1))
  qs = np.where(mask, 0, ps) / (1 - ps[mask])[:, None]
  qt = np.where(mask, 0, pt) / (1 - pt[mask])[:, None]
  with np.errstate(divide='ignore', invalid='ignore'):
    nckd = np.mean(np.sum(np.where(mask, 0, qt * np.log(qt / qs)), -1))
  return tau ** 2 * (alpha * tckd + beta * nckd)


def _view(cfg, epoch_steps=100):
  return types.SimpleNamespace(s_logits=jnp.asarray(S), t_logits=jnp.asarray(T),
                               labels=jnp.asarray(Y), cfg=cfg, epoch=epoch_steps / 100)


def _cfg(**fields):
  cfg = config_lib.defaults()
  for k, v in fields.items():
    group, name = k.split('.')
    cfg[group][name] = v
  return cfg


def test_standardise_rows_have_mean_zero_std_one():
  z = np.asarray(losses.standardise(jnp.asarray(T)))
  np.testing.assert_allclose(z.mean(-1), 0, atol=1e-6)
  np.testing.assert_allclose(z.std(-1), 1, atol=1e-5)
  np.testing.assert_allclose(z, _z(T), atol=1e-5)


def test_standardised_kd_ignores_the_teachers_scale_and_shift():
  """Logit standardisation's point: a teacher whose logits are 3x and shifted teaches the
  same; plain KD does not."""
  cfg = _cfg(**{'kd.logit_std': True, 'kd.tau': 2.0})
  a = kd.kd_loss(_view(cfg))
  b = kd.kd_loss(types.SimpleNamespace(**{**vars(_view(cfg)), 't_logits': jnp.asarray(3 * T + 7)}))
  np.testing.assert_allclose(a, b, rtol=1e-5)
  plain = _cfg(**{'kd.tau': 2.0})
  assert abs(float(kd.kd_loss(_view(plain))) - float(kd.kd_loss(types.SimpleNamespace(
      **{**vars(_view(plain)), 't_logits': jnp.asarray(3 * T + 7)})))) > 0.1


def test_kd_ls_against_numpy():
  cfg = _cfg(**{'kd.logit_std': True, 'kd.tau': 2.0, 'kd.beta': 0.9})
  want = 0.1 * _ce(S, Y) + 0.9 * _kl(_z(T), _z(S), 2.0)
  np.testing.assert_allclose(kd.kd_loss(_view(cfg)), want, rtol=1e-5)


def test_dkd_ls_against_numpy():
  cfg = _cfg(**{'dkd.logit_std': True, 'dkd.warmup_epochs': 0.0})
  want = _ce(S, Y) + _dkd(_z(S), _z(T), Y, 4.0, 1.0, 8.0)
  np.testing.assert_allclose(dkd.dkd_loss(_view(cfg)), want, rtol=1e-4)


def test_msmgan_head_kd_is_todays_loss():
  cfg = _cfg()
  np.testing.assert_allclose(head.head_loss(_view(cfg)), _ce(S, Y) + 0.9 * _kl(T, S, 4.0),
                             rtol=1e-5)


@pytest.mark.parametrize('std', [False, True])
def test_msmgan_head_dkd_against_numpy(std):
  cfg = _cfg(**{'msmgan.loss': 'dkd', 'msmgan.logit_std': std, 'msmgan.dkd_beta': 2.0})
  s, t = (_z(S), _z(T)) if std else (S, T)
  want = _ce(S, Y) + 0.9 * 0.5 * _dkd(s, t, Y, 4.0, 1.0, 2.0)  # epoch 0.5 of a 1.0 warmup.
  cfg.msmgan.dkd_warmup_epochs = 1.0
  np.testing.assert_allclose(head.head_loss(_view(cfg, epoch_steps=50)), want, rtol=1e-4)


def test_msmgan_head_ls_against_numpy():
  cfg = _cfg(**{'msmgan.logit_std': True, 'msmgan.tau': 2.0})
  np.testing.assert_allclose(head.head_loss(_view(cfg)), _ce(S, Y) + 0.9 * _kl(_z(T), _z(S), 2.0),
                             rtol=1e-5)


def test_an_unknown_head_loss_is_refused_by_name():
  cfg = _cfg(**{'msmgan.loss': 'ce'})
  with pytest.raises(config_lib.ConfigError, match=r'msmgan\.loss'):
    config_lib.validate(cfg)


@pytest.mark.parametrize('std_field', [False, True])
def test_kd_ls_and_dkd_ls_methods_standardise_whatever_the_flag_says(std_field):
  """The baselines kd_ls and dkd_ls are kd and dkd with standardisation always on: their
  losses equal the numpy formulas on Z-scored logits with `*.logit_std` False or True."""
  cfg = _cfg(**{'kd.logit_std': std_field, 'kd.tau': 2.0, 'kd.beta': 0.9,
                'dkd.logit_std': std_field, 'dkd.warmup_epochs': 0.0})
  np.testing.assert_allclose(kd.kd_ls_loss(_view(cfg)),
                             0.1 * _ce(S, Y) + 0.9 * _kl(_z(T), _z(S), 2.0), rtol=1e-5)
  np.testing.assert_allclose(dkd.dkd_ls_loss(_view(cfg)),
                             _ce(S, Y) + _dkd(_z(S), _z(T), Y, 4.0, 1.0, 8.0), rtol=1e-4)
  from msmgan_jax.methods import registry  # pylint: disable=g-import-not-at-top
  for name, loss in (('kd_ls', kd.kd_ls_loss), ('dkd_ls', dkd.dkd_ls_loss)):
    cfg = config_lib.defaults()
    cfg.method = name
    (phase,) = registry.stage_phases(cfg, 3)
    assert phase.loss is loss and phase.name == name
