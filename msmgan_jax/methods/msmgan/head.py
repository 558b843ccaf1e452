"""MS-MGANs' head phase: its losses and the mutual copy of the anchor (mutual learning, the
README's "What the method does").

The student learns CE + msmgan.beta tau^2 KL(T' || S) (tau = msmgan.tau; `msmgan.loss=dkd`:
DKD's TCKD/NCKD split instead of the KL; `msmgan.logit_std`: both logits standardised first)
from the logits of a trainable copy T' of the stage's anchor (`MutualCopy`, with
`mutual.enabled`) or of the anchor itself; the copy learns
CE + mutual.beta_t tau^2 KL(S || T') (deep mutual learning, Zhang et al. CVPR 2018). Optionally the block phases' terms stay on while the head trains
(`head_loss_with_features`).
"""
import jax
import jax.numpy as jnp
import optax

from msmgan_jax.core import losses, optim
from msmgan_jax.core.phase import Partner
from msmgan_jax.core.steps import sub_batch
from msmgan_jax.methods.dkd import tckd_nckd
from msmgan_jax.methods.msmgan import adversarial


def head_loss(view):
  """CE (weight 1, with or without the mutual copy: the no_mutual ablation changes mutual
  learning only) + msmgan.beta x the logit loss from the copy's (or the anchor's) logits
  (B, C); a batch mean. The logit loss (`msmgan.loss`): `kd`, tau^2 KL(T' || S) (Hinton et
  al. 2015), or `dkd`, w tau^2 (dkd_alpha TCKD + dkd_beta NCKD) (Zhao et al. CVPR 2022, eq. 7;
  w rises from 0 to 1 over the phase's first `msmgan.dkd_warmup_epochs`). With
  `msmgan.logit_std` both logits are Z-scored per row before the temperature (Sun et al.
  CVPR 2024; `core.losses.standardise`); with `msmgan.ctkd` the temperature is CTKD's
  learned one, and with `msmgan.head_disc` the last-map discriminator's terms are added
  (`adversarial`)."""
  cfg = view.cfg.msmgan
  if cfg.loss == 'kd' and not cfg.logit_std and not adversarial.uses(view.cfg):
    # today's program, unchanged.
    return losses.dml(view.s_logits, view.t_logits, view.labels, cfg.beta, cfg.tau, 1.0)
  tau = adversarial.tau(view)
  s, t = view.s_logits, jax.lax.stop_gradient(view.t_logits)
  if cfg.logit_std:
    s, t = losses.standardise(s), losses.standardise(t)
  if cfg.loss == 'kd':
    term = losses.kd(s, t, tau)
  else:
    tckd, nckd = tckd_nckd(s, t, view.labels, tau)
    warm = 1.0 if cfg.dkd_warmup_epochs == 0 else jnp.minimum(
        view.epoch / cfg.dkd_warmup_epochs, 1.0)
    term = warm * tau ** 2 * (cfg.dkd_alpha * tckd + cfg.dkd_beta * nckd)
  return (losses.cross_entropy(view.s_logits, view.labels) + cfg.beta * term
          + adversarial.disc_terms(view))


def head_loss_with_features(view):
  """`head_loss` + stages.head_feat x the feature MSE of every block through its connector
  (the block phases' feature terms, kept while the head trains) + gan.head_task x the last
  block's task term: tau^2 KL(T || T_head(C_K(f_S^K))), the anchor's (frozen) head on the
  student's connected last map against the partner's logits (SRRL's idea, Yang et al.
  ICLR 2021, as a KL; the last block's critic term kept while the head trains)
  + stages.forced_joint x sum_k MSE(C_k(S_k(T_{k-1}(x))), T_k(x)), every student block fed
  the partner's previous block map (teacher forcing) and regressed onto its next one,
  trained jointly with the head's logit loss (LIT's section loss beside end-to-end KD,
  Koratana et al. ICML 2019, eq. 3; LIT weighs them 0.25 : 0.75)."""
  cfg, static = view.cfg, view.static_cfg or view.cfg  # static: which terms are computed.
  s_loss = head_loss(view)
  if static.stages.forced_joint > 0:
    for k in range(view.first, view.first + len(view.s_feats)):
      fed = view.s_feats[k - view.first] if k == 0 else view.forced(k)  # block 1: the images.
      s_loss += cfg.stages.forced_joint * losses.feature_mse(view.connect(k - view.first, fed),
                                                             view.t_feats[k])
  last = len(view.s_feats) - 1
  for i, f in enumerate(view.s_feats):
    if static.stages.head_feat <= 0 and i != last:
      continue
    out = view.connect(i, f)
    if static.stages.head_feat > 0:
      s_loss += cfg.stages.head_feat * losses.feature_mse(out, view.t_feats[view.first + i])
    if i == last and static.gan.head_task > 0:
      s_loss += cfg.gan.head_task * losses.kd(view.t_head(out),
                                              jax.lax.stop_gradient(view.t_logits),
                                              cfg.msmgan.tau)
  return s_loss


class MutualCopy(Partner):
  """A trainable copy of the stage's anchor (the `t` state): the student's KD target are its
  inference-mode logits on the whole batch; it learns CE + mutual.beta_t tau^2 KL(S || T')
  on `mutual.batch_size` examples of the batch (a strided sub-batch)."""
  state = 't'
  record_key = 'teacher_copy_params'

  def init_state(self, ctx):
    cfg = ctx.cfg
    t_tx = ctx.tx(('t', ctx.phase.signature, ctx.n_steps), lambda: optim.sgd(
        optim.lr_schedule(cfg.mutual.lr, ctx.n_steps, 0), cfg.teacher.momentum,
        cfg.teacher.weight_decay))
    copy = jax.tree.map(jnp.copy, ctx.anchor.variables)  # steps donate states; anchors stay.
    return optim.TrainState.create(apply_fn=None, params=copy['params'],
                                   batch_stats=copy['batch_stats'], tx=t_tx)

  def forward(self, steps, t_state, anchor, x):
    t_logits, t_feats = steps.teacher.apply({'params': t_state.params,
                                             'batch_stats': t_state.batch_stats}, x, train=False)
    return t_logits, t_feats, None

  def update(self, steps, t_state, ctx, x, y, s_logits):
    """With `mutual.frozen_bn`, the copy's BatchNorm layers normalise with the anchor's
    running statistics and leave them as they are, as when fine-tuning a pretrained net on
    small batches."""
    cfg, n = steps.cfg, steps.cfg.mutual.batch_size
    xs, ys, ss = sub_batch(x, n), sub_batch(y, n), sub_batch(s_logits, n)

    def loss_fn(params):
      variables = {'params': params, 'batch_stats': t_state.batch_stats}
      if cfg.mutual.frozen_bn:  # BatchNorm keeps the anchor's statistics (inference mode).
        logits, _ = steps.teacher.apply(variables, xs, train=False)
        new = {'batch_stats': t_state.batch_stats}
      else:
        (logits, _), new = steps.teacher.apply(variables, xs, train=True,
                                               mutable=['batch_stats'])
      return losses.dml(logits, ss, ys, cfg.mutual.beta_t, cfg.msmgan.tau), (logits, new)

    (loss, (logits, new)), grads = jax.value_and_grad(loss_fn, has_aux=True)(t_state.params)
    t_state = t_state.apply_gradients(grads=grads, batch_stats=new['batch_stats'])
    return t_state, {'teacher_copy_loss': loss,
                     'teacher_copy_accuracy': jnp.mean(jnp.argmax(logits, -1) == ys)}


COPY = MutualCopy()


class SnapshotEnsemble(Partner):
  """Every anchor of the teacher's run at once, frozen, in inference mode (`msmgan.target`
  ensemble): the head's KD target is the average of the M anchors' softened outputs,
  p = (1/M) sum_m softmax(z_m / tau) at tau = msmgan.tau, as the snapshot ensemble of one
  run in CheckpointKD (Wang et al. NeurIPS 2022, "Efficient knowledge distillation from model
  checkpoints"). It is handed to the loss as logits tau log p (B, C), whose softmax at tau
  is p exactly, so `head_loss` is unchanged; `t_feats` are the stage's anchor's. Its state
  ('ens') holds the anchors' variables stacked on a leading axis (M, ...) and never changes
  (a no-op update), so a checkpoint carries it like any partner's."""
  state = 'ens'
  record_key = 'ensemble_params'

  def init_state(self, ctx):
    anchors = [a.variables for a in ctx.anchors]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *anchors)  # new arrays: anchors stay.
    return optim.TrainState.create(apply_fn=None, params=stacked['params'],
                                   batch_stats=stacked['batch_stats'],
                                   tx=ctx.tx(('ens',), optax.set_to_zero))  # one per run.

  def forward(self, steps, e_state, anchor, x):
    tau = steps.cfg.msmgan.tau
    logits = jax.vmap(lambda p, bs: steps.teacher.apply(
        {'params': p, 'batch_stats': bs}, x, train=False)[0])(e_state.params,
                                                              e_state.batch_stats)
    _, t_feats = steps.teacher.apply(anchor, x, train=False)
    return ensemble_logits(logits, tau), t_feats, None

  def update(self, steps, e_state, ctx, x, y, s_logits):
    return e_state, {}


ENSEMBLE = SnapshotEnsemble()


def ensemble_logits(logits, tau):
  """Logits (B, C) whose softmax at temperature `tau` is the mean of the M members'
  softened outputs: tau log((1/M) sum_m softmax(logits[m] / tau)), from `logits` (M, B, C)
  (computed in log space, stable for any logits)."""
  log_p = jax.nn.logsumexp(jax.nn.log_softmax(logits / tau, -1), axis=0) - jnp.log(
      logits.shape[0])
  return tau * log_p
