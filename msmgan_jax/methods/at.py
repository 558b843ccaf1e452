"""`at`: attention transfer (Zagoruyko & Komodakis, ICLR 2017), RepDistiller's form.

The whole student learns CE + at.beta x sum over blocks of the mean squared difference of
the student's and the final teacher's L2-normalised spatial attention maps (their eq. 2
with p = 2, `core.losses.attention_transfer`).
"""
import ml_collections

from msmgan_jax.core import losses
from msmgan_jax.core.phase import ANCHOR, whole_student
from msmgan_jax.methods.registry import check_finite, register_group, register_method


def defaults(c: ml_collections.ConfigDict) -> None:
  c.at = at = ml_collections.ConfigDict()
  at.beta = 1000.0                # at: weight of the attention-transfer term (RepDistiller's).


def check(cfg) -> None:
  check_finite(cfg, ('at.beta',))


def at_loss(view):
  """CE + at.beta x attention transfer on every block the student computes (all of them)."""
  s_loss = losses.cross_entropy(view.s_logits, view.labels)
  s_loss += view.cfg.at.beta * sum(losses.attention_transfer(f, view.t_feats[view.first + i])
                                   for i, f in enumerate(view.s_feats))
  return s_loss


PHASE = whole_student('at', at_loss, ANCHOR)
register_group('at', defaults, check)
register_method('at', lambda cfg, k: [PHASE], all_anchors=False, needs_features=True)
