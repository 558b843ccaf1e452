"""`ce`: the student alone, cross-entropy on the labels (the reference every method must beat)."""
from msmgan_jax.core import losses
from msmgan_jax.core.phase import Phase
from msmgan_jax.methods.registry import register_method


def ce_loss(view):
  """Mean softmax cross-entropy of the student's logits (B, C) against the labels (B,)."""
  return losses.cross_entropy(view.s_logits, view.labels)


def _phases(cfg, num_blocks):
  return [Phase('ce', 1.0, loss=ce_loss, finetune_all=True, standalone=True)]


register_method('ce', _phases, uses_teacher=False)
