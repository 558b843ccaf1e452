"""`dkd`: decoupled knowledge distillation (Zhao et al., CVPR 2022).

KD's KL splits into a target-class term and a non-target-class term, weighted apart:
  TCKD = KL(b_T || b_S), b = [p_y, 1 - p_y] the binary target / non-target probabilities;
  NCKD = KL(p^_T || p^_S), p^ the softmax over the non-target classes only;
  DKD  = tau^2 (dkd.alpha TCKD + dkd.beta NCKD)  (their eq. 7, probabilities at temperature tau);
the student learns CE + w DKD on the whole student from the final teacher's logits, w rising
linearly from 0 to 1 over the first `dkd.warmup_epochs` (their 20 of 240 epochs; scaled to
our 15-epoch budgets: 1.25). With `dkd.logit_std` both logits are Z-scored per row
before the temperature (logit standardisation, Sun et al. CVPR 2024). `dkd_ls`: a method of
its own, dkd with that standardisation always on (dkd's fields otherwise), tuned apart.
"""
import jax
import jax.numpy as jnp
import ml_collections

from msmgan_jax.core import losses
from msmgan_jax.core.phase import ANCHOR, whole_student
from msmgan_jax.methods.registry import (check_finite, register_group, register_history,
                                         register_method, require)


def defaults(c: ml_collections.ConfigDict) -> None:
  c.dkd = dk = ml_collections.ConfigDict()
  dk.alpha = 1.0                  # dkd: weight of TCKD, the target-class term (Zhao et al.'s 1).
  dk.beta = 8.0                   # dkd: weight of NCKD, the non-target term (their CIFAR 8).
  dk.tau = 4.0                    # dkd: temperature (their 4).
  dk.warmup_epochs = 1.25         # dkd: DKD's weight rises from 0 to 1 over these epochs.
  dk.logit_std = False            # Z-score both logits per row before tau (dkd_ls, Sun et al. 2024).


def check(cfg) -> None:
  check_finite(cfg, ('dkd.alpha', 'dkd.beta', 'dkd.tau', 'dkd.warmup_epochs'),
               positive=('dkd.tau',))
  require(isinstance(cfg.dkd.logit_std, bool), 'dkd.logit_std',
          f'must be True or False, got {cfg.dkd.logit_std!r}')


def tckd_nckd(student_logits, teacher_logits, labels, tau: float):
  """(TCKD, NCKD), each a batch mean of KL divergences (nats, without tau^2), from logits
  (B, C) and integer labels (B,). Computed in log space (no log of 1 - p)."""
  s, t = student_logits / tau, teacher_logits / tau
  target = jax.nn.one_hot(labels, s.shape[-1], dtype=bool)

  def binary(z):  # log [p_y, 1 - p_y] from the logits.
    all_ = jax.nn.logsumexp(z, axis=-1)
    y = jnp.sum(jnp.where(target, z, 0.0), axis=-1)
    rest = jax.nn.logsumexp(jnp.where(target, -jnp.inf, z), axis=-1)
    return jnp.stack([y - all_, rest - all_], axis=-1)

  log_bs, log_bt = binary(s), binary(t)
  tckd = jnp.sum(jnp.exp(log_bt) * (log_bt - log_bs), axis=-1)
  log_ps = jax.nn.log_softmax(jnp.where(target, -1e9, s), axis=-1)
  log_pt = jax.nn.log_softmax(jnp.where(target, -1e9, t), axis=-1)
  nckd = jnp.sum(jnp.where(target, 0.0, jnp.exp(log_pt) * (log_pt - log_ps)), axis=-1)
  return jnp.mean(tckd), jnp.mean(nckd)


def decoupled_kd(view, standardise: bool):
  """CE + min(epoch / dkd.warmup_epochs, 1) tau^2 (alpha TCKD + beta NCKD) (Zhao et al.'s
  eq. 7), a batch mean from logits (B, C); with `standardise`, TCKD and NCKD read both
  logits Z-scored per row (logit standardisation, Sun et al. CVPR 2024); the CE never does."""
  cfg = view.cfg
  s, t = view.s_logits, jax.lax.stop_gradient(view.t_logits)
  if standardise:
    s, t = losses.standardise(s), losses.standardise(t)
  tckd, nckd = tckd_nckd(s, t, view.labels, cfg.dkd.tau)
  dkd = cfg.dkd.tau ** 2 * (cfg.dkd.alpha * tckd + cfg.dkd.beta * nckd)
  warm = 1.0 if cfg.dkd.warmup_epochs == 0 else jnp.minimum(
      view.epoch / cfg.dkd.warmup_epochs, 1.0)
  return losses.cross_entropy(view.s_logits, view.labels) + warm * dkd


def dkd_loss(view):
  """dkd's loss: `decoupled_kd` with `dkd.logit_std`."""
  return decoupled_kd(view, view.cfg.dkd.logit_std)


def dkd_ls_loss(view):
  """dkd_ls's loss: `decoupled_kd` with both logits standardised whatever `dkd.logit_std`
  says (dkd with logit standardisation; its tau, alpha, beta and warm-up are dkd's fields)."""
  return decoupled_kd(view, True)


PHASE = whole_student('dkd', dkd_loss, ANCHOR)
register_group('dkd', defaults, check)
register_history(added={'dkd.logit_std': False})
RUN_FIELDS = ('dkd.alpha', 'dkd.beta', 'dkd.tau')  # numbers only: may differ in a program.
register_method('dkd', lambda cfg, k: [PHASE], all_anchors=False, run_fields=RUN_FIELDS)
# dkd_ls: dkd with logit standardisation, a baseline of its own (tuned apart from dkd).
LS_PHASE = whole_student('dkd_ls', dkd_ls_loss, ANCHOR)
register_method('dkd_ls', lambda cfg, k: [LS_PHASE], all_anchors=False,
                run_fields=RUN_FIELDS)
