"""Jitted step functions for the student trainer, built once per phase signature.

Feature phases use three functions: `prep` (the frozen student prefix and the teacher
features the losses need, no gradients), `d_step` (discriminators) and `g_step`
(student block(s) + connectors). Logit phases use `logit_step` (student, and the
mutual teacher copy when present). Frozen student blocks run in inference mode outside
the differentiated function; blocks after the phase's last are not computed, on either
network, except the teacher's upper blocks inside a teacher discriminator.

`TRACES` counts how often each step function is traced (tests use it to show that a
step compiles once per block index and is reused by every stage).
"""
import collections
import jax
import jax.numpy as jnp

from msmgan_jax import losses
from msmgan_jax.phases import Phase

TRACES = collections.Counter()


def _merge(old: dict, new: dict) -> dict:
  return {**old, **new}


class PhaseSteps:
  """The compiled steps of one phase signature (see the module docstring)."""

  def __init__(self, cfg, phase: Phase, student, teacher, connectors, discs):
    self.cfg, self.phase = cfg, phase
    self.student, self.teacher, self.connectors, self.discs = student, teacher, connectors, discs
    self.num_blocks = student.num_blocks
    tag = f'{phase.name}{phase.signature}'
    if phase.is_feature:
      self.prep = jax.jit(self._counted(self._prep, 'prep ' + tag))
      self.g_step = jax.jit(self._counted(self._g_step, 'g_step ' + tag), donate_argnums=0)
      self.d_step = jax.jit(self._counted(self._d_step, 'd_step ' + tag), donate_argnums=0)
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
  def _first(self) -> int:
    return min(self.phase.feature_blocks)

  def _prep(self, anchor, g_state, batch):
    """Student prefix (frozen blocks, inference mode) and the teacher's features."""
    k0, k1 = self._first(), max(self.phase.feature_blocks)
    s_vars = {'params': g_state.params['student'], 'batch_stats': g_state.batch_stats['student']}
    _, prefix = self.student.apply(s_vars, batch['image'], train=False, stop=k0)
    h = prefix[-1] if prefix else batch['image']
    _, t_feats = self.teacher.apply(anchor, batch['image'], train=False, stop=k1 + 1)
    return {'h': h, 'real': [t_feats[k] for k in self.phase.feature_blocks]}

  def _project(self, params, batch_stats, h):
    """C_k(f^S_k) for each phase block (training mode) and the new BatchNorm statistics."""
    k0, k1 = self._first(), max(self.phase.feature_blocks)
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

  def _disc(self, d_params, d_stats, k, x, train):
    name = f'disc{k + 1}'
    variables = {'params': d_params[name], 'batch_stats': d_stats[name]}
    if train:
      scores, new = self.discs[k].apply(variables, x, train=True, mutable=['batch_stats'])
      return scores, new['batch_stats']
    return self.discs[k].apply(variables, x, train=False), d_stats[name]

  def _d_step(self, d_state, g_state, prep):
    """Discriminators: teacher features are real, projected student features are fake."""
    fake, _ = self._project(g_state.params, g_state.batch_stats, prep['h'])
    kind = self.cfg.gan.loss
    thr = losses.gan_threshold(kind)

    def loss_fn(d_params):
      total, stats, metrics = 0.0, {}, {}
      for i, k in enumerate(self.phase.feature_blocks):
        f, r = losses.align(jax.lax.stop_gradient(fake[i]), prep['real'][i])
        scores, stats[f'disc{k + 1}'] = self._disc(d_params, d_state.batch_stats, k,
                                                   jnp.concatenate([r, f]), train=True)
        d_real, d_fake = jnp.split(scores, 2)
        loss = losses.gan_d(kind, d_real, d_fake)
        total += loss
        metrics.update({f'd_loss_b{k + 1}': loss,
                        f'd_acc_real_b{k + 1}': jnp.mean(d_real > thr),
                        f'd_acc_fake_b{k + 1}': jnp.mean(d_fake <= thr)})
      return total, (stats, metrics)

    (_, (stats, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(d_state.params)
    return d_state.apply_gradients(grads=grads, batch_stats=stats), metrics

  def _g_step(self, g_state, d_state, prep):
    """Student block(s) + connectors: feature MSE (+ adversarial term) per block."""
    gan = self.cfg.gan

    def loss_fn(params):
      proj, stats = self._project(params, g_state.batch_stats, prep['h'])
      total, metrics = 0.0, {}
      for i, k in enumerate(self.phase.feature_blocks):
        mse = losses.feature_mse(proj[i], prep['real'][i])
        total += gan.alpha_feat * mse
        metrics[f'feat_mse_b{k + 1}'] = mse
        if self.phase.adversarial:
          f, _ = losses.align(proj[i], prep['real'][i])
          # D judges the student's features with its running BatchNorm statistics, the
          # normalisation real teacher features get; its d_step trains on real+fake batches.
          scores, _ = self._disc(d_state.params, d_state.batch_stats, k, f, train=False)
          adv = losses.gan_g(gan.loss, scores)
          total += gan.alpha_adv * adv
          metrics[f'g_adv_b{k + 1}'] = adv
      metrics['g_loss'] = total
      return total, (stats, metrics)

    (_, (stats, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(g_state.params)
    return g_state.apply_gradients(grads=grads, batch_stats=stats), metrics

  # Logit phases --------------------------------------------------------------------
  def _logit_step(self, g_state, t_state, anchor, batch):
    """Student head (or all of it) with CE / KD; in DML the anchor copy learns back.

    Student: the phase's own `loss` when it has one (the anchor's logits, or None without a
    teacher); else CE; with kd (1 - beta) CE + beta tau^2 KL(T || S) (METHOD.md section 2); in
    DML CE + beta tau^2 KL(T' || S) and the copy T' learns CE + beta_t tau^2 KL(S || T')
    (section 4). Each side sees the other's logits through a
    stop-gradient, so one joint gradient gives both updates from one forward each.
    """
    p, cfg = self.phase, self.cfg
    first = 0 if p.finetune_all else self.num_blocks
    x, y = batch['image'], batch['label']
    s_stats = g_state.batch_stats['student']
    _, prefix = self.student.apply({'params': g_state.params['student'], 'batch_stats': s_stats},
                                   x, train=False, stop=first, with_head=False)
    h = prefix[-1] if prefix else x
    anchor_logits = None
    if (p.kd or p.loss is not None) and not p.mutual and anchor is not None:
      anchor_logits, _ = self.teacher.apply(anchor, x, train=False)

    def loss_fn(params, t_params):
      (s_logits, _), s_new = self.student.apply(
          {'params': params['student'], 'batch_stats': s_stats}, h, train=True, start=first,
          mutable=['batch_stats'])
      t_logits, t_new, t_loss = anchor_logits, None, 0.0
      if p.mutual:
        (t_logits, _), t_new = self.teacher.apply(
            {'params': t_params, 'batch_stats': t_state.batch_stats}, x, train=True,
            mutable=['batch_stats'])
        t_loss = losses.dml(t_logits, s_logits, y, cfg.mutual.beta_t, cfg.kd.tau)
      if p.loss is not None:  # a registered method's own loss; the peer is a fixed target.
        s_loss = p.loss(s_logits, None if t_logits is None else jax.lax.stop_gradient(t_logits),
                        y, cfg)
      elif p.kd:
        ce_weight = 1.0 if p.mutual else 1 - cfg.kd.beta
        s_loss = losses.dml(s_logits, t_logits, y, cfg.kd.beta, cfg.kd.tau, ce_weight)
      else:
        s_loss = losses.cross_entropy(s_logits, y)
      return s_loss + t_loss, (s_loss, t_loss, s_logits, t_logits, s_new, t_new)

    t_params = t_state.params if p.mutual else None
    (_, (s_loss, t_loss, s_logits, t_logits, s_new, t_new)), (grads, t_grads) = jax.value_and_grad(
        loss_fn, argnums=(0, 1), has_aux=True)(g_state.params, t_params)
    stats = {**g_state.batch_stats, 'student': _merge(s_stats, s_new['batch_stats'])}
    g_state = g_state.apply_gradients(grads=grads, batch_stats=stats)
    metrics = {'loss': s_loss, 'accuracy': jnp.mean(jnp.argmax(s_logits, -1) == y)}
    if p.mutual:
      t_state = t_state.apply_gradients(grads=t_grads, batch_stats=t_new['batch_stats'])
      metrics.update({'teacher_copy_loss': t_loss,
                      'teacher_copy_accuracy': jnp.mean(jnp.argmax(t_logits, -1) == y)})
    return g_state, t_state, metrics
