"""Jitted step functions for the student trainer, built once per phase signature.

Each phase has one jitted step, the same code for every method: what differs is in the
phase's hooks (`core.phase`). Feature phases (`feature_step`): the frozen student prefix
and the teacher's features (no gradients), the projected student features C_k(f^S_k)
once, the phase's weighted feature loss, then the phase's critic (if any) and the student
block(s) updated from that one forward. Logit phases (`logit_step`): the partner's
forward, the student head (or all of it) on the phase's `loss(view)`, then the partner's
own update. Both take (g_state, the state of the phase's critic or partner, the anchor's
variables, the batch, the phase's method state) and return (g_state, the critic's or
partner's state, metrics, the method state); a state a phase does not have is None.
Blocks after the phase's last are not computed, on either network, except where a
critic runs the teacher's upper blocks.

`TRACES` counts how often each step function is traced (tests use it to show that a
step compiles once per block index and is reused by every stage).
"""
import collections
import jax
import jax.numpy as jnp

from msmgan_jax.core import losses, runs
from msmgan_jax.core.phase import Phase, StepView

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

  def __init__(self, cfg, phase: Phase, student, teacher, connectors, num_train: int = 0,
               run_fields: tuple = ()):
    # With per-run fields (`core.runs`), what the step reads of the config, the losses'
    # `view.cfg` included, is the traced run's value of those fields; `static_cfg` is the
    # program's config, for what decides which terms the program computes.
    self.static_cfg, self.phase = cfg, phase
    self.cfg = runs.ConfigView(cfg) if run_fields else cfg
    self.epoch_per_step = cfg.batch_size / num_train if num_train else 0.0
    self.student, self.teacher, self.connectors = student, teacher, connectors
    self.num_blocks = student.num_blocks
    tag = f'{phase.name}{phase.signature}'
    if phase.is_feature:
      self.feature_step = jax.jit(self._counted(self._feature_step, 'feature_step ' + tag),
                                  donate_argnums=(0, 1, 4))
    else:
      self.logit_step = jax.jit(self._counted(self._logit_step, 'logit_step ' + tag),
                                donate_argnums=(0, 1, 4))

  @staticmethod
  def _counted(fn, name):
    """`fn` counted in TRACES, taking the run's per-run values (`core.runs`; None without
    candidates) as a sixth argument, bound while it is traced: an argument, not a closure,
    since a jitted function's trace is cached and reused for every run of the program."""
    def wrapped(g_state, other, anchor, batch, owned=None, hp=None):
      TRACES[name] += 1
      with runs.bound(hp):
        return fn(g_state, other, anchor, batch, owned)
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

  def _feature_step(self, g_state, d_state, anchor, batch, owned=None):
    """One student update of a feature phase, with its critic's update (`d_state` its
    critic's state; a feature phase has no method state: `owned` is passed through).

    The student's projected features are computed once (`jax.vjp`); the student's loss is
    `phase.weight` x the sum over the phase's blocks of `phase.loss(projected, teacher map)`
    (`losses.feature_mse` by default; logged per block as feat_mse_b<k>, or feat_loss_b<k>
    for a phase's own loss), plus the term the phase's critic adds to it and to its
    cotangent (`core.phase.Critic.step`, which also updates `d_state`, the critic's state).
    """
    phase, blocks = self.phase, self.phase.feature_blocks
    k0, k1 = phase.first_trained, max(blocks)
    loss, metric = ((losses.feature_mse, 'feat_mse') if phase.loss is None
                    else (phase.loss, 'feat_loss'))
    x = batch['image']
    if phase.teacher_forced and k0 > 0:  # the anchor's map of block k0 - 1 feeds block k0.
      _, t_feats = self.teacher.apply(anchor, x, train=False, stop=k1 + 1)
      h = self._forced_input(t_feats[k0 - 1], x.shape, k0)
    else:
      _, prefix = self.student.apply({'params': g_state.params['student'],
                                      'batch_stats': g_state.batch_stats['student']},
                                     x, train=False, stop=k0)
      h = prefix[-1] if prefix else x
      _, t_feats = self.teacher.apply(anchor, x, train=False, stop=k1 + 1)
    reals = [t_feats[k] for k in blocks]
    proj, pull, stats = jax.vjp(lambda p: self._project(p, g_state.batch_stats, h),
                                g_state.params, has_aux=True)
    terms, term_pull = jax.vjp(lambda ps: [loss(p, r) for p, r in zip(ps, reals)], proj)
    cotangent = term_pull([jnp.asarray(phase.weight, t.dtype) for t in terms])[0]
    metrics = {f'{metric}_b{k + 1}': t for k, t in zip(blocks, terms)}
    g_loss = phase.weight * sum(terms)
    if phase.critic is not None:
      d_state, cotangent, metrics, adv = phase.critic.step(
          self, d_state, reals, proj, cotangent, metrics, anchor, batch['label'])
      g_loss = g_loss + adv
    metrics['g_loss'] = g_loss
    grads = pull(cotangent)[0]
    return g_state.apply_gradients(grads=grads, batch_stats=stats), d_state, metrics, owned

  def _forced_input(self, t_map, image_shape, k):
    """The anchor's map of block k - 1 (B, H, W, C), without gradient, as the input of
    student block k: it must have the shape the student's block k - 1 gives for images of
    `image_shape` (B, H, W, C) (its channels, and H and W divided by its downsampling), else
    ValueError, at trace time (`methods.msmgan.config.check` refuses such a pair of built-in
    models before a run starts; an external teacher's maps are known only here)."""
    stride = self.student.block_strides[k - 1]
    want = tuple(-(-d // stride) for d in image_shape[1:3]) + (
        self.student.block_channels[k - 1],)
    if tuple(t_map.shape[1:]) != want:
      raise ValueError(f'teacher forcing feeds student block {k + 1} the anchor\'s block {k} '
                       f'map of shape {tuple(t_map.shape[1:])} (H, W, C); the student\'s '
                       f'block {k} gives {want}: the teacher\'s blocks must match the '
                       "student's in channels and downsampling")
    return jax.lax.stop_gradient(t_map)

  # Logit phases --------------------------------------------------------------------
  def _logit_step(self, g_state, t_state, anchor, batch, m_state=None):
    """One update of the student's head (or all of it) on the phase's loss, then its partner's.

    The partner (`phase.partner`) runs first (the anchor in inference mode, or a network the
    method trains); the student minimises `phase.loss(view)` (a `core.phase.StepView` of
    this step, with the batch's `index` where it has one); the phase's method state (if
    any) takes the loss's gradient on its parameters and the buffers the loss set; then the
    partner updates itself from the student's logits, held constant. `t_state` is the
    partner's state, `m_state` the method state's (`core.phase.OwnedState`; None without);
    returns (g_state, t_state, metrics, m_state).
    """
    p, cfg = self.phase, self.cfg
    first = 0 if p.finetune_all else self.num_blocks
    x, y = batch['image'], batch['label']
    s_stats = g_state.batch_stats['student']
    _, prefix = self.student.apply({'params': g_state.params['student'], 'batch_stats': s_stats},
                                   x, train=False, stop=first, with_head=False)
    h = prefix[-1] if prefix else x
    t_logits = t_feats = ctx = None
    if p.partner is not None:
      t_logits, t_feats, ctx = p.partner.forward(self, t_state, anchor, x)

    def loss_fn(params, m_params=None):
      (s_logits, s_feats), s_new = self.student.apply(
          {'params': params['student'], 'batch_stats': s_stats}, h, train=True, start=first,
          mutable=['batch_stats'])
      c_stats = [g_state.batch_stats['connectors']]

      def connect(i, f):
        out, new_c = self.connectors.apply(
            {'params': params['connectors'], 'batch_stats': c_stats[0]}, f, first + i,
            train=True, mutable=['batch_stats'])
        c_stats[0] = _merge(c_stats[0], new_c['batch_stats'])
        return out

      def forced(k):
        if t_feats is None:
          raise ValueError(f'phase {p.name!r}: teacher forcing needs the partner\'s block maps; '
                           'this phase\'s partner gives none')
        if k < first:
          raise ValueError(f'phase {p.name!r}: block {k + 1} does not train in this phase')
        h_in = x if k == 0 else self._forced_input(t_feats[k - 1], x.shape, k)
        (_, out), _ = self.student.apply({'params': params['student'], 'batch_stats': s_stats},
                                         h_in, train=True, start=k, stop=k + 1,
                                         with_head=False, mutable=['batch_stats'])
        return out[0]

      buffers = [None if m_state is None else m_state.buffers]

      def set_buffers(new):
        if jax.tree.structure(new) != jax.tree.structure(buffers[0]):
          raise ValueError(f'phase {p.name!r}: set_buffers got {jax.tree.structure(new)}, '
                           f'its buffers are {jax.tree.structure(buffers[0])}')
        buffers[0] = jax.lax.stop_gradient(new)

      view = StepView(s_logits=s_logits, s_feats=s_feats, t_logits=t_logits, t_feats=t_feats,
                      labels=y, cfg=cfg, static_cfg=self.static_cfg, first=first,
                      connect=connect,
                      t_head=(None if anchor is None else lambda f: self.teacher.apply(
                          anchor, f, train=False, start=self.num_blocks)[0]),
                      step=g_state.step, images_per_step_epoch=self.epoch_per_step,
                      index=batch.get('index'), params=m_params, buffers=buffers[0],
                      set_buffers=None if m_state is None else set_buffers, forced=forced)
      s_loss = p.loss(view)
      return s_loss, (s_logits, s_new, c_stats[0], buffers[0])

    if m_state is None:
      (s_loss, (s_logits, s_new, c_stats, _)), grads = jax.value_and_grad(
          loss_fn, has_aux=True)(g_state.params)
    else:
      (s_loss, (s_logits, s_new, c_stats, new_buffers)), (grads, m_grads) = jax.value_and_grad(
          loss_fn, argnums=(0, 1), has_aux=True)(g_state.params, m_state.params)
      m_state = m_state.apply_gradients(grads=m_grads, buffers=new_buffers)
    stats = {**g_state.batch_stats, 'student': _merge(s_stats, s_new['batch_stats']),
             'connectors': c_stats}
    g_state = g_state.apply_gradients(grads=grads, batch_stats=stats)
    metrics = {'loss': s_loss, 'accuracy': jnp.mean(jnp.argmax(s_logits, -1) == y)}
    if p.partner is not None and p.partner.trains:
      t_state, t_metrics = p.partner.update(self, t_state, ctx, x, y,
                                            jax.lax.stop_gradient(s_logits))
      metrics.update(t_metrics)
    return g_state, t_state, metrics, m_state
