"""MS-MGANs' GAN losses, on discriminator scores (logits): a batch mean each.

`kind` is `gan.loss`: bce (Goodfellow et al. 2014, the non-saturating generator loss),
hinge (Lim & Ye 2017) or lsgan (Mao et al. 2017); anything else is a ValueError.
"""
import jax
import jax.numpy as jnp

GAN_LOSSES = ('bce', 'hinge', 'lsgan')


def gan_d(kind: str, d_real, d_fake):
  """Discriminator loss on real (teacher) and fake (student) scores (logits)."""
  if kind == 'bce':
    return jnp.mean(jax.nn.softplus(-d_real)) + jnp.mean(jax.nn.softplus(d_fake))
  if kind == 'hinge':
    return jnp.mean(jax.nn.relu(1 - d_real)) + jnp.mean(jax.nn.relu(1 + d_fake))
  if kind == 'lsgan':
    return 0.5 * (jnp.mean((d_real - 1) ** 2) + jnp.mean(d_fake ** 2))
  raise ValueError(f'unknown GAN loss {kind!r}')


def gan_g(kind: str, d_fake):
  """Generator (student) loss on its fake scores: non-saturating BCE, hinge or LSGAN."""
  if kind == 'bce':
    return jnp.mean(jax.nn.softplus(-d_fake))
  if kind == 'hinge':
    return -jnp.mean(d_fake)
  if kind == 'lsgan':
    return 0.5 * jnp.mean((d_fake - 1) ** 2)
  raise ValueError(f'unknown GAN loss {kind!r}')


def relativistic(d_real, d_fake):
  """Relativistic average scores (Jolicoeur-Martineau, "The relativistic discriminator",
  ICLR 2019): each real score less the mean fake one, each fake score less the mean real
  one, (B,) each. With them `gan_d(kind, r, f)` is the discriminator's loss and
  `gan_d(kind, f, r)` the generator's (RaSGAN for bce): a critic whose raw scores call
  everything real still tells which of the two sets looks more real."""
  return d_real - jnp.mean(d_fake), d_fake - jnp.mean(d_real)


def gan_threshold(kind: str) -> float:
  """The score above which a discriminator calls its input real."""
  return 0.5 if kind == 'lsgan' else 0.0
