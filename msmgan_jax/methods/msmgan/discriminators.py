"""MS-MGANs' discriminators D_k, one per student block k (idea 3 of the README's
"What the method does").

Each takes a block-k feature map (B, H, W, C_T) with the teacher's channels (the teacher's
own, or the student's through its connector) and returns real/fake scores (B,) (logits),
or, for `TaskDisc`, class logits (B, C) whose realness `task_realness` reads.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from msmgan_jax.core import models


class TeacherDisc(nn.Module):
  """D_k with the teacher as discriminator: the teacher's blocks after k, pooling, real/fake unit.

  `depth` limits the trunk to the teacher's blocks k+1..k+depth (0: all blocks up to K).
  """
  trunk: models.Classifier
  k: int
  trunk_learns: bool = True  # False: the trunk is frozen, BatchNorm statistics included.
  depth: int = 0

  @nn.compact
  def __call__(self, x, train: bool = False):
    stop = self.trunk.num_blocks if self.depth <= 0 else min(self.trunk.num_blocks,
                                                              self.k + 1 + self.depth)
    _, feats = self.trunk(x, train and self.trunk_learns, start=self.k + 1, stop=stop,
                          with_head=False)
    h = feats[-1] if feats else x
    return nn.Dense(1, name='real_fake')(jnp.mean(h, axis=(1, 2)))[:, 0]


class TaskDisc(nn.Module):
  """D_k as a task critic: the teacher's blocks k+1..K and its head on a block-k map, (B, C)
  logits. Its BatchNorm layers keep the teacher's running statistics (inference mode), so
  real and fake maps are judged by the same statistics; its weights may learn.
  Realness is read from the logits (`task_realness`)."""
  trunk: models.Classifier
  k: int

  @nn.compact
  def __call__(self, x, train: bool = False):
    logits, _ = self.trunk(x, False, start=self.k + 1)
    return logits


def task_realness(logits):
  """The K+1-class discriminator's real-vs-fake logit from its C class logits (Salimans et
  al., "Improved Techniques for Training GANs", 2016, section 5): with the fake class's
  logit fixed at 0, D(x) = Z / (Z + 1) where Z = sum_c exp(l_c), so logit D = logsumexp(l).
  (B, C) -> (B,)."""
  return jax.nn.logsumexp(logits.astype(jnp.float32), axis=-1)


class ConvDisc(nn.Module):
  """D_k as a small conv net: two 3x3 conv-BN-LeakyReLU layers, pooling, real/fake unit."""
  width: int = 64

  @nn.compact
  def __call__(self, x, train: bool = False):
    for _ in range(2):
      x = models.conv(self.width, (3, 3), padding=1)(x)
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)(x)
      x = nn.leaky_relu(x, 0.2)
    return nn.Dense(1, name='real_fake')(jnp.mean(x, axis=(1, 2)))[:, 0]
