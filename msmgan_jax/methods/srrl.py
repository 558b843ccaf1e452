"""`srrl`: softmax regression representation learning (Yang et al., ICLR 2021).

The student's last block features, put through a connector to the teacher's channels,
must (1) match the teacher's last block features (feature matching, mean squared error,
weight `srrl.alpha`) and (2) make the frozen teacher's own classifier head reproduce the
teacher's logits (softmax regression: the teacher's head on the connected student features
against the teacher's logits, mean squared error, weight `srrl.beta`); plus CE on the labels.
The whole student and the connector train.
"""
import jax
import jax.numpy as jnp
import ml_collections

from msmgan_jax.core import losses
from msmgan_jax.core.phase import ANCHOR, whole_student
from msmgan_jax.methods.registry import check_finite, register_group, register_method


def defaults(c: ml_collections.ConfigDict) -> None:
  c.srrl = sr = ml_collections.ConfigDict()
  sr.alpha = 1.0                  # srrl: weight of the feature-matching MSE (last block).
  sr.beta = 1.0                   # srrl: weight of the softmax-regression MSE (teacher's head).


def check(cfg) -> None:
  check_finite(cfg, ('srrl.alpha', 'srrl.beta'))


def srrl_loss(view):
  """CE + alpha mean((C(f_S) - f_T)^2) + beta mean((head_T(C(f_S)) - z_T)^2), on the last
  block's maps (B, H, W, channels) and the teacher's logits (B, C)."""
  cfg, last = view.cfg, len(view.s_feats) - 1
  projected = view.connect(last, view.s_feats[last])
  t_feat = jax.lax.stop_gradient(view.t_feats[view.first + last])
  fm = losses.feature_mse(projected, t_feat)
  sr = jnp.mean((view.t_head(projected) - jax.lax.stop_gradient(view.t_logits)) ** 2)
  return losses.cross_entropy(view.s_logits, view.labels) + cfg.srrl.alpha * fm + cfg.srrl.beta * sr


PHASE = whole_student('srrl', srrl_loss, ANCHOR, trains_connectors=True)
register_group('srrl', defaults, check)
register_method('srrl', lambda cfg, k: [PHASE], all_anchors=False, needs_features=True,
                needs_network=lambda cfg: "it runs the teacher's head on the student's map")
