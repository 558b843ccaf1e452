"""`dml`: deep mutual learning (Zhang et al., CVPR 2018), no pretrained teacher.

The student and a peer of the teacher's architecture, both from scratch, on the same
batches, each learn CE + dml.beta tau^2 KL(other || self) (their eq. 10 with one peer;
Zhang et al.'s tau = 1, weight 1), from one training-mode forward each, simultaneously. The
peer has the student's schedule and optimizer settings.
"""
import jax
import ml_collections

from msmgan_jax.core import losses, optim
from msmgan_jax.core.phase import Partner, whole_student
from msmgan_jax.methods.registry import check_finite, register_group, register_method


def defaults(c: ml_collections.ConfigDict) -> None:
  c.dml = dm = ml_collections.ConfigDict()
  dm.tau = 1.0                    # dml: temperature of the mutual KL terms (Zhang et al.'s 1).
  dm.beta = 1.0                   # dml: weight of KL(peer || self) for both networks.


def check(cfg) -> None:
  check_finite(cfg, ('dml.tau', 'dml.beta'), positive=('dml.tau',))


def dml_loss(view):
  """CE + dml.beta tau^2 KL(peer || student) on logits (B, C); the peer's are constants."""
  cfg = view.cfg
  return losses.dml(view.s_logits, view.t_logits, view.labels, cfg.dml.beta, cfg.dml.tau)


class Peer(Partner):
  """A fresh network of `teacher.model` trained beside the student (the `t` state)."""
  state = 't'
  record_key = 'peer_params'

  def init_state(self, ctx):
    cfg = ctx.cfg
    peer_lr = ctx.student_lr_fn()
    t_tx = ctx.tx(('peer',) + ctx.g_key[1:], lambda: optim.sgd(
        peer_lr, cfg.student.momentum, cfg.student.weight_decay))
    v = optim.init_variables(ctx.t_model, jax.random.key(ctx.seed + 4), ctx.image_shape)
    state = optim.TrainState.create(apply_fn=None, params=v['params'],
                                    batch_stats=v['batch_stats'], tx=t_tx)
    if ctx.offset:
      state = state.replace(opt_state=ctx.start_at(state.opt_state, ctx.offset))
    return state

  def forward(self, steps, t_state, anchor, x):
    """One training-mode forward of the peer: its logits (the student's target and its own
    loss's input), kept with their pullback and new BatchNorm statistics."""
    t_logits, pull, new = jax.vjp(lambda tp: _peer_forward(steps, t_state, tp, x),
                                  t_state.params, has_aux=True)
    return t_logits, None, (t_logits, pull, new)

  def update(self, steps, t_state, ctx, x, y, s_logits):
    cfg = steps.cfg
    t_logits, pull, new = ctx
    peer_loss, dlogits = jax.value_and_grad(
        lambda lg: losses.dml(lg, s_logits, y, cfg.dml.beta, cfg.dml.tau))(t_logits)
    t_state = t_state.apply_gradients(grads=pull(dlogits)[0], batch_stats=new['batch_stats'])
    return t_state, {'peer_loss': peer_loss,
                     'peer_accuracy': jax.numpy.mean(jax.numpy.argmax(t_logits, -1) == y)}


def _peer_forward(steps, t_state, params, x):
  """The peer on the whole batch in training mode: logits and new BatchNorm statistics."""
  (logits, _), new = steps.teacher.apply({'params': params, 'batch_stats': t_state.batch_stats},
                                         x, train=True, mutable=['batch_stats'])
  return logits, new


PEER = Peer()
PHASE = whole_student('dml', dml_loss, PEER)
register_group('dml', defaults, check)
register_method('dml', lambda cfg, k: [PHASE], uses_teacher=False)
