"""`ctkd`: curriculum temperature for knowledge distillation (Li et al., AAAI 2023).

KD (Hinton et al. 2015) whose temperature is learned adversarially: a global learnable
scalar w gives tau = ctkd.t_start + ctkd.t_end sigmoid(w) (their `Global_T`, w = 1 at the
start: tau 15.6 with their 1 and 20); the student minimises
  (1 - ctkd.beta) CE + ctkd.beta tau^2 KL(softmax(t / tau) || softmax(s / tau))
and w receives that loss's gradient reversed and scaled by lambda (a gradient reversal
layer, Ganin & Lempitsky 2015): w climbs the loss the student descends, making the task
harder as the student learns. lambda follows their easy-to-hard curriculum, a cosine from
ctkd.lambda_min to ctkd.lambda_max over the first ctkd.decay_epochs of the phase (their 10
of 240 epochs; scaled to our 15-epoch budgets: 0.625), then lambda_max.
w trains with SGD (momentum 0.9) at the student's peak learning rate on a cosine over the
phase, as theirs trains inside the student's optimizer.

`Temperature` is the learnable temperature as a `core.phase.MethodState`; other methods
(msmgan's head phase, `msmgan.ctkd`) use it through `temperature` and `curriculum`.
"""
import math

import jax
import jax.numpy as jnp
import ml_collections
import optax

from msmgan_jax.core import losses, optim
from msmgan_jax.core.phase import ANCHOR, MethodState, OwnedState, whole_student
from msmgan_jax.methods.registry import (check_finite, register_group, register_method,
                                         require)

W_INIT = 1.0  # their Global_T starts at torch.ones(1).


def defaults(c: ml_collections.ConfigDict) -> None:
  c.ctkd = ct = ml_collections.ConfigDict()
  ct.beta = 0.9                   # weight of the KD term (CE gets 1 - beta).
  ct.t_start = 1.0                # tau = t_start + t_end sigmoid(w) (their 1).
  ct.t_end = 20.0                 # tau's range above t_start (their 20).
  ct.lambda_min = 0.0             # gradient reversal scale at the phase's start (their 0).
  ct.lambda_max = 1.0             # and after decay_epochs (their 1).
  ct.decay_epochs = 0.625         # epochs of the cosine from lambda_min to lambda_max (their 10/240).


def check(cfg) -> None:
  check_finite(cfg, ('ctkd.beta', 'ctkd.t_start', 'ctkd.t_end', 'ctkd.lambda_min',
                     'ctkd.lambda_max', 'ctkd.decay_epochs'), positive=('ctkd.t_start',))
  require(0 <= cfg.ctkd.beta <= 1, 'ctkd.beta', f'must be in [0, 1], got {cfg.ctkd.beta}')


@jax.custom_vjp
def reverse_gradient(x, scale):
  """The identity on `x`; its gradient is multiplied by -`scale` on the way back (a gradient
  reversal layer, Ganin & Lempitsky ICML 2015). `scale` (a scalar) gets no gradient."""
  return x


def _reverse_fwd(x, scale):
  return x, scale


def _reverse_bwd(scale, g):
  return -scale * g, jnp.zeros_like(scale)


reverse_gradient.defvjp(_reverse_fwd, _reverse_bwd)


def curriculum(epoch, lambda_min: float, lambda_max: float, decay_epochs: float):
  """CTKD's lambda at `epoch` (epochs of the phase so far, a traced scalar): a cosine from
  `lambda_min` (epoch 0) to `lambda_max` (epoch >= `decay_epochs`)."""
  if decay_epochs <= 0:
    return jnp.asarray(lambda_max, jnp.float32)
  frac = jnp.minimum(epoch / decay_epochs, 1.0)
  return lambda_max + 0.5 * (lambda_min - lambda_max) * (1 + jnp.cos(math.pi * frac))


def temperature(w, t_start: float, t_end: float, scale):
  """tau = t_start + t_end sigmoid(w) with w's gradient reversed and scaled by `scale`."""
  return t_start + t_end * jax.nn.sigmoid(reverse_gradient(w, scale))


def temperature_tx(ctx) -> optax.GradientTransformation:
  """SGD (momentum 0.9, no decay) at the student's peak rate on a cosine over the phase: the
  learnable temperature's optimizer."""
  return optax.sgd(ctx.per_run(optim.lr_schedule(ctx.student_lr, ctx.n_steps, 0)), momentum=0.9)


class Temperature(MethodState):
  """CTKD's global learnable temperature: params {'w': () float32}, no buffers."""
  state = 'temperature'
  record_key = 'temperature_params'

  def init_state(self, ctx) -> OwnedState:
    tx = ctx.tx(('temperature', ctx.phase.signature, ctx.n_steps, ctx.student_lr),
                lambda: temperature_tx(ctx))
    return OwnedState.create(apply_fn=None, params={'w': jnp.asarray(W_INIT, jnp.float32)},
                             tx=tx, batch_stats={}, buffers={})


TEMPERATURE = Temperature()


def ctkd_loss(view):
  """(1 - ctkd.beta) CE + ctkd.beta tau^2 KL(T || S) with CTKD's learned tau; a batch mean of
  logits (B, C)."""
  c = view.cfg.ctkd
  scale = curriculum(view.epoch, c.lambda_min, c.lambda_max, c.decay_epochs)
  tau = temperature(view.params['w'], c.t_start, c.t_end, scale)
  return ((1 - c.beta) * losses.cross_entropy(view.s_logits, view.labels)
          + c.beta * losses.kd(view.s_logits, jax.lax.stop_gradient(view.t_logits), tau))


PHASE = whole_student('ctkd', ctkd_loss, ANCHOR, method_state=TEMPERATURE)
register_group('ctkd', defaults, check)
register_method('ctkd', lambda cfg, k: [PHASE], all_anchors=False)
