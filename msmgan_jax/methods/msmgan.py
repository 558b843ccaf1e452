"""`msmgan`: MS-MGANs (Huang et al., Computer Science 2022), as reconstructed in the README's
"What the method does".

Per stage (one teacher anchor each, weakest first):
- greedy block phases `block_k` (`stages.greedy`; only in the first `stages.block_stages`
  stages): student block k (and its connector) regresses the anchor's block-k features,
  gan.alpha_feat x MSE, against a discriminator D_k with weight gan.alpha_adv: `GanCritic`
  (the anchor's next block(s) and a real/fake unit, `disc.kind = 'teacher'`, or a conv net)
  or `TaskCritic` (`disc.kind = 'task'`: the anchor's blocks k+1..K and head, a K+1-class
  critic, plus the task term gan.alpha_task x tau^2 KL(T(x) || T_up(C_k(f_S))));
- the head phase: CE + kd.beta tau^2 KL from the logits of a trainable copy of the anchor
  (`mutual.enabled`; `MutualCopy`), which learns CE + mutual.beta_t tau^2 KL towards the
  student (deep mutual learning, Zhang et al. 2018), plus stages.head_feat x the block
  features' MSE and gan.head_task x the last block's task term where those are > 0.
Ablations (`ABLATIONS`) switch one part off each.
"""
import jax
import jax.numpy as jnp
import ml_collections
import optax

from msmgan_jax.core import losses, models, optim
from msmgan_jax.core.phase import ANCHOR, Critic, Partner, Phase
from msmgan_jax.core.steps import sub_batch
from msmgan_jax.methods.registry import (check_finite, check_sub_batch, register_group,
                                         register_method, require)

GAN_LOSSES = ('bce', 'hinge', 'lsgan')
DISC_KINDS = ('teacher', 'conv', 'task')

def single_stage(cfg) -> dict:
  """One stage (the final anchor) that keeps the full method's block and head budgets:
  each block phase gets the steps it had over all of the full method's stages with block
  phases (stage share x phase share, summed), the head the rest; only the stages (the
  anchors' curriculum) change."""
  num, shares = cfg.stages.num, tuple(cfg.stages.phase_shares)
  stage = tuple(cfg.stages.stage_shares) or (1.0 / num,) * num
  b = cfg.stages.block_stages
  if b == 0:  # no block phases to keep.
    return {'stages.num': 1, 'stages.stage_shares': ()}
  with_blocks = sum(stage[:num if b < 0 else min(b, num)])
  blocks = tuple(round(x * with_blocks, 6) for x in shares[:-1])
  return {'stages.num': 1, 'stages.stage_shares': (), 'stages.block_stages': -1,
          'stages.phase_shares': blocks + (round(1.0 - sum(blocks), 6),)}


# METHOD.md's ablations of MS-MGANs: the overrides that make each one (a function of the
# full method's config where a budget must stay the same).
ABLATIONS = {
    'single_stage': single_stage,
    'end_to_end': {'stages.greedy': False},
    'no_gan': {'gan.alpha_adv': 0.0},
    'no_mutual': {'mutual.enabled': False},
    'no_blocks': {'stages.block_stages': 0},  # no greedy block phase (nor GAN) in any stage.
}


def defaults_gan(c: ml_collections.ConfigDict) -> None:
  c.gan = g = ml_collections.ConfigDict()
  g.loss = 'bce'                  # bce (non-saturating) | hinge | lsgan.
  g.alpha_feat = 1.0              # weight of the feature MSE through the connector.
  g.alpha_adv = 0.1               # weight of the adversarial term (0 = ablation no GAN).
  g.alpha_task = 0.0              # disc.kind task: weight of the task KL (teacher's upper net).
  g.head_task = 0.0               # head phase: + this x the last block's task KL (its head).
  g.relativistic = False          # disc.kind task: relativistic average realness (RaGAN).


def defaults_disc(c: ml_collections.ConfigDict) -> None:
  c.disc = ds = ml_collections.ConfigDict()
  ds.kind = 'teacher'             # teacher (anchor's upper blocks + unit) | conv | task.
  ds.lr = 1e-3                    # Adam learning rate of the real/fake unit (and conv net).
  ds.b1 = 0.5                     # Adam beta1.
  ds.trunk_lr_mult = 0.1          # the teacher trunk learns at this multiple of disc.lr.
  ds.steps_per_g = 1              # discriminator updates per student update.
  ds.batch_size = 16              # real and as many fake examples D_k sees per step (0 = batch).
  ds.trunk_blocks = 1             # teacher blocks after k in D_k (0 = all of them, k+1..K).
  ds.conv_width = 64              # channels of the conv discriminator.
  ds.stuck_logs = 5               # warn when a D accuracy sits at 0 or 1 this many logs (0 = off).


def defaults_mutual(c: ml_collections.ConfigDict) -> None:
  c.mutual = mu = ml_collections.ConfigDict()
  mu.enabled = True               # DML head phase + learning D trunks (False = ablation no mutual).
  mu.beta_t = 0.1                 # weight of KL(S || T') for the teacher copy.
  mu.lr = 0.001                   # peak SGD learning rate of the teacher copy.
  mu.batch_size = 16              # examples of each batch the teacher copy trains on (0 = all).
  mu.frozen_bn = False            # the copy's BatchNorm keeps the anchor's statistics (inference mode).


def check_gan(cfg) -> None:
  check_finite(cfg, ('gan.alpha_feat', 'gan.alpha_adv', 'gan.alpha_task', 'gan.head_task'))


def check_disc(cfg) -> None:
  check_finite(cfg, ('disc.lr', 'disc.b1', 'disc.trunk_lr_mult'))
  require(isinstance(cfg.disc.stuck_logs, int) and cfg.disc.stuck_logs >= 0, 'disc.stuck_logs',
          f'must be an integer >= 0, got {cfg.disc.stuck_logs!r}')
  check_sub_batch(cfg, 'disc.batch_size')


def check_mutual(cfg) -> None:
  check_finite(cfg, ('mutual.beta_t', 'mutual.lr'))
  check_sub_batch(cfg, 'mutual.batch_size')


def check(cfg) -> None:
  """The fields only msmgan reads (run when it is the chosen method)."""
  k = models.create_model(cfg.student.model, 10).num_blocks
  shares = tuple(cfg.stages.phase_shares)
  require(len(shares) == k + 1 and all(x > 0 for x in shares), 'stages.phase_shares',
          f'needs {k + 1} positive shares (block_1..block_{k}, head) for {cfg.student.model}, '
          f'got {shares}')
  require(abs(sum(shares) - 1) < 1e-6, 'stages.phase_shares', f'{shares} must sum to 1')
  b = cfg.stages.block_stages
  require(isinstance(b, int) and not isinstance(b, bool) and b >= -1, 'stages.block_stages',
          f'must be -1 (every stage) or an integer >= 0 (that many leading stages; '
          f'stages.num or more: every stage), got {b!r}')
  require(cfg.gan.loss in GAN_LOSSES, 'gan.loss', f'{cfg.gan.loss!r} is not one of {GAN_LOSSES}')
  require(cfg.disc.kind in DISC_KINDS, 'disc.kind',
          f'{cfg.disc.kind!r} is not one of {DISC_KINDS}')
  require(isinstance(cfg.disc.steps_per_g, int) and cfg.disc.steps_per_g >= 1,
          'disc.steps_per_g', 'must be an integer >= 1')
  require(0 <= cfg.disc.b1 < 1, 'disc.b1', f'must be in [0, 1), got {cfg.disc.b1}')
  require(isinstance(cfg.disc.trunk_blocks, int) and cfg.disc.trunk_blocks >= 0,
          'disc.trunk_blocks', f'must be an integer >= 0, got {cfg.disc.trunk_blocks!r}')


# The head phase's losses ------------------------------------------------------------------
def head_loss(view):
  """CE (weight 1, with or without the mutual copy: the no_mutual ablation changes mutual
  learning only) + kd.beta tau^2 KL(T' || S) from the copy's (or the anchor's) logits."""
  cfg = view.cfg
  return losses.dml(view.s_logits, view.t_logits, view.labels, cfg.kd.beta, cfg.kd.tau, 1.0)


def head_loss_with_features(view):
  """`head_loss` + stages.head_feat x the feature MSE of every block through its connector
  (the block phases' feature terms, kept while the head trains) + gan.head_task x the last
  block's task term: tau^2 KL(T || T_head(C_K(f_S^K))), the anchor's (frozen) head on the
  student's connected last map against the partner's logits (SRRL's idea, Yang et al.
  ICLR 2021, as a KL; the last block's critic term kept while the head trains)."""
  cfg = view.cfg
  s_loss = head_loss(view)
  last = len(view.s_feats) - 1
  for i, f in enumerate(view.s_feats):
    if cfg.stages.head_feat <= 0 and i != last:
      continue
    out = view.connect(i, f)
    if cfg.stages.head_feat > 0:
      s_loss += cfg.stages.head_feat * losses.feature_mse(out, view.t_feats[view.first + i])
    if i == last and cfg.gan.head_task > 0:
      s_loss += cfg.gan.head_task * losses.kd(view.t_head(out),
                                              jax.lax.stop_gradient(view.t_logits), cfg.kd.tau)
  return s_loss


class MutualCopy(Partner):
  """A trainable copy of the stage's anchor (the `t` state): the student's KD target are its
  inference-mode logits on the whole batch; it learns CE + mutual.beta_t tau^2 KL(S || T')
  on `mutual.batch_size` examples of the batch (a strided sub-batch)."""
  trains = True
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
      return losses.dml(logits, ss, ys, cfg.mutual.beta_t, cfg.kd.tau), (logits, new)

    (loss, (logits, new)), grads = jax.value_and_grad(loss_fn, has_aux=True)(t_state.params)
    t_state = t_state.apply_gradients(grads=grads, batch_stats=new['batch_stats'])
    return t_state, {'teacher_copy_loss': loss,
                     'teacher_copy_accuracy': jnp.mean(jnp.argmax(logits, -1) == ys)}


COPY = MutualCopy()


class GanCritic(Critic):
  """One discriminator D_k per phase block (the `d` state): with `disc.kind = 'teacher'`
  the anchor's blocks after k (`disc.trunk_blocks`) and a real/fake unit
  (`core.models.TeacherDisc`), else a small conv net. Loss `gan.loss` (bce, hinge, lsgan;
  Goodfellow et al. 2014's non-saturating generator loss for bce).

  The discriminators see `disc.batch_size` real and as many fake examples (a strided
  sub-batch) in one training-mode forward, which gives both the discriminator's gradient
  (the fakes are constants to it) and the adversarial gradient on the student's features:
  the two players update simultaneously. `disc.steps_per_g` - 1 extra discriminator
  updates on the same features come first.
  """

  @staticmethod
  def modules(cfg, t_model, num_blocks: int) -> list:
    if cfg.disc.kind == 'teacher':
      return [models.TeacherDisc(t_model, k, cfg.mutual.enabled, cfg.disc.trunk_blocks)
              for k in range(num_blocks)]
    return [models.ConvDisc(cfg.disc.conv_width) for _ in range(num_blocks)]

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
    thr = losses.gan_threshold(cfg.gan.loss)
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
  return [losses.gan_d(cfg.gan.loss, real, fake) for real, fake in scores]


def _g_advs(cfg, scores):
  return [losses.gan_g(cfg.gan.loss, fake) for _, fake in scores]


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
  block). Adversarial term (gan.alpha_adv > 0): D_k (`core.models.TaskDisc`, a copy of the
  same upper network, its BatchNorm statistics the anchor's) is a K+1-class discriminator
  (Salimans et al. 2016): realness logsumexp of its C logits (`models.task_realness`; with
  `gan.relativistic`, each set's realness less the other set's mean, `losses.relativistic`),
  trained with `gan.loss` on `disc.batch_size` real and fake maps plus cross-entropy on the
  real maps' labels, so it starts as the teacher and stays a classifier. Its weights learn
  at disc.lr x disc.trunk_lr_mult with mutual learning (`mutual.enabled`), else stay the
  anchor's. The student gets gan.alpha_adv x the generator loss on its fake realness.
  """

  @staticmethod
  def modules(steps) -> list:
    return [models.TaskDisc(steps.teacher, k) for k in range(steps.num_blocks)]

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
    cfg, blocks, tau = steps.cfg, steps.phase.feature_blocks, steps.cfg.kd.tau
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
      r, f = models.task_realness(r), models.task_realness(f)
      return losses.relativistic(r, f) if cfg.gan.relativistic else (r, f)

    def d_losses(lg):
      return [losses.gan_d(cfg.gan.loss, *realness(r, f)) + losses.cross_entropy(r, ys)
              for r, f in lg]

    def g_advs(lg):
      if cfg.gan.relativistic:  # RaGAN: the generator's loss is the discriminator's, swapped.
        return [losses.gan_d(cfg.gan.loss, *reversed(realness(r, f))) for r, f in lg]
      return [losses.gan_g(cfg.gan.loss, models.task_realness(f)) for _, f in lg]

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
    thr = losses.gan_threshold(cfg.gan.loss)
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


def _phases(cfg, num_blocks: int, stage: int) -> list:
  """Greedy block phases (one GAN per block), then the (mutual) head phase. With
  `stages.block_stages` >= 0 only that many leading stages run the block phases; the later
  ones are one head phase (its feature terms, with `stages.head_feat`, kept as auxiliaries)."""
  shares = tuple(cfg.stages.phase_shares)
  if cfg.disc.kind == 'task':  # the task term acts without the adversarial one (no_gan).
    critic = TASK if cfg.gan.alpha_adv > 0 or cfg.gan.alpha_task > 0 else None
  else:
    critic = GAN if cfg.gan.alpha_adv > 0 else None
  if 0 <= cfg.stages.block_stages <= stage:
    blocks, shares = [], (0.0,) * num_blocks + (1.0,)
  elif cfg.stages.greedy:
    blocks = [Phase(f'block_{k + 1}', shares[k], (k,), critic=critic)
              for k in range(num_blocks)]
  else:
    blocks = [Phase('blocks', sum(shares[:num_blocks]), tuple(range(num_blocks)),
                    critic=critic)]
  feature_aux = (cfg.stages.head_feat > 0 or cfg.gan.head_task > 0) and cfg.stages.finetune_all
  head = Phase('head', shares[num_blocks],
               loss=head_loss_with_features if feature_aux else head_loss,
               partner=COPY if cfg.mutual.enabled else ANCHOR,
               finetune_all=cfg.stages.finetune_all, trains_connectors=feature_aux)
  return blocks + [head]


def variant(cfg) -> list:
  """Which of `ABLATIONS` `cfg` is (empty for the full method)."""
  out = []
  blocks = cfg.stages.block_stages != 0  # without block phases greedy and GAN do nothing.
  if cfg.stages.num == 1:
    out.append('single_stage')
  if not cfg.stages.greedy and blocks:
    out.append('end_to_end')
  if cfg.gan.alpha_adv == 0 and blocks:
    out.append('no_gan')
  if not cfg.mutual.enabled:
    out.append('no_mutual')
  if cfg.stages.block_stages == 0:
    out.append('no_blocks')
  return out


def needs_network(cfg) -> str:
  """Why this config needs the teacher as a network of blocks ('' when it does not): its
  discriminators run the anchor's upper blocks, mutual learning trains a copy of it, the
  head phase's task term runs its head."""
  why = []
  gan = cfg.gan.alpha_adv > 0 or (cfg.disc.kind == 'task' and cfg.gan.alpha_task > 0)
  if cfg.stages.block_stages != 0 and gan and cfg.disc.kind in ('teacher', 'task'):
    why.append(f'its discriminators run the teacher\'s upper blocks (disc.kind '
               f'{cfg.disc.kind}; disc.kind=conv does not)')
  if cfg.mutual.enabled:
    why.append('mutual learning trains a copy of the teacher (mutual.enabled=False does not)')
  if cfg.gan.head_task > 0:
    why.append('gan.head_task runs the teacher\'s head on student maps')
  return '; '.join(why)


register_group('gan', defaults_gan, check_gan)
register_group('disc', defaults_disc, check_disc)
register_group('mutual', defaults_mutual, check_mutual)
register_method('msmgan', _phases, per_stage=True, check=check, ablations=ABLATIONS,
                variant=variant, needs_features=True, needs_network=needs_network)
