"""MS-MGANs v3's adversarial parts of the head phase (issue 36), each off by default:

- `msmgan.ctkd`: the head's KL uses CTKD's learnable temperature (Li et al., AAAI 2023;
  `methods.ctkd`): tau = t_start + t_end sigmoid(w), w trained through a gradient reversal
  layer on CTKD's curriculum, with the `ctkd` group's default values (`CTKD`; msmgan does
  not read the ctkd baseline's tuned fields).
- `msmgan.head_disc` > 0: one discriminator D on the last feature map for the whole head
  phase (not one per block re-initialised every 14 steps), as the adversarial components
  that work elsewhere are (AFD, Chung et al. ICML 2020: a discriminator per network on the
  last features in online distillation, least-squares loss; MEAL, Shen et al. AAAI 2019).
  D (`HeadDisc`: two 3x3 convs with LeakyReLU, no normalisation, pooled, one unit) tells the
  teacher's (the mutual copy's, or the anchor's) last map from the student's, put through
  its connector to the teacher's channels. Least-squares GAN (Mao et al. ICCV 2017):
    L_D = mean (D(t) - 1)^2 + mean D(C(f_S))^2 + msmgan.head_disc_r1 / 2 mean ||grad_t D(t)||^2
    L_G = w mean (D(C(f_S)) - 1)^2,  w = msmgan.head_disc x min(epoch / head_disc_ramp, 1)
  with the R1 penalty on real maps (Mescheder et al. ICML 2018) against a discriminator
  that wins at once. D learns with Adam (msmgan.head_disc_lr, b1 0.5), ten times slower than
  v2's per-block D. One loss carries both: L_G sees D's parameters without gradient and L_D
  the student's map without gradient, so each side gets only its own objective's gradient
  (the phase's logged `loss` includes L_D).
Both live in one `core.phase.MethodState` (`HeadAdversary`, state `head_adv`), built per
head phase (each stage's head phase starts a fresh one).
"""
import jax
import jax.numpy as jnp
import flax.linen as nn
import ml_collections
import optax

from msmgan_jax.core import models
from msmgan_jax.core.phase import MethodState, OwnedState
from msmgan_jax.methods import ctkd


class HeadDisc(nn.Module):
  """D on a (B, H, W, C_T) map: conv 3x3 (width) - LeakyReLU(0.2) - conv 3x3 stride 2 -
  LeakyReLU - global mean - Dense(1): a realness score (B,), unbounded (least squares)."""
  width: int = 64

  @nn.compact
  def __call__(self, x):
    x = nn.leaky_relu(models.conv(self.width, (3, 3), padding=1)(x), 0.2)
    x = nn.leaky_relu(models.conv(self.width, (3, 3), strides=2, padding=1)(x), 0.2)
    return nn.Dense(1, name='real_fake')(jnp.mean(x, axis=(1, 2)))[:, 0]


DISC = HeadDisc()
CTKD = ml_collections.ConfigDict()
ctkd.defaults(CTKD)  # CTKD.ctkd: the component's settings (the ctkd group's defaults).


def uses(cfg) -> bool:
  """Whether the head phase carries the adversary (either part on)."""
  return bool(cfg.msmgan.ctkd) or cfg.msmgan.head_disc > 0


class HeadAdversary(MethodState):
  """params {'w': () (with msmgan.ctkd), 'disc': HeadDisc's (with msmgan.head_disc > 0)};
  each part under its own optimizer (`ctkd.temperature_tx`; Adam at msmgan.head_disc_lr)."""
  state = 'head_adv'
  record_key = 'head_adversary_params'

  def init_state(self, ctx) -> OwnedState:
    cfg = ctx.cfg
    params, txs = {}, {}
    if cfg.msmgan.ctkd:
      params['w'] = jnp.asarray(ctkd.W_INIT, jnp.float32)
      txs['w'] = ctkd.temperature_tx(ctx)
    if cfg.msmgan.head_disc > 0:
      channels = ctx.t_model.block_channels[-1]
      size = ctx.image_shape[0]
      for stride in ctx.t_model.block_strides:
        size = -(-size // stride)
      key = jax.random.fold_in(jax.random.key(ctx.seed + 11), ctx.offset)
      params['disc'] = DISC.init(key, jnp.zeros((1, size, size, channels)))['params']
      txs['disc'] = optax.adam(cfg.msmgan.head_disc_lr, b1=0.5)
    key = ('head_adv', ctx.phase.signature, ctx.n_steps, ctx.student_lr, tuple(sorted(txs)))
    tx = ctx.tx(key, lambda: optax.multi_transform(txs, {k: k for k in txs}))
    return OwnedState.create(apply_fn=None, params=params, tx=tx, batch_stats={}, buffers={})


HEAD_ADV = HeadAdversary()


def tau(view):
  """The head KL's temperature: CTKD's learned one with msmgan.ctkd, else msmgan.tau."""
  cfg = view.cfg
  if not cfg.msmgan.ctkd:
    return cfg.msmgan.tau
  c = CTKD.ctkd
  scale = ctkd.curriculum(view.epoch, c.lambda_min, c.lambda_max, c.decay_epochs)
  return ctkd.temperature(view.params['w'], c.t_start, c.t_end, scale)


def disc_terms(view):
  """L_G + L_D of the module docstring (a scalar), 0.0 without msmgan.head_disc."""
  cfg = view.cfg.msmgan
  if cfg.head_disc <= 0:
    return 0.0
  last = len(view.s_feats) - 1
  fake = view.connect(last, view.s_feats[last])
  real = jax.lax.stop_gradient(view.t_feats[-1])
  theta = view.params['disc']
  d = lambda p, x: DISC.apply({'params': p}, x)
  ramp = 1.0 if cfg.head_disc_ramp <= 0 else jnp.minimum(view.epoch / cfg.head_disc_ramp, 1.0)
  g_loss = cfg.head_disc * ramp * jnp.mean((d(jax.lax.stop_gradient(theta), fake) - 1) ** 2)
  grad_real = jax.grad(lambda x: jnp.sum(d(theta, x)))(real)
  r1 = jnp.mean(jnp.sum(grad_real ** 2, axis=(1, 2, 3)))
  d_loss = (jnp.mean((d(theta, real) - 1) ** 2)
            + jnp.mean(d(theta, jax.lax.stop_gradient(fake)) ** 2) + cfg.head_disc_r1 / 2 * r1)
  return g_loss + d_loss
