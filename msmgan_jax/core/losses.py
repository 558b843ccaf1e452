"""Distillation losses: CE, Hinton KD, feature MSE through a connector, attention transfer,
DML. (A loss only one method uses, say MS-MGANs' GAN losses, lives with the method.)

All take logits or feature maps and return scalar means over the batch.
"""
import jax
import jax.numpy as jnp
import optax


def cross_entropy(logits, labels):
  """Mean softmax cross-entropy with integer labels."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def kd(student_logits, teacher_logits, tau: float):
  """Hinton KD: tau^2 * KL(softmax(t / tau) || softmax(s / tau)), batch mean."""
  log_p_t = jax.nn.log_softmax(teacher_logits / tau)
  log_p_s = jax.nn.log_softmax(student_logits / tau)
  return tau ** 2 * jnp.mean(jnp.sum(jnp.exp(log_p_t) * (log_p_t - log_p_s), axis=-1))


def standardise(logits, eps: float = 1e-7):
  """Logit standardisation (Sun et al., "Logit Standardization in Knowledge Distillation",
  CVPR 2024, eq. 8's Z-score without the temperature): (z - mean(z)) / (std(z) + eps) over
  the classes of each row of `logits` (B, C); a KD loss then divides by its temperature.
  The output has mean 0 and (population) std 1 per row."""
  z = logits - jnp.mean(logits, axis=-1, keepdims=True)
  return z / (jnp.std(logits, axis=-1, keepdims=True) + eps)


def align(fs, ft):
  """Average-pools the spatially larger of two NHWC maps down to the other's size."""
  def pool(x, size):
    r = x.shape[1] // size
    return x if r == 1 else jax.lax.reduce_window(
        x, 0.0, jax.lax.add, (1, r, r, 1), (1, r, r, 1), 'VALID') / (r * r)
  size = min(fs.shape[1], ft.shape[1])
  return pool(fs, size), pool(ft, size)


def feature_mse(projected_student, teacher_feat):
  """FitNets regression: mean((C_k(f_s) - f_t)^2) after aligning spatial sizes."""
  fs, ft = align(projected_student, teacher_feat)
  return jnp.mean((fs - ft) ** 2)


def attention_map(f):
  """Zagoruyko & Komodakis's spatial attention of an NHWC map: the channel mean of f^2,
  flattened and L2-normalised per example."""
  a = jnp.mean(f ** 2, axis=-1).reshape(f.shape[0], -1)
  return a / jnp.maximum(jnp.linalg.norm(a, axis=-1, keepdims=True), 1e-12)


def attention_transfer(student_feat, teacher_feat):
  """Attention transfer between two maps (RepDistiller's form): the mean over examples and
  positions of the squared difference of their attention maps (spatial sizes aligned)."""
  fs, ft = align(student_feat, teacher_feat)
  return jnp.mean((attention_map(fs) - attention_map(ft)) ** 2)


def dml(student_logits, peer_logits, labels, beta: float, tau: float, ce_weight: float = 1.0):
  """One side of deep mutual learning: ce_weight * CE + beta * KD towards the (fixed) peer."""
  return (ce_weight * cross_entropy(student_logits, labels)
          + beta * kd(student_logits, jax.lax.stop_gradient(peer_logits), tau))
