"""The one student trainer: stages x phases, each phase a value (see phases.py).

For every stage (one teacher anchor, weakest first; a single anchor-less stage for
`ce`) and every phase of it, fresh functional train states are built from the
student carried over: `g` (student + connectors under a masked optimizer), `d`
(discriminators, adversarial feature phases) and `t` (the trainable anchor copy,
mutual head phase). Checkpoints after every phase and every
`checkpoint_every_steps` hold all states, the RNG key and the position (stage,
phase, step), so a rerun continues where the last one stopped.
"""
import re
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from msmgan_jax.files import faults
from msmgan_jax.training import loop
from msmgan_jax.core import models
from msmgan_jax.core import optim
from msmgan_jax.methods import registry as phases_lib
from msmgan_jax.core import steps as steps_lib
from msmgan_jax.files import checkpoints


from msmgan_jax.core import sharding


def _rules(groups: dict) -> list:
  """(regex, label) rules: each group's patterns, then 'frozen' for everything else."""
  rules = [(pat, label) for label, pats in groups.items() for pat in pats]
  if rules:
    rules.append((f'(?!(?:{"|".join(p for p, _ in rules)})$).*', 'frozen'))
  else:
    rules.append(('.*', 'frozen'))
  return rules


def _student_groups(phase, num_blocks) -> dict:
  """Which student/connector parameter paths train in `phase`, by optimizer group."""
  if phase.is_feature:
    blocks = range(phase.first_trained, max(phase.feature_blocks) + 1)
    return {'train': [f'student/block{k + 1}/.*' for k in blocks] +
                     [f'connectors/connector{k + 1}/.*' for k in phase.feature_blocks]}
  groups = {'head': ['student/head/.*'] + (['connectors/.*'] if phase.feature_aux else [])}
  if phase.finetune_all:
    groups['blocks'] = [f'student/block{k + 1}/.*' for k in range(num_blocks)]
  return groups


class Distiller:
  """Trains the student of `cfg` through all its stages and phases."""

  def __init__(self, cfg, wd, info, batches, eval_batches, mesh, teacher):
    self.cfg, self.wd, self.info, self.mesh = cfg, wd, info, mesh
    self.seeds = [cfg.seed + s for s in range(cfg.seeds)]
    self.multi = len(self.seeds) > 1
    self.batches, self.eval_batches, self.teacher = batches, eval_batches, teacher
    self.student = models.create_model(cfg.student.model, info.num_classes)
    self.t_model = models.create_model(cfg.teacher.model, info.num_classes)
    self.connectors = models.Connectors(tuple(self.t_model.block_channels))
    self.anchors = [None]
    if phases_lib.uses_teacher(cfg):
      self.anchors = (teacher.anchors if phases_lib.METHODS[cfg.method].all_anchors
                      else teacher.anchors[-1:])
    self.phases = [phases_lib.stage_phases(cfg, self.student.num_blocks, m)  # per stage.
                   for m in range(len(self.anchors))]
    self.spe = loop.steps_per_epoch(cfg, info)
    self.ckpt = checkpoints.Checkpoints(wd.file('checkpoints', 'student'), max_to_keep=2)
    self.eval_step = loop.make_eval_step(self.student)
    if self.multi:  # every seed's student on the same eval batch (replicated for vmap).
      over = self._over_seeds(self.eval_step, in_axes=(0, None))
      if self._seed_batching() == 'vmap':
        rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        self.eval_step = jax.jit(lambda v, b: over(v, jax.sharding.reshard(b, rep)))
      else:
        self.eval_step = jax.jit(over)
    self._steps, self._txs, self._disc_inits, self._multi_steps = {}, {}, {}, {}
    self.discs = self._discs()

  # States -------------------------------------------------------------------------
  def init_carry(self):
    """Fresh student + connector variables (the `g` params/batch_stats layout); with several
    seeds, each seed's (as its own run would make them) stacked on a leading axis."""
    return _stack([self._init_carry(seed) for seed in self.seeds]) if self.multi \
        else self._init_carry(self.seeds[0])

  def _init_carry(self, seed):
    s_rng, c_rng = jax.random.split(jax.random.key(seed + 1))
    s_vars = optim.init_variables(self.student, s_rng, self.info.image_shape)
    _, feats = jax.eval_shape(lambda v: self.student.apply(
        v, jnp.zeros((1,) + self.info.image_shape)), s_vars)
    c_vars = jax.jit(self.connectors.init_all)(
        c_rng, [jnp.zeros(f.shape, f.dtype) for f in feats])
    return ({'student': s_vars['params'], 'connectors': c_vars['params']},
            {'student': s_vars['batch_stats'], 'connectors': c_vars['batch_stats']})

  def _discs(self):
    cfg = self.cfg
    if cfg.disc.kind == 'teacher':
      return [models.TeacherDisc(self.t_model, k, cfg.mutual.enabled, cfg.disc.trunk_blocks)
              for k in range(self.student.num_blocks)]
    return [models.ConvDisc(cfg.disc.conv_width) for _ in range(self.student.num_blocks)]

  def steps_for(self, phase):
    """Compiled steps for `phase`, shared by every phase (any stage) of equal signature."""
    if phase.signature not in self._steps:  # stages differ only in (same-shaped) anchors.
      self._steps[phase.signature] = steps_lib.PhaseSteps(
          self.cfg, phase, self.student, self.t_model, self.connectors, self.discs)
    return self._steps[phase.signature]

  def build_states(self, m, i, carry) -> dict:
    """Fresh functional train states of phase i of stage m, starting from `carry` (with
    several seeds: each seed's, stacked on a leading axis)."""
    if not self.multi:
      return sharding.replicate(self._build_states(m, i, carry, self.seeds[0]), self.mesh)
    return sharding.replicate(_stack([
        self._build_states(m, i, jax.tree.map(lambda x: x[j], carry), seed)
        for j, seed in enumerate(self.seeds)]), self.mesh)

  def _build_states(self, m, i, carry, seed) -> dict:
    cfg, phase, anchor = self.cfg, self.phases[m][i], self.anchors[m]
    n_steps = self.num_steps(phase, m)
    params, batch_stats = carry
    groups = _student_groups(phase, self.student.num_blocks)
    lr = cfg.student.lr * cfg.batch_size / 128
    if cfg.stages.schedule == 'global':
      # One warmup + cosine over the student's whole budget; each phase continues it from
      # where the phases before it left off (`optim.start_at` below), rates scaled per group.
      total, offset = self._global_steps(m, i)
      sched = optim.lr_schedule(1.0, total, int(cfg.student.warmup_epochs * self.spe))
      peaks = ({'train': cfg.stages.block_lr} if phase.is_feature else
               {'head': lr, 'blocks': lr * (1.0 if phase.standalone else
                                            cfg.stages.finetune_lr_mult)})
      transforms = {g: optim.sgd(lambda c, p=p: p * sched(c), cfg.student.momentum,
                                 cfg.student.weight_decay) for g, p in peaks.items()}
      key = ('g', phase.signature, 'global', total)
    elif phase.is_feature:
      offset = 0
      sched = optim.lr_schedule(cfg.stages.block_lr, n_steps, 0)
      transforms = {'train': optim.sgd(sched, cfg.student.momentum, cfg.student.weight_decay)}
      key = ('g', phase.signature, n_steps)
    else:
      offset = 0
      warm = int(cfg.student.warmup_epochs * self.spe) if phase.standalone else 0
      mult = 1.0 if phase.standalone else cfg.stages.finetune_lr_mult
      transforms = {
          'head': optim.sgd(optim.lr_schedule(lr, n_steps, warm), cfg.student.momentum,
                            cfg.student.weight_decay),
          'blocks': optim.sgd(optim.lr_schedule(lr * mult, n_steps, warm), cfg.student.momentum,
                              cfg.student.weight_decay)}
      key = ('g', phase.signature, n_steps)
    transforms = {k: v for k, v in transforms.items() if k in groups}
    tx = self._tx(key, lambda: optim.masked(params, _rules(groups), transforms))
    g = optim.TrainState.create(apply_fn=None, params=params, batch_stats=batch_stats, tx=tx)
    states = {'g': g.replace(opt_state=optim.start_at(g.opt_state, offset)) if offset else g,
              'd': None, 't': None, 'rng': jax.random.key_data(self._phase_key(m, i, seed))}
    if phase.adversarial:
      states['d'] = self._disc_state(phase, anchor, seed)
    if phase.peer:  # DML's peer: fresh, on the student's schedule and optimizer settings.
      if cfg.stages.schedule == 'global':
        peer_lr = lambda c: lr * sched(c)
      else:
        peer_lr = optim.lr_schedule(lr, n_steps, int(cfg.student.warmup_epochs * self.spe))
      t_tx = self._tx(('peer',) + key[1:], lambda: optim.sgd(
          peer_lr, cfg.student.momentum, cfg.student.weight_decay))
      v = optim.init_variables(self.t_model, jax.random.key(seed + 4), self.info.image_shape)
      states['t'] = optim.TrainState.create(
          apply_fn=None, params=v['params'], batch_stats=v['batch_stats'], tx=t_tx)
      if offset:
        states['t'] = states['t'].replace(opt_state=optim.start_at(states['t'].opt_state, offset))
    if phase.mutual:
      t_tx = self._tx(('t', phase.signature, n_steps), lambda: optim.sgd(
          optim.lr_schedule(cfg.mutual.lr, n_steps, 0), cfg.teacher.momentum,
          cfg.teacher.weight_decay))
      copy = jax.tree.map(jnp.copy, anchor.variables)  # steps donate states; anchors stay.
      states['t'] = optim.TrainState.create(
          apply_fn=None, params=copy['params'], batch_stats=copy['batch_stats'], tx=t_tx)
    return states

  def _tx(self, key, make):
    """One optimizer object per phase signature: a TrainState's `tx` is static in the
    compiled steps, so a new object in the next stage would recompile them."""
    if key not in self._txs:
      self._txs[key] = make()
    return self._txs[key]

  def _disc_state(self, phase, anchor, seed):
    """D_k for each phase block: anchor blocks after k (kind 'teacher') + a real/fake unit."""
    cfg = self.cfg
    params, stats = {}, {}
    rng = jax.random.key(seed + 3)
    shapes = jax.eval_shape(lambda v: self.t_model.apply(
        v, jnp.zeros((1,) + self.info.image_shape)), anchor.variables)[1]
    for k in phase.feature_blocks:
      if k not in self._disc_inits:  # compiled once per block, reused by every stage.
        self._disc_inits[k] = jax.jit(self.discs[k].init)
      v = self._disc_inits[k](jax.random.fold_in(rng, k),
                              jnp.zeros(shapes[k].shape, shapes[k].dtype))
      p, s = dict(v['params']), dict(v.get('batch_stats', {}))
      if cfg.disc.kind == 'teacher':
        copy = jax.tree.map(jnp.copy, anchor.variables)  # steps donate states; anchors stay.
        p['trunk'] = {n: copy['params'][n] for n in p.get('trunk', {})}
        if 'trunk' in s:
          s['trunk'] = {n: copy['batch_stats'][n] for n in s['trunk']}
      params[f'disc{k + 1}'], stats[f'disc{k + 1}'] = p, s
    adam = lambda lr: optax.adam(lr, b1=cfg.disc.b1)
    trunk = 'trunk' if cfg.mutual.enabled else 'frozen'
    tx = self._tx(('d', phase.signature), lambda: optim.masked(
        params, [(r'disc\d+/trunk/.*', trunk), (r'(?!disc\d+/trunk/).*', 'unit')],
        {'trunk': adam(cfg.disc.lr * cfg.disc.trunk_lr_mult), 'unit': adam(cfg.disc.lr)}))
    return optim.TrainState.create(apply_fn=None, params=params, batch_stats=stats, tx=tx)

  # Running --------------------------------------------------------------------------
  def step_fn(self, phase, anchor):
    """(states, batch) -> (states, metrics) for one student update of `phase` (of every
    seed at once, in one jitted program, with several seeds)."""
    anchor_vars = anchor.variables if anchor is not None else None
    one = self._seed_step(phase)
    if not self.multi:
      return lambda states, batch: one(states, batch, anchor_vars)
    if phase.signature not in self._multi_steps:  # compiled once, reused by every stage.
      self._multi_steps[phase.signature] = jax.jit(
          self._over_seeds(one, in_axes=(0, 0, None)), donate_argnums=0)
    multi = self._multi_steps[phase.signature]
    return lambda states, batch: multi(states, batch, anchor_vars)

  def _seed_step(self, phase):
    """One seed's update: (states, batch, anchor variables) -> (states, metrics)."""
    fns = self.steps_for(phase)
    if phase.is_feature:
      def step(states, batch, anchor_vars):
        g, d, metrics = fns.feature_step(states['g'], states['d'], anchor_vars, batch)
        return {**states, 'g': g, 'd': d}, metrics
    else:
      def step(states, batch, anchor_vars):
        g, t, metrics = fns.logit_step(states['g'], states['t'], anchor_vars, batch)
        return {**states, 'g': g, 't': t}, metrics
    return step

  def _seed_batching(self) -> str:
    how = self.cfg.seed_batching
    if how == 'auto':
      how = 'unroll' if jax.devices()[0].platform == 'cpu' else 'vmap'
    return how

  def _over_seeds(self, fn, in_axes):
    """`fn` over the leading seed axis of the arguments whose `in_axes` is 0, in one
    program: `jax.vmap`, or one copy of `fn` per seed (`unroll`) where `seed_batching`
    says so. `auto` unrolls on CPU, where a vmapped convolution becomes a grouped one that
    XLA:CPU runs several times slower than the seeds one after another, while unrolled
    steps cost a little less than that (measured by the benchmark's seed rows, see
    PERFORMANCE.md)."""
    if self._seed_batching() == 'vmap':
      return jax.vmap(fn, in_axes=in_axes)

    def unrolled(*args):
      return _stack([fn(*(jax.tree.map(lambda x, j=j: x[j], a) if ax == 0 else a
                          for a, ax in zip(args, in_axes))) for j in range(len(self.seeds))])
    return unrolled

  def evaluate(self, g_state) -> dict:
    """Test accuracy and loss of the student (lists of one value per seed with several)."""
    variables = {'params': g_state.params['student'], 'batch_stats': g_state.batch_stats['student']}
    return loop.evaluate(self.eval_step, variables, self.eval_batches, self.mesh)

  def run(self) -> dict:
    """Trains every stage and phase (resuming where a checkpoint says); returns the summary."""
    carry = self.init_carry()
    pos, records, wall, meta = (0, 0, 0), [], 0.0, None
    resume = self.ckpt.latest_step()
    restored = None
    if resume is None:  # drop what an interrupted run logged before its first checkpoint.
      self.wd.metrics.truncate(self.teacher.metrics_offset if self.teacher else 0)
    else:
      meta = self.ckpt.meta(resume)
      pos, records, wall = tuple(meta['position']), meta['records'], meta['wall_s']
      self.wd.metrics.truncate(meta['metrics_offset'])
      m, i, s = pos
      restored, _ = self.ckpt.restore(resume, self.build_states(m, i, carry))
      carry = (restored['g'].params, restored['g'].batch_stats)
      # A phase is finished once its record is in (checkpoints before this key: all steps).
      if meta.get('phase_done', s >= self.num_steps(self.phases[m][i], m)):
        restored, pos = None, (m, i + 1, 0) if i + 1 < len(self.phases[m]) else (m + 1, 0, 0)
      print(f'student: resuming at stage {pos[0] + 1}, phase {pos[1] + 1}, step {pos[2]}')
    t_start = time.time() - wall
    for m in range(len(self.anchors)):
      for i in range(len(self.phases[m])):
        if (m, i) < pos[:2]:
          continue
        resumed = (m, i) == pos[:2] and restored is not None
        states = restored if resumed else self.build_states(m, i, carry)
        restored = None
        states, record = self.run_phase(m, i, states, pos[2] if resumed else 0,
                                        meta if resumed else None, records, t_start)
        carry = (states['g'].params, states['g'].batch_stats)
        records.append(record)
        self.ckpt.save((self.ckpt.latest_step() or 0) + 1, states,
                       self._meta((m, i, record['steps']), records, t_start, record['wall_s'],
                                  phase_done=True))
        faults.point('phase')
    return self.summary(carry, records, time.time() - t_start)

  def num_steps(self, phase, m: int = 0) -> int:
    """Steps of `phase` in stage m."""
    return phases_lib.phase_steps(self.cfg, phase, self.info.num_train, len(self.anchors), m)

  def _global_steps(self, m, i) -> tuple:
    """(the student's steps over all stages and phases, the steps before phase i of stage m)."""
    steps = [[self.num_steps(p, j) for p in self.phases[j]] for j in range(len(self.anchors))]
    return sum(map(sum, steps)), sum(map(sum, steps[:m])) + sum(steps[m][:i])

  def _meta(self, position, records, t_start, phase_wall, log_window=(), watch=None,
            phase_done=False) -> dict:
    """A checkpoint's metadata. `phase_done`: the phase was evaluated and recorded; a
    checkpoint after its last step without it (a stop request there) resumes with zero
    steps left, then evaluates and records the phase."""
    return {'position': list(position), 'records': records, 'wall_s': time.time() - t_start,
            'phase_wall_s': phase_wall, 'metrics_offset': self.wd.metrics.offset(),
            'log_window': list(log_window), 'disc_watch': watch.state() if watch else None,
            'phase_done': phase_done}

  def run_phase(self, m, i, states, start, resume, records, t_start):
    """Runs steps start..n-1 of phase i of stage m, then evaluates the student.

    `resume` is the meta of the mid-phase checkpoint the states come from (None when the
    phase starts fresh). Returns the final states and the phase's record for the summary.
    `wall_s` adds the time spent before a resume; `images_per_s` leaves out the first step
    (compilation).
    """
    wall_before = resume['phase_wall_s'] if resume else 0.0
    cfg, phase, anchor = self.cfg, self.phases[m][i], self.anchors[m]
    n = self.num_steps(phase, m)
    one = self._first_seed(states)
    labels = optim.label_params(one['g'].params, _rules(_student_groups(
        phase, self.student.num_blocks)))
    trainable = optim.count_params(jax.tree.map(
        lambda x, lab: x if lab != 'frozen' else None, one['g'].params, labels))
    images_before = sum(r['steps'] for r in records) * cfg.batch_size

    def log(split, step, metrics):
      """One metrics.jsonl record; with several seeds, one per seed (with its `seed`)."""
      where = dict(step=step, epoch=(images_before + step * cfg.batch_size) / self.info.num_train,
                   stage=m + 1, phase=phase.name, split=split)
      if not self.multi:
        self.wd.metrics.write(**where, **metrics)
        return
      for j, seed in enumerate(self.seeds):
        self.wd.metrics.write(**where, seed=seed, **{
            k: v[j] if isinstance(v, list) else v for k, v in metrics.items()})
    t0 = time.time()

    def save(step, states, log_window):
      self.ckpt.save((self.ckpt.latest_step() or 0) + 1, states, self._meta(
          (m, i, step), records, t_start, wall_before + time.time() - t0, log_window, watch))

    where = f'stage {m + 1} phase {phase.name}'
    watch = DiscWatch(cfg.disc.stuck_logs, where, cfg.log_every_steps,
                      resume.get('disc_watch') if resume else None)

    def log_train(step, metrics):
      log('train', step, metrics)
      watch.update(metrics)

    per = cfg.student.eval_every_epochs * self.info.num_train  # images between evaluations.

    def after_step(step, states):
      """Within the phase, a test evaluation each time another `per` images are seen."""
      seen = images_before + step * cfg.batch_size
      if per > 0 and step < n and seen // per > (seen - cfg.batch_size) // per:
        t = time.time()
        log('test', step, {**self.evaluate(states['g']), 'wall_s': t - t_start})
        eval_s[0] += time.time() - t
      return states
    eval_s = [0.0]  # left out of the phase's images/s.

    states, first_step_s = loop.train_loop(
        states, self.step_fn(phase, anchor),
        batches=self._batches(states, start), start=start, stop=n,
        mesh=self.mesh, batch_size=cfg.batch_size, log_every=cfg.log_every_steps,
        log=log_train, after_step=after_step, save=save,
        save_at=lambda step: step % cfg.checkpoint_every_steps == 0 and step < n, where=where,
        window=resume.get('log_window', ()) if resume else ())
    wall = time.time() - t0
    steady = n - start - 1
    result = None
    if cfg.student.eval_every_phase or i == len(self.phases[m]) - 1:
      result = self.evaluate(states['g'])
      log('test', n, {**result, 'wall_s': time.time() - t_start})
    print(f'stage {m + 1} phase {phase.name}: {n} steps, {wall_before + wall:.1f}s' + (
        f', student test accuracy {_fmt(result["accuracy"])}' if result else ''), flush=True)
    record = {'name': phase.name, 'trainable_params': trainable, 'steps': n,
              'wall_s': round(wall_before + wall, 2), 'first_step_s': round(first_step_s, 2),
              'images_per_s': round(
                  steady * cfg.batch_size / max(wall - first_step_s - eval_s[0], 1e-9)
                  if steady > 0
                  else (n - start) * cfg.batch_size / max(wall, 1e-9), 1),
              'stage': m + 1}
    if result is not None:
      record['test_accuracy'] = result['accuracy']
    if one['d'] is not None:
      record['disc_trainable_params'] = optim.count_params(one['d'].params)
    if one['t'] is not None:
      record['peer_params' if phase.peer else 'teacher_copy_params'] = optim.count_params(
          one['t'].params)
    if watch.warnings:
      record['warnings'] = watch.warnings
    return states, record

  def _first_seed(self, states):
    """The states of the first seed (all of `states` with one seed)."""
    return jax.tree.map(lambda x: x[0], states) if self.multi else states

  @staticmethod
  def _phase_key(m, i, seed):
    """The PRNG key of phase i of stage m (both folded into the seed)."""
    return jax.random.fold_in(jax.random.key(seed + 2), 100 * m + i)

  def _batches(self, states, skip):
    """The phase's training batches from step `skip` on: each seed's own data order, drawn
    from its checkpointed key (a resume replays it); several seeds' batches stacked."""
    keys = jax.device_get(states['rng'])
    data_seed = lambda k: int(jax.random.randint(jax.random.wrap_key_data(k), (), 0, 2 ** 31 - 1))
    if not self.multi:
      return self.batches(data_seed(keys), skip=skip)
    its = [self.batches(data_seed(k), skip=skip) for k in keys]
    # Unrolled, each seed's batch is a slice sharded on 'data'; vmap's batched convolutions
    # reshape the seed axis into the batch, which a 'data'-sharded batch axis forbids.
    spec = (None, 'data') if self._seed_batching() == 'unroll' else ()
    sharding = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec(*spec))

    def stacked():
      while True:
        parts = [sharding.shard_batch(next(it), self.mesh) for it in its]
        yield {k: jax.device_put(jnp.stack([p[k] for p in parts]), sharding) for k in parts[0]}
    return stacked()

  def summary(self, carry, records, wall) -> dict:
    """The student's summary. With several seeds: `test_accuracy` is their mean (with
    `test_accuracy_std` and the per-seed `test_accuracies`), per-phase accuracies are lists,
    and each seed's final student is saved (`student_final` the first, `student_final_<seed>`
    the others)."""
    params, batch_stats = carry
    finals = [{'params': params['student'], 'batch_stats': batch_stats['student']}]
    if self.multi:
      finals = [jax.tree.map(lambda x: x[j], finals[0]) for j in range(len(self.seeds))]
    for j, (seed, final) in enumerate(zip(self.seeds, finals)):
      checkpoints.Checkpoints(self.wd.file('checkpoints', 'student_final' + (f'_{seed}' if j else ''))
                        ).save(0, final, {'model': self.cfg.student.model, 'seed': seed})
    n_params = optim.count_params(finals[0]['params'])
    stages = []
    for m, anchor in enumerate(self.anchors):
      stages.append({
          'stage': m + 1,
          'anchor': None if anchor is None else {'epoch': anchor.epoch, 'path': anchor.path,
                                                 'test_accuracy': anchor.test_accuracy},
          'phases': [{k: v for k, v in r.items() if k != 'stage'}
                     for r in records if r['stage'] == m + 1]})
    out = {'model': self.cfg.student.model, 'params': n_params,
           'test_accuracy': records[-1]['test_accuracy'],
           'compression': round(self.teacher.params / n_params, 3) if self.teacher else None,
           'wall_s': round(wall, 2), 'stages': stages,
           'checkpoint': self.wd.file('checkpoints', 'student_final', '0')}
    if self.multi:
      accs = out['test_accuracy']
      out.update({'test_accuracy': float(np.mean(accs)), 'test_accuracy_std': float(np.std(accs)),
                  'test_accuracies': accs, 'seeds': self.seeds})
    return out


def _stack(trees: list):
  """Trees of equal structure stacked leaf by leaf on a new leading (seed) axis."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _fmt(accuracy) -> str:
  if isinstance(accuracy, list):
    return f'{np.mean(accuracy):.4f} +- {np.std(accuracy):.4f} over {len(accuracy)} seeds'
  return f'{accuracy:.4f}'


class DiscWatch:
  """Warns when a discriminator's accuracy on real or on fake sits at 0 or 1 for `limit`
  logged intervals in a row (it has won or lost outright and no longer teaches the
  student). Each block and side warns once per phase; `limit` 0 turns it off."""
  LOW, HIGH = 0.02, 0.98

  def __init__(self, limit: int, where: str, log_every: int, state=None):
    self.limit, self.where, self.log_every = limit, where, log_every
    state = state or {'runs': {}, 'warnings': [], 'warned': []}
    self.runs, self.warnings = dict(state['runs']), list(state['warnings'])
    self.warned = set(state['warned'])

  def state(self) -> dict:
    """What a checkpoint keeps, so a resumed phase warns as an uninterrupted one would."""
    return {'runs': dict(self.runs), 'warnings': list(self.warnings),
            'warned': sorted(self.warned)}

  def update(self, metrics: dict) -> None:
    for key, v in sorted(metrics.items()):
      if not re.fullmatch(r'd_acc_(real|fake)_b\d+', key) or self.limit <= 0:
        continue
      v = np.asarray(v)  # one value, or one per seed: stuck when every seed is.
      stuck = bool(np.all((v <= self.LOW) | (v >= self.HIGH)))
      self.runs[key] = self.runs.get(key, 0) + 1 if stuck else 0
      if self.runs[key] >= self.limit and key not in self.warned:
        self.warned.add(key)
        msg = (f'{self.where}: {key} has been {np.round(v).astype(int).tolist()} for {self.limit} logs '
               f'({self.limit * self.log_every} steps): discriminator {key.rsplit("_b", 1)[1]} '
               'has stopped learning; see disc.lr, disc.steps_per_g and gan.loss')
        self.warnings.append(msg)
        sys.stderr.write(f'warning: {msg}\n')
