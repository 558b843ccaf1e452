"""`fitnets` (Romero et al. ICLR 2015): a hint phase, then KD.

Hint phase (`fitnets.hint_share` of the budget): the student's blocks up to the middle one
train to regress the teacher's middle block through a 1x1 connector (the regressor),
mean squared error; then `kd`'s loss on the whole student.
"""
import ml_collections

from msmgan_jax.core.phase import Phase
from msmgan_jax.methods import kd
from msmgan_jax.methods.registry import check_finite, register_group, register_method, require


def defaults(c: ml_collections.ConfigDict) -> None:
  c.fitnets = fn = ml_collections.ConfigDict()
  fn.hint_share = 0.2             # fitnets: budget share of the hint phase (then KD).


def check(cfg) -> None:
  check_finite(cfg, ('fitnets.hint_share',))
  require(0 < cfg.fitnets.hint_share < 1, 'fitnets.hint_share',
          f'must be in (0, 1) (the rest is KD), got {cfg.fitnets.hint_share}')


def _phases(cfg, num_blocks: int) -> list:
  hint = Phase('hint', cfg.fitnets.hint_share, (num_blocks // 2,), hint=True)
  return [hint, kd.kd_phase(1 - cfg.fitnets.hint_share)]


register_group('fitnets', defaults, check)
register_method('fitnets', _phases, all_anchors=False, needs_features=True)
