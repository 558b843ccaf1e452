"""Jitted step functions for the student trainer, built once per phase signature.

Each phase has one jitted step. Feature phases (`feature_step`): the frozen student
prefix and the teacher's features (no gradients), the projected student features
C_k(f^S_k) once, then the discriminators and the student block(s) updated from that
one forward. Logit phases (`logit_step`): the student head (or all of it) and, in the
mutual phase, the trainable anchor copy. Blocks after the phase's last are not computed,
on either network, except the teacher's upper blocks inside a teacher discriminator.

`TRACES` counts how often each step function is traced (tests use it to show that a
step compiles once per block index and is reused by every stage).
"""
import collections
import jax
import jax.numpy as jnp

from msmgan_jax.core import losses
from msmgan_jax.methods.registry import Phase

TRACES = collections.Counter()


def _merge(old: dict, new: dict) -> dict:
  return {**old, **new}


def sub_batch(x, size: int):
  """Every (len(x) // size)-th example of `x` (all of `x` when size is 0 or >= len(x)).

  `size` divides len(x) (config validation). The pick is a reshape, so a batch sharded
  over devices gives each device's examples from its own shard.
  """
  if size == 0 or size >= x.shape[0]:
    return x
  return x.reshape((size, x.shape[0] // size) + x.shape[1:])[:, 0]


class PhaseSteps:
  """The compiled step of one phase signature (see the module docstring)."""

  def __init__(self, cfg, phase: Phase, student, teacher, connectors, discs):
    self.cfg, self.phase = cfg, phase
    self.student, self.teacher, self.connectors, self.discs = student, teacher, connectors, discs
    self.num_blocks = student.num_blocks
    tag = f'{phase.name}{phase.signature}'
    if phase.is_feature:
      self.feature_step = jax.jit(self._counted(self._feature_step, 'feature_step ' + tag),
                                  donate_argnums=(0, 1))
    else:
      self.logit_step = jax.jit(self._counted(self._logit_step, 'logit_step ' + tag),
                                donate_argnums=(0, 1))

  @staticmethod
  def _counted(fn, name):
    def wrapped(*args):
      TRACES[name] += 1
      return fn(*args)
    return wrapped

  # Feature phases ------------------------------------------------------------------
  def _project(self, params, batch_stats, h):
    """C_k(f^S_k) for each phase block (training mode) and the new BatchNorm statistics."""
    k0, k1 = self.phase.first_trained, max(self.phase.feature_blocks)
    (_, feats), new_s = self.student.apply(
        {'params': params['student'], 'batch_stats': batch_stats['student']}, h, train=True,
        start=k0, stop=k1 + 1, with_head=False, mutable=['batch_stats'])
    c_stats, proj = batch_stats['connectors'], []
    for k in self.phase.feature_blocks:
      out, new_c = self.connectors.apply({'params': params['connectors'], 'batch_stats': c_stats},
                                         feats[k - k0], k, train=True, mutable=['batch_stats'])
      c_stats = _merge(c_stats, new_c['batch_stats'])
      proj.append(out)
    stats = {'student': _merge(batch_stats['student'], new_s['batch_stats']),
             'connectors': c_stats}
    return proj, stats

  def _scores(self, d_params, d_stats, reals, fakes):
    """Each phase block's D_k on [real; fake] (training mode): scores and new statistics."""
    scores, stats = [], {}
    for i, k in enumerate(self.phase.feature_blocks):
      name = f'disc{k + 1}'
      f, r = losses.align(fakes[i], reals[i])
      s, new = self.discs[k].apply({'params': d_params[name], 'batch_stats': d_stats[name]},
                                   jnp.concatenate([r, f]), train=True, mutable=['batch_stats'])
      scores.append(jnp.split(s, 2))
      stats[name] = new['batch_stats']
    return scores, stats

  def _d_losses(self, scores):
    kind = self.cfg.gan.loss
    return [losses.gan_d(kind, real, fake) for real, fake in scores]

  def _g_advs(self, scores):
    return [losses.gan_g(self.cfg.gan.loss, fake) for _, fake in scores]

  def _feature_step(self, g_state, d_state, anchor, batch):
    """One student update of a feature phase, with its discriminator update(s).

    The student's projected features are computed once (`jax.vjp`); the discriminators
    see `disc.batch_size` real and as many fake examples (a strided sub-batch) in one
    training-mode forward, which gives both the discriminator's gradient (the fakes are
    constants to it) and the adversarial gradient on the student's features: the two
    players update simultaneously. `disc.steps_per_g` - 1 extra discriminator updates
    on the same features come first.
    """
    cfg, blocks = self.cfg, self.phase.feature_blocks
    k0, k1 = self.phase.first_trained, max(blocks)
    x = batch['image']
    _, prefix = self.student.apply({'params': g_state.params['student'],
                                    'batch_stats': g_state.batch_stats['student']},
                                   x, train=False, stop=k0)
    h = prefix[-1] if prefix else x
    _, t_feats = self.teacher.apply(anchor, x, train=False, stop=k1 + 1)
    reals = [t_feats[k] for k in blocks]
    proj, pull, stats = jax.vjp(lambda p: self._project(p, g_state.batch_stats, h),
                                g_state.params, has_aux=True)
    mses, mse_pull = jax.vjp(lambda ps: [losses.feature_mse(p, r) for p, r in zip(ps, reals)],
                             proj)
    cotangent = mse_pull([jnp.asarray(cfg.gan.alpha_feat, m.dtype) for m in mses])[0]
    metrics = {f'feat_mse_b{k + 1}': m for k, m in zip(blocks, mses)}
    g_loss = cfg.gan.alpha_feat * sum(mses)
    if self.phase.adversarial:
      n = cfg.disc.batch_size
      d_reals = [sub_batch(r, n) for r in reals]
      fakes, fake_pull = jax.vjp(lambda ps: [sub_batch(p, n) for p in ps], proj)
      for _ in range(cfg.disc.steps_per_g - 1):
        d_state = self._d_update(d_state, d_reals, fakes)
      (scores, d_stats), d_pull = self._scores_vjp(d_state, d_reals, fakes)
      d_losses, d_loss_pull = jax.vjp(self._d_losses, scores)
      advs, adv_pull = jax.vjp(self._g_advs, scores)
      ones = lambda xs: [jnp.ones_like(x) for x in xs]
      d_grads = d_pull(d_loss_pull(ones(d_losses))[0])[0]
      # The adversarial gradient on the sub-batch, put back where the sub-batch came from.
      adv_cotangent = fake_pull(d_pull(adv_pull(ones(advs))[0])[1])[0]
      d_state = d_state.apply_gradients(grads=d_grads, batch_stats=d_stats)
      thr = losses.gan_threshold(cfg.gan.loss)
      for i, k in enumerate(blocks):
        cotangent[i] = cotangent[i] + cfg.gan.alpha_adv * adv_cotangent[i]
        real_s, fake_s = scores[i]
        metrics.update({f'd_loss_b{k + 1}': d_losses[i], f'g_adv_b{k + 1}': advs[i],
                        f'd_acc_real_b{k + 1}': jnp.mean(real_s > thr),
                        f'd_acc_fake_b{k + 1}': jnp.mean(fake_s <= thr)})
      g_loss = g_loss + cfg.gan.alpha_adv * sum(advs)
    metrics['g_loss'] = g_loss
    grads = pull(cotangent)[0]
    return g_state.apply_gradients(grads=grads, batch_stats=stats), d_state, metrics

  def _scores_vjp(self, d_state, reals, fakes):
    """D scores on [real; fake], the new statistics, and the pullback to (params, fakes)."""
    scores, pull, stats = jax.vjp(lambda dp, f: self._scores(dp, d_state.batch_stats, reals, f),
                                  d_state.params, fakes, has_aux=True)
    return (scores, {**d_state.batch_stats, **stats}), pull

  def _d_update(self, d_state, reals, fakes):
    """A discriminator-only update on fixed features (the extra `disc.steps_per_g`)."""
    (scores, stats), pull = self._scores_vjp(d_state, reals, fakes)
    grads = pull(jax.grad(lambda s: sum(self._d_losses(s)))(scores))[0]
    return d_state.apply_gradients(grads=grads, batch_stats=stats)

  # Logit phases --------------------------------------------------------------------
  def _logit_step(self, g_state, t_state, anchor, batch):
    """Student head (or all of it) with CE / KD; in DML the anchor copy learns back.

    Student: the phase's own `loss` when it has one (the anchor's logits, or None without a
    teacher); else CE; with kd (1 - beta) CE + beta tau^2 KL(T || S) (METHOD.md section 2); in
    DML CE + beta tau^2 KL(T' || S) and the copy T' learns CE + beta_t tau^2 KL(S || T')
    (section 4); with a fresh `peer` (method dml) both learn CE + dml.beta tau^2 KL(other || self)
    from one training-mode forward each, simultaneously (Zhang et al.).
    Otherwise the student's target is the anchor's (or the copy's) inference-mode logits;
    the copy trains on `mutual.batch_size` examples of the batch (a strided sub-batch), each
    side seeing the other's logits as constants.
    """
    p, cfg = self.phase, self.cfg
    first = 0 if p.finetune_all else self.num_blocks
    x, y = batch['image'], batch['label']
    s_stats = g_state.batch_stats['student']
    _, prefix = self.student.apply({'params': g_state.params['student'], 'batch_stats': s_stats},
                                   x, train=False, stop=first, with_head=False)
    h = prefix[-1] if prefix else x
    t_logits = t_feats = None
    if p.peer:  # one training-mode forward of the peer, its target and its own loss's input.
      t_logits, peer_pull, peer_new = jax.vjp(lambda tp: self._peer_forward(t_state, tp, x),
                                              t_state.params, has_aux=True)
    elif p.mutual:
      t_logits, t_feats = self.teacher.apply({'params': t_state.params,
                                              'batch_stats': t_state.batch_stats}, x, train=False)
    elif (p.kd or p.attention or p.feature_aux or p.loss is not None) and anchor is not None:
      t_logits, t_feats = self.teacher.apply(anchor, x, train=False)

    def loss_fn(params):
      (s_logits, s_feats), s_new = self.student.apply(
          {'params': params['student'], 'batch_stats': s_stats}, h, train=True, start=first,
          mutable=['batch_stats'])
      if p.loss is not None:  # a registered method's own loss; the peer is a fixed target.
        s_loss = p.loss(s_logits, t_logits, y, cfg)
      elif p.peer:
        s_loss = losses.dml(s_logits, t_logits, y, cfg.dml.beta, cfg.dml.tau)
      elif p.kd:
        ce_weight = 1.0 if p.mutual or p.full_ce else 1 - cfg.kd.beta
        s_loss = losses.dml(s_logits, t_logits, y, cfg.kd.beta, cfg.kd.tau, ce_weight)
      else:
        s_loss = losses.cross_entropy(s_logits, y)
      if p.attention:  # every block the student computes here (all of them: finetune_all).
        s_loss += cfg.at.beta * sum(losses.attention_transfer(f, t_feats[first + i])
                                    for i, f in enumerate(s_feats))
      c_stats = g_state.batch_stats['connectors']
      if p.feature_aux:  # the block phases' feature terms, kept while the head trains.
        for i, f in enumerate(s_feats):
          out, new_c = self.connectors.apply(
              {'params': params['connectors'], 'batch_stats': c_stats}, f, first + i,
              train=True, mutable=['batch_stats'])
          c_stats = _merge(c_stats, new_c['batch_stats'])
          s_loss += cfg.stages.head_feat * losses.feature_mse(out, t_feats[first + i])
      return s_loss, (s_logits, s_new, c_stats)

    (s_loss, (s_logits, s_new, c_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        g_state.params)
    stats = {**g_state.batch_stats, 'student': _merge(s_stats, s_new['batch_stats']),
             'connectors': c_stats}
    g_state = g_state.apply_gradients(grads=grads, batch_stats=stats)
    metrics = {'loss': s_loss, 'accuracy': jnp.mean(jnp.argmax(s_logits, -1) == y)}
    if p.peer:
      s_logits = jax.lax.stop_gradient(s_logits)
      peer_loss, dlogits = jax.value_and_grad(
          lambda lg: losses.dml(lg, s_logits, y, cfg.dml.beta, cfg.dml.tau))(t_logits)
      t_state = t_state.apply_gradients(grads=peer_pull(dlogits)[0],
                                        batch_stats=peer_new['batch_stats'])
      metrics.update({'peer_loss': peer_loss,
                      'peer_accuracy': jnp.mean(jnp.argmax(t_logits, -1) == y)})
    elif p.mutual:
      t_state, t_metrics = self._copy_update(t_state, x, y, jax.lax.stop_gradient(s_logits))
      metrics.update(t_metrics)
    return g_state, t_state, metrics

  def _peer_forward(self, t_state, params, x):
    """DML's peer on the whole batch in training mode: logits and new BatchNorm statistics."""
    (logits, _), new = self.teacher.apply({'params': params, 'batch_stats': t_state.batch_stats},
                                          x, train=True, mutable=['batch_stats'])
    return logits, new

  def _copy_update(self, t_state, x, y, s_logits):
    """The mutual anchor copy learns CE + beta_t KD towards the student on a sub-batch (with
    `mutual.frozen_bn`, its BatchNorm layers normalise with the anchor's running statistics
    and leave them as they are, as when fine-tuning a pretrained net on small batches)."""
    cfg, n = self.cfg, self.cfg.mutual.batch_size
    xs, ys, ss = sub_batch(x, n), sub_batch(y, n), sub_batch(s_logits, n)

    def loss_fn(params):
      variables = {'params': params, 'batch_stats': t_state.batch_stats}
      if cfg.mutual.frozen_bn:  # BatchNorm keeps the anchor's statistics (inference mode).
        logits, _ = self.teacher.apply(variables, xs, train=False)
        new = {'batch_stats': t_state.batch_stats}
      else:
        (logits, _), new = self.teacher.apply(variables, xs, train=True, mutable=['batch_stats'])
      return losses.dml(logits, ss, ys, cfg.mutual.beta_t, cfg.kd.tau), (logits, new)

    (loss, (logits, new)), grads = jax.value_and_grad(loss_fn, has_aux=True)(t_state.params)
    t_state = t_state.apply_gradients(grads=grads, batch_stats=new['batch_stats'])
    return t_state, {'teacher_copy_loss': loss,
                     'teacher_copy_accuracy': jnp.mean(jnp.argmax(logits, -1) == ys)}
