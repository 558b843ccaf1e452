"""MS-MGANs' critics: the adversarial part of its block phases, one discriminator D_k per
phase block (the README's "What the method does", idea 3), each a `core.phase.Critic`
whose train state is `d`.

`GanCritic` (`disc.kind` teacher or conv): a real/fake discriminator on block-k maps.
`TaskCritic` (`disc.kind` task): the anchor's upper network judging the student's maps by
its own output, with an optional K+1-class adversary.
"""
import jax
import jax.numpy as jnp
import optax

from msmgan_jax.core import losses, optim
from msmgan_jax.core.phase import Critic
from msmgan_jax.core.steps import sub_batch
from msmgan_jax.methods.msmgan import losses as gan_losses
from msmgan_jax.methods.msmgan.discriminators import ConvDisc, TaskDisc, TeacherDisc, task_realness


class GanCritic(Critic):
  """One discriminator D_k per phase block (the `d` state): with `disc.kind = 'teacher'`
  the anchor's blocks after k (`disc.trunk_blocks`) and a real/fake unit
  (`discriminators.TeacherDisc`), else a small conv net. Loss `gan.loss` (bce, hinge, lsgan;
  Goodfellow et al. 2014's non-saturating generator loss for bce).

  The discriminators see `disc.batch_size` real and as many fake examples (a strided
  sub-batch) in one training-mode forward, which gives both the discriminator's gradient
  (the fakes are constants to it) and the adversarial gradient on the student's features:
  the two players update simultaneously. `disc.steps_per_g` - 1 extra discriminator
  updates on the same features come first.
  """
  record_key = 'disc_trainable_params'

  @staticmethod
  def modules(cfg, t_model, num_blocks: int) -> list:
    if cfg.disc.kind == 'teacher':
      return [TeacherDisc(t_model, k, cfg.mutual.enabled, cfg.disc.trunk_blocks)
              for k in range(num_blocks)]
    return [ConvDisc(cfg.disc.conv_width) for _ in range(num_blocks)]

  def init_state(self, ctx):
    """D_k for each phase block, its trunk copied from the anchor, under Adam (the trunk at
    disc.trunk_lr_mult x disc.lr, frozen without mutual learning)."""
    cfg, phase, anchor = ctx.cfg, ctx.phase, ctx.anchor
    discs = self.modules(cfg, ctx.t_model, ctx.num_blocks)
    params, stats = {}, {}
    rng = jax.random.key(ctx.seed + 3)
    shapes = jax.eval_shape(lambda v: ctx.t_model.apply(
        v, jnp.zeros((1,) + ctx.image_shape)), anchor.variables)[1]
    inits = ctx.cache.setdefault('disc_inits', {})
    for k in phase.feature_blocks:
      if k not in inits:  # compiled once per block, reused by every stage.
        inits[k] = jax.jit(discs[k].init)
      v = inits[k](jax.random.fold_in(rng, k), jnp.zeros(shapes[k].shape, shapes[k].dtype))
      p, s = dict(v['params']), dict(v.get('batch_stats', {}))
      if cfg.disc.kind == 'teacher':
        copy = jax.tree.map(jnp.copy, anchor.variables)  # steps donate states; anchors stay.
        p['trunk'] = {n: copy['params'][n] for n in p.get('trunk', {})}
        if 'trunk' in s:
          s['trunk'] = {n: copy['batch_stats'][n] for n in s['trunk']}
      params[f'disc{k + 1}'], stats[f'disc{k + 1}'] = p, s
    adam = lambda lr: optax.adam(lr, b1=cfg.disc.b1)
    trunk = 'trunk' if cfg.mutual.enabled else 'frozen'
    tx = ctx.tx(('d', phase.signature), lambda: optim.masked(
        params, [(r'disc\d+/trunk/.*', trunk), (r'(?!disc\d+/trunk/).*', 'unit')],
        {'trunk': adam(cfg.disc.lr * cfg.disc.trunk_lr_mult), 'unit': adam(cfg.disc.lr)}))
    return optim.TrainState.create(apply_fn=None, params=params, batch_stats=stats, tx=tx)

  def step(self, steps, d_state, reals, proj, cotangent, metrics, anchor, labels):
    cfg, blocks = steps.cfg, steps.phase.feature_blocks
    discs = self.modules(cfg, steps.teacher, steps.num_blocks)
    n = cfg.disc.batch_size
    d_reals = [sub_batch(r, n) for r in reals]
    fakes, fake_pull = jax.vjp(lambda ps: [sub_batch(p, n) for p in ps], proj)
    for _ in range(cfg.disc.steps_per_g - 1):
      d_state = _d_update(cfg, discs, blocks, d_state, d_reals, fakes)
    (scores, d_stats), d_pull = _scores_vjp(discs, blocks, d_state, d_reals, fakes)
    d_losses, d_loss_pull = jax.vjp(lambda s: _d_losses(cfg, s), scores)
    advs, adv_pull = jax.vjp(lambda s: _g_advs(cfg, s), scores)
    ones = lambda xs: [jnp.ones_like(x) for x in xs]
    d_grads = d_pull(d_loss_pull(ones(d_losses))[0])[0]
    # The adversarial gradient on the sub-batch, put back where the sub-batch came from.
    adv_cotangent = fake_pull(d_pull(adv_pull(ones(advs))[0])[1])[0]
    d_state = d_state.apply_gradients(grads=d_grads, batch_stats=d_stats)
    thr = gan_losses.gan_threshold(cfg.gan.loss)
    for i, k in enumerate(blocks):
      cotangent[i] = cotangent[i] + cfg.gan.alpha_adv * adv_cotangent[i]
      real_s, fake_s = scores[i]
      metrics.update({f'd_loss_b{k + 1}': d_losses[i], f'g_adv_b{k + 1}': advs[i],
                      f'd_acc_real_b{k + 1}': jnp.mean(real_s > thr),
                      f'd_acc_fake_b{k + 1}': jnp.mean(fake_s <= thr)})
    return d_state, cotangent, metrics, cfg.gan.alpha_adv * sum(advs)


def _scores(discs, blocks, d_params, d_stats, reals, fakes):
  """Each phase block's D_k on [real; fake] (training mode): scores and new statistics."""
  scores, stats = [], {}
  for i, k in enumerate(blocks):
    name = f'disc{k + 1}'
    f, r = losses.align(fakes[i], reals[i])
    s, new = discs[k].apply({'params': d_params[name], 'batch_stats': d_stats[name]},
                            jnp.concatenate([r, f]), train=True, mutable=['batch_stats'])
    scores.append(jnp.split(s, 2))
    stats[name] = new['batch_stats']
  return scores, stats


def _d_losses(cfg, scores):
  return [gan_losses.gan_d(cfg.gan.loss, real, fake) for real, fake in scores]


def _g_advs(cfg, scores):
  return [gan_losses.gan_g(cfg.gan.loss, fake) for _, fake in scores]


def _scores_vjp(discs, blocks, d_state, reals, fakes):
  """D scores on [real; fake], the new statistics, and the pullback to (params, fakes)."""
  scores, pull, stats = jax.vjp(
      lambda dp, f: _scores(discs, blocks, dp, d_state.batch_stats, reals, f),
      d_state.params, fakes, has_aux=True)
  return (scores, {**d_state.batch_stats, **stats}), pull


def _d_update(cfg, discs, blocks, d_state, reals, fakes):
  """A discriminator-only update on fixed features (the extra `disc.steps_per_g`)."""
  (scores, stats), pull = _scores_vjp(discs, blocks, d_state, reals, fakes)
  grads = pull(jax.grad(lambda s: sum(_d_losses(cfg, s)))(scores))[0]
  return d_state.apply_gradients(grads=grads, batch_stats=stats)


GAN = GanCritic()


class TaskCritic(Critic):
  """D_k as the teacher judging the student's block-k features by its own task output.

  Task term (every example, the frozen anchor in inference mode): the student's connected
  map goes through the anchor's blocks k+1..K and head, and is pulled towards what the
  anchor outputs on its own map: gan.alpha_task x tau^2 KL(T_up(f_T^k) || T_up(C_k(f_S^k)))
  (progressive blockwise KD, Wang et al. IJCAI 2018; SRRL, Yang et al. ICLR 2021, at every
  block). Adversarial term (gan.alpha_adv > 0): D_k (`discriminators.TaskDisc`, a copy of the
  same upper network, its BatchNorm statistics the anchor's) is a K+1-class discriminator
  (Salimans et al. 2016): realness logsumexp of its C logits (`task_realness`; with
  `gan.relativistic`, each set's realness less the other set's mean, `losses.relativistic`),
  trained with `gan.loss` on `disc.batch_size` real and fake maps plus cross-entropy on the
  real maps' labels, so it starts as the teacher and stays a classifier. Its weights learn
  at disc.lr x disc.trunk_lr_mult with mutual learning (`mutual.enabled`), else stay the
  anchor's. The student gets gan.alpha_adv x the generator loss on its fake realness.
  """
  record_key = 'disc_trainable_params'

  @staticmethod
  def modules(steps) -> list:
    return [TaskDisc(steps.teacher, k) for k in range(steps.num_blocks)]

  def init_state(self, ctx):
    """D_k for each phase block: the anchor's blocks k+1..K and head (None without the
    adversarial term: the task term needs only the frozen anchor)."""
    cfg, phase = ctx.cfg, ctx.phase
    if cfg.gan.alpha_adv <= 0:
      return None
    copy = jax.tree.map(jnp.copy, ctx.anchor.variables)  # steps donate states; anchors stay.
    names = list(ctx.t_model.block_names)
    params, stats = {}, {}
    for k in phase.feature_blocks:
      upper = names[k + 1:] + ['head']
      params[f'disc{k + 1}'] = {'trunk': {n: copy['params'][n] for n in upper}}
      stats[f'disc{k + 1}'] = {'trunk': {n: copy['batch_stats'][n] for n in upper
                                         if n in copy['batch_stats']}}
    label = 'trunk' if cfg.mutual.enabled else 'frozen'
    tx = ctx.tx(('d_task', phase.signature), lambda: optim.masked(
        params, [('.*', label)],
        {'trunk': optax.adam(cfg.disc.lr * cfg.disc.trunk_lr_mult, b1=cfg.disc.b1)}))
    return optim.TrainState.create(apply_fn=None, params=params, batch_stats=stats, tx=tx)

  def step(self, steps, d_state, reals, proj, cotangent, metrics, anchor, labels):
    cfg, blocks, tau = steps.cfg, steps.phase.feature_blocks, steps.cfg.msmgan.tau
    g_loss = 0.0
    if cfg.gan.alpha_task > 0:
      t_logits = [steps.teacher.apply(anchor, r, train=False, start=k + 1)[0]
                  for k, r in zip(blocks, reals)]

      def task(ps):
        return [losses.kd(steps.teacher.apply(anchor, losses.align(p, r)[0], train=False,
                                              start=k + 1)[0], t, tau)
                for k, p, r, t in zip(blocks, ps, reals, t_logits)]
      kls, kl_pull = jax.vjp(task, proj)
      grads = kl_pull([jnp.asarray(cfg.gan.alpha_task, kl.dtype) for kl in kls])[0]
      cotangent = [c + g for c, g in zip(cotangent, grads)]
      metrics.update({f'task_kl_b{k + 1}': kl for k, kl in zip(blocks, kls)})
      g_loss = g_loss + cfg.gan.alpha_task * sum(kls)
    if d_state is None:
      return d_state, cotangent, metrics, g_loss
    discs, n = self.modules(steps), cfg.disc.batch_size
    d_reals, ys = [sub_batch(r, n) for r in reals], sub_batch(labels, n)
    fakes, fake_pull = jax.vjp(lambda ps: [sub_batch(p, n) for p in ps], proj)

    def logits_of(d_params, fs):
      out = []
      for i, k in enumerate(blocks):
        v = {'params': d_params[f'disc{k + 1}'], 'batch_stats': d_state.batch_stats[f'disc{k + 1}']}
        f, r = losses.align(fs[i], d_reals[i])
        out.append((discs[k].apply(v, r), discs[k].apply(v, f)))
      return out

    def realness(r, f):
      r, f = task_realness(r), task_realness(f)
      return gan_losses.relativistic(r, f) if cfg.gan.relativistic else (r, f)

    def d_losses(lg):
      return [gan_losses.gan_d(cfg.gan.loss, *realness(r, f)) + losses.cross_entropy(r, ys)
              for r, f in lg]

    def g_advs(lg):
      if cfg.gan.relativistic:  # RaGAN: the generator's loss is the discriminator's, swapped.
        return [gan_losses.gan_d(cfg.gan.loss, *reversed(realness(r, f))) for r, f in lg]
      return [gan_losses.gan_g(cfg.gan.loss, task_realness(f)) for _, f in lg]

    ones = lambda xs: [jnp.ones_like(x) for x in xs]
    for _ in range(cfg.disc.steps_per_g - 1):  # extra discriminator updates on these maps.
      lg, pull = jax.vjp(lambda dp: logits_of(dp, fakes), d_state.params)
      dl, dl_pull = jax.vjp(d_losses, lg)
      d_state = d_state.apply_gradients(grads=pull(dl_pull(ones(dl))[0])[0],
                                        batch_stats=d_state.batch_stats)
    lg, pull = jax.vjp(logits_of, d_state.params, fakes)
    dl, dl_pull = jax.vjp(d_losses, lg)
    advs, adv_pull = jax.vjp(g_advs, lg)
    d_grads = pull(dl_pull(ones(dl))[0])[0]
    adv_cotangent = fake_pull(pull(adv_pull(ones(advs))[0])[1])[0]
    d_state = d_state.apply_gradients(grads=d_grads, batch_stats=d_state.batch_stats)
    thr = gan_losses.gan_threshold(cfg.gan.loss)
    for i, k in enumerate(blocks):
      cotangent[i] = cotangent[i] + cfg.gan.alpha_adv * adv_cotangent[i]
      real_l, fake_l = lg[i]
      real_s, fake_s = realness(real_l, fake_l)
      metrics.update({f'd_loss_b{k + 1}': dl[i], f'g_adv_b{k + 1}': advs[i],
                      f'd_acc_real_b{k + 1}': jnp.mean(real_s > thr),
                      f'd_acc_fake_b{k + 1}': jnp.mean(fake_s <= thr),
                      f'd_class_acc_b{k + 1}': jnp.mean(jnp.argmax(real_l, -1) == ys)})
    return d_state, cotangent, metrics, g_loss + cfg.gan.alpha_adv * sum(advs)


TASK = TaskCritic()
