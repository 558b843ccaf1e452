"""MS-MGANs as one package (`msmgan_jax.methods.msmgan`): its GAN losses by hand, its
discriminator monitor, its head loss reading its own group (not kd's), and the monitor
hook the trainer takes from the registry."""
import math

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from msmgan_jax import config
from msmgan_jax.core.phase import ANCHOR, Monitor, whole_student
from msmgan_jax.methods import ce, msmgan, registry
from msmgan_jax.methods.msmgan import losses
from support import make_distiller, run_phase_steps, tiny_cfg


@pytest.mark.parametrize('kind,d_loss,g_loss', [
    # real score 2, fake score -1.
    ('bce', math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-1)), math.log(1 + math.exp(1))),
    ('hinge', 0.0 + 0.0, 1.0),
    ('lsgan', 0.5 * ((2 - 1) ** 2 + (-1) ** 2), 0.5 * (-1 - 1) ** 2),
])
def test_gan_losses_match_hand_values(kind, d_loss, g_loss):
  real, fake = jnp.array([2.0]), jnp.array([-1.0])
  assert float(losses.gan_d(kind, real, fake)) == pytest.approx(d_loss, abs=1e-6)
  assert float(losses.gan_g(kind, fake)) == pytest.approx(g_loss, abs=1e-6)


def test_hinge_penalises_inside_the_margin():
  assert float(losses.gan_d('hinge', jnp.array([0.5]), jnp.array([0.5]))) == pytest.approx(2.0)
  with pytest.raises(ValueError, match='unknown GAN loss'):
    losses.gan_d('wgan', jnp.zeros(1), jnp.zeros(1))


def _watch_cfg(limit):
  cfg = config.defaults()
  cfg.disc.stuck_logs, cfg.log_every_steps = limit, 50
  return cfg


def test_stuck_discriminator_warns_once_after_the_limit(capsys):
  watch = msmgan.DiscWatch(_watch_cfg(3), 'stage 2 phase block_3')
  for fake in (0.0, 0.01, 0.5, 0.0, 0.0):  # the 0.5 resets the count.
    watch.update({'d_acc_fake_b3': fake, 'd_acc_real_b3': 0.7, 'g_loss': 1.0})
  assert watch.warnings == []
  watch.update({'d_acc_fake_b3': 0.0, 'd_acc_real_b3': 1.0})
  assert len(watch.warnings) == 1 and 'd_acc_fake_b3 has been 0 for 3 logs (150 steps)' in (
      watch.warnings[0])
  for _ in range(3):
    watch.update({'d_acc_fake_b3': 0.0, 'd_acc_real_b3': 1.0})
  assert [w.split(': ')[1].split()[0] for w in watch.warnings] == ['d_acc_fake_b3',
                                                                   'd_acc_real_b3']
  assert 'warning: stage 2 phase block_3: d_acc_fake_b3' in capsys.readouterr().err
  resumed = msmgan.DiscWatch(_watch_cfg(3), 'stage 2 phase block_3', watch.state())
  resumed.update({'d_acc_fake_b3': 0.0, 'd_acc_real_b3': 1.0})
  assert resumed.warnings == watch.warnings  # a resumed phase does not warn twice.
  off = msmgan.DiscWatch(_watch_cfg(0), 'x')
  for _ in range(10):
    off.update({'d_acc_fake_b1': 0.0})
  assert off.warnings == []


def _head_losses(tmp_path, name, **fields):
  """The first head step's student loss and mutual copy's loss under `fields`."""
  d = make_distiller(tiny_cfg(**{'stages.block_stages': 0, **fields}), tmp_path / name)
  _, _, metrics = run_phase_steps(d, d.phases[0][-1], n=1)
  return float(metrics['loss']), float(metrics['teacher_copy_loss'])


def test_the_head_loss_reads_msmgans_own_group_not_kds(tmp_path):
  """Tuning kd (kd.tau, kd.beta) leaves msmgan's head phase and mutual copy as they were;
  msmgan.beta weighs the student's KL term, msmgan.tau is the temperature of both."""
  base = _head_losses(tmp_path, 'base')
  assert _head_losses(tmp_path, 'kd', **{'kd.tau': 1.0, 'kd.beta': 0.1}) == base
  beta = _head_losses(tmp_path, 'beta', **{'msmgan.beta': 0.1})
  assert beta[0] != pytest.approx(base[0], rel=1e-4) and beta[1] == base[1]
  tau = _head_losses(tmp_path, 'tau', **{'msmgan.tau': 1.0})
  assert tau[0] != pytest.approx(base[0], rel=1e-4) and tau[1] != pytest.approx(base[1], rel=1e-4)
  defaults = config.defaults()
  assert (defaults.msmgan.tau, defaults.msmgan.beta) == (defaults.kd.tau, defaults.kd.beta)


class _CountLogs(Monitor):
  """A monitor that warns once it has seen two logged steps."""
  key = 'count_logs'

  def __init__(self, cfg, where, state=None):
    super().__init__(cfg, where, state)
    self.seen = (state or {}).get('seen', 0)

  def update(self, metrics):
    self.seen += 1
    if self.seen == 2:
      self.warnings.append(f'{self.where}: two logs')

  def state(self):
    return {'seen': self.seen}


@pytest.mark.slow
def test_a_methods_monitor_sees_its_logs_and_its_warnings_reach_the_summary(tmp_path,
                                                                             monkeypatch):
  """The trainer builds the monitor a method registers for each phase; a method without
  one (kd) has no monitor state in its checkpoints."""
  monkeypatch.setattr(registry, 'METHODS', dict(registry.METHODS))
  registry.register_method('watched', lambda cfg, k: [whole_student('ce', ce.ce_loss)],
                           uses_teacher=False, monitor=_CountLogs)
  cfg = tiny_cfg(method='watched', **{'student.epochs': 2})
  d = make_distiller(cfg, tmp_path / 'watched')
  phase = d.run()['stages'][0]['phases'][0]
  assert phase['warnings'] == ['stage 1 phase ce: two logs']
  meta = d.runner.meta((0, 0, 1), [], 0.0, 0.0, {'g': None, 'rng': None},
                       watch=_CountLogs(cfg, 'x', {'seen': 3}))  # a mid-phase checkpoint's.
  assert meta['count_logs'] == {'seen': 3} and meta['states'] == ['g', 'rng']
  kd = make_distiller(tiny_cfg(method='kd', **{'student.epochs': 1}), tmp_path / 'kd')
  kd.run()
  meta = kd.ckpt.meta(kd.ckpt.latest_step())
  assert meta['states'] == ['g', 'rng'] and 'disc_watch' not in meta
  assert registry.METHODS['msmgan'].monitor is msmgan.DiscWatch


def test_msmgans_groups_come_from_the_method_not_the_schema_module():
  """gan, disc, stages, msmgan and mutual are registered by methods/msmgan; the schema
  module only merges them (a config without msmgan registered would have none)."""
  for group in ('stages', 'msmgan', 'gan', 'disc', 'mutual'):
    assert registry.GROUPS[group].defaults.__module__ == 'msmgan_jax.methods.msmgan.config'
  assert set(config.defaults().stages) == {'greedy', 'phase_shares', 'block_stages',
                                           'finetune_all', 'head_feat', 'teacher_forced',
                                           'forced_joint'}
  assert isinstance(config.defaults().anchors, ml_collections.ConfigDict)
  np.testing.assert_equal(whole_student('kd', ce.ce_loss, ANCHOR).signature,
                          whole_student('kd', ce.ce_loss, ANCHOR).signature)
