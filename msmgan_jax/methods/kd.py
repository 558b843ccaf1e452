"""`kd` (Hinton et al. 2015) and `rco` (route-constrained optimisation, Jin et al. ICCV 2019).

`kd`: the whole student learns (1 - kd.beta) CE + kd.beta tau^2 KL(softmax(t/tau) ||
softmax(s/tau)) from the final teacher's logits (Hinton et al.'s eq. 2 with the tau^2
factor). `rco`: the same loss from each anchor in turn, weakest first, one stage each.
With `kd.logit_std` both logits are Z-scored per row before the temperature (logit
standardisation, Sun et al. CVPR 2024; their base temperature 2 with it). `kd_ls`: a method
of its own, kd with that standardisation always on (kd's fields otherwise), so a comparison
tunes it as a baseline apart from kd.
"""
import jax
import ml_collections

from msmgan_jax.core import losses
from msmgan_jax.core.phase import ANCHOR, whole_student
from msmgan_jax.methods.registry import (check_finite, register_group, register_history,
                                         register_method, require)


def defaults(c: ml_collections.ConfigDict) -> None:
  c.kd = k = ml_collections.ConfigDict()
  k.tau = 4.0                     # KD temperature.
  k.beta = 0.9                    # weight of the KD term (CE gets 1 - beta).
  k.logit_std = False             # Z-score both logits per row before tau (kd_ls, Sun et al. 2024).


def check(cfg) -> None:
  check_finite(cfg, ('kd.tau', 'kd.beta'), positive=('kd.tau',))
  require(cfg.kd.beta <= 1, 'kd.beta', f'must be in [0, 1], got {cfg.kd.beta}')
  require(isinstance(cfg.kd.logit_std, bool), 'kd.logit_std',
          f'must be True or False, got {cfg.kd.logit_std!r}')


def standardised_kd(view, standardise: bool):
  """(1 - kd.beta) CE + kd.beta tau^2 KL(T || S) on logits (B, C), a batch mean; with
  `standardise`, the KL is between the softmaxes of both logits Z-scored per row (logit
  standardisation, Sun et al. CVPR 2024, their eq. 9 inside Hinton et al.'s loss)."""
  cfg = view.cfg
  if standardise:
    t = losses.standardise(jax.lax.stop_gradient(view.t_logits))
    return ((1 - cfg.kd.beta) * losses.cross_entropy(view.s_logits, view.labels)
            + cfg.kd.beta * losses.kd(losses.standardise(view.s_logits), t, cfg.kd.tau))
  return losses.dml(view.s_logits, view.t_logits, view.labels, cfg.kd.beta, cfg.kd.tau,
                    1 - cfg.kd.beta)


def kd_loss(view):
  """kd's loss: `standardised_kd` with `kd.logit_std`."""
  return standardised_kd(view, view.cfg.kd.logit_std)


def kd_ls_loss(view):
  """kd_ls's loss: `standardised_kd` with both logits standardised whatever `kd.logit_std`
  says (the method is kd with logit standardisation; its tau and beta are kd's fields)."""
  return standardised_kd(view, True)


def kd_phase(share: float = 1.0):
  """Hinton KD on the whole student from the stage's anchor, `share` of the stage."""
  return whole_student('kd', kd_loss, ANCHOR, share)


PHASE = kd_phase()


register_group('kd', defaults, check)
register_history(added={'kd.logit_std': False})
RUN_FIELDS = ('kd.tau', 'kd.beta')  # read only as numbers: may differ within a program.
register_method('kd', lambda cfg, k: [PHASE], all_anchors=False, run_fields=RUN_FIELDS)
# kd_ls: kd with logit standardisation, a baseline of its own (its rows tune apart from kd's).
LS_PHASE = whole_student('kd_ls', kd_ls_loss, ANCHOR)
register_method('kd_ls', lambda cfg, k: [LS_PHASE], all_anchors=False, run_fields=RUN_FIELDS)
# RCO: KD from every anchor in turn, weakest first (the route-constrained curriculum).
register_method('rco', lambda cfg, k: [PHASE], run_fields=RUN_FIELDS)
