"""`skd`: stagewise KD (Kulkarni et al. 2017): greedy block phases, then the classifier.

Block phase k trains student block k alone to regress the final teacher's block-k features
through a connector (mean squared error, no GAN); the last phase trains the classifier
alone with CE, the blocks frozen. `skd.phase_shares` splits the budget over them.
"""
import ml_collections

from msmgan_jax.core import models
from msmgan_jax.core.phase import Phase
from msmgan_jax.methods import ce
from msmgan_jax.methods.registry import register_group, register_method, require


def defaults(c: ml_collections.ConfigDict) -> None:
  c.skd = sk = ml_collections.ConfigDict()
  sk.phase_shares = (0.1, 0.1, 0.1, 0.7)  # skd: budget split over its phases: block_1..block_K, head.


def check(cfg) -> None:
  """skd.phase_shares: K + 1 positive shares summing to 1 (run when skd is the method)."""
  k = models.create_model(cfg.student.model, 10).num_blocks
  shares = tuple(cfg.skd.phase_shares)
  require(len(shares) == k + 1 and all(
      isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0 for x in shares)
      and abs(sum(shares) - 1) < 1e-6, 'skd.phase_shares',
      f'needs {k + 1} positive shares summing to 1 (block_1..block_{k}, head) for '
      f'{cfg.student.model}, got {shares}')


def _phases(cfg, num_blocks: int) -> list:
  shares = tuple(cfg.skd.phase_shares)
  return [Phase(f'block_{k + 1}', shares[k], (k,)) for k in range(num_blocks)] + [
      Phase('head', shares[num_blocks], loss=ce.ce_loss)]


register_group('skd', defaults)
register_method('skd', _phases, all_anchors=False, check=check, needs_features=True)
