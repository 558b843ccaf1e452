"""`skd`: stagewise KD (Kulkarni et al. 2017): greedy block phases, then the classifier.

Block phase k trains student block k alone to regress the final teacher's block-k features
through a connector (gan.alpha_feat x MSE, no GAN; shares `stages.phase_shares`); the last
phase trains the classifier alone with CE, the blocks frozen.
"""
from msmgan_jax.core.phase import Phase
from msmgan_jax.methods import ce
from msmgan_jax.methods.registry import register_method


def _phases(cfg, num_blocks: int) -> list:
  shares = tuple(cfg.stages.phase_shares)
  return [Phase(f'block_{k + 1}', shares[k], (k,)) for k in range(num_blocks)] + [
      Phase('head', shares[num_blocks], loss=ce.ce_loss)]


register_method('skd', _phases, all_anchors=False, needs_features=True)
