"""`ce`: the student alone, cross-entropy on the labels (the reference every method must beat)."""
from msmgan_jax.core import losses
from msmgan_jax.core.phase import whole_student
from msmgan_jax.methods.registry import register_method


def ce_loss(view):
  """Mean softmax cross-entropy of the student's logits (B, C) against the labels (B,)."""
  return losses.cross_entropy(view.s_logits, view.labels)


PHASE = whole_student('ce', ce_loss)
register_method('ce', lambda cfg, k: [PHASE], uses_teacher=False)
