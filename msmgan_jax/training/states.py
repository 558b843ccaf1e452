"""The student's train states and optimizers, phase by phase.

For phase i of stage m a fresh functional state set is built from the student carried
over: `g` (student + connectors under an optax masked optimizer: only the phase's
parameter groups train, the rest go through `optax.set_to_zero`), `rng` (the phase's key),
and the states the phase's hooks declare under their own names (`core.phase.Phase.states`:
say a critic's `d`, a trained partner's `t`, a method state's own name). With several
seeds each seed's states are
built as its own run would build them, then stacked (`training.seeds`).
"""
import jax
import jax.numpy as jnp

from msmgan_jax.core import models, optim, runs
from msmgan_jax.core.phase import StateContext
from msmgan_jax.methods import registry


def rules(groups: dict) -> list:
  """(regex, label) rules: each group's patterns, then 'frozen' for everything else."""
  out = [(pat, label) for label, pats in groups.items() for pat in pats]
  if out:
    out.append((f'(?!(?:{"|".join(p for p, _ in out)})$).*', 'frozen'))
  else:
    out.append(('.*', 'frozen'))
  return out


def student_groups(phase, num_blocks) -> dict:
  """Which student/connector parameter paths train in `phase`, by optimizer group."""
  if phase.is_feature:
    blocks = range(phase.first_trained, max(phase.feature_blocks) + 1)
    return {'train': [f'student/block{k + 1}/.*' for k in blocks] +
                     [f'connectors/connector{k + 1}/.*' for k in phase.feature_blocks]}
  groups = {'head': ['student/head/.*'] + (['connectors/.*'] if phase.trains_connectors else [])}
  if phase.finetune_all:
    groups['blocks'] = [f'student/block{k + 1}/.*' for k in range(num_blocks)]
  return groups


class StateBuilder:
  """Builds the states of every phase of one student run (one seed at a time).

  `phases[m]` are stage m's phases, `anchors[m]` its anchor (None without a teacher);
  `steps_per_epoch` sets the warmup. Optimizer objects are cached by key: a train state's
  optimizer is static in the compiled step, so the next stage's equal phase must get the
  very same object to reuse the compiled step.
  """

  def __init__(self, cfg, student, t_model, connectors, image_shape, phases, anchors,
               steps_per_epoch, num_train, init_from=None, run_fields=()):
    self.cfg, self.student, self.t_model, self.connectors = cfg, student, t_model, connectors
    self.image_shape, self.phases, self.anchors = image_shape, phases, anchors
    self.spe, self.num_train = steps_per_epoch, num_train
    self.init_from = init_from  # `student.init`: the anchor whose weights are selected.
    self.init_record = None
    self._txs, self.cache = {}, {}
    self.run_fields = run_fields  # fields that are per-run inputs (`core.runs`), if any.

  def init_carry(self, seed):
    """Fresh student + connector variables of `seed`: (params, batch_stats), each
    {'student': ..., 'connectors': ...}. With `init_from` (an anchor), the student's
    arrays that the anchor has by name are selected from it (`models.select_weights`);
    `init_record` then says how many."""
    s_rng, c_rng = jax.random.split(jax.random.key(seed + 1))
    s_vars = optim.init_variables(self.student, s_rng, self.image_shape)
    if self.init_from is not None:
      s_vars, taken, total = models.select_weights(s_vars, self.init_from.variables)
      self.init_record = {'from': self.init_from.path, 'epoch': self.init_from.epoch,
                          'selected': int(taken), 'total': int(total)}
    _, feats = jax.eval_shape(lambda v: self.student.apply(
        v, jnp.zeros((1,) + self.image_shape)), s_vars)
    c_vars = jax.jit(self.connectors.init_all)(
        c_rng, [jnp.zeros(f.shape, f.dtype) for f in feats])
    return ({'student': s_vars['params'], 'connectors': c_vars['params']},
            {'student': s_vars['batch_stats'], 'connectors': c_vars['batch_stats']})

  def num_steps(self, phase, m: int = 0) -> int:
    """Steps of `phase` in stage m."""
    return registry.phase_steps(self.cfg, phase, self.num_train, len(self.anchors), m)

  def on_global(self, phase) -> bool:
    """Whether `phase` follows the student's global schedule (`student.schedule` global;
    feature phases only with `student.block_schedule` global: with own, each feature phase
    has its own cosine from block_lr, no warmup, and is not counted in the global one)."""
    return self.cfg.student.schedule == 'global' and not (
        phase.is_feature and self.cfg.student.block_schedule == 'own')

  def global_steps(self, m, i) -> tuple:
    """(the student's steps over all stages and phases on the global schedule, those of
    them before phase i of stage m)."""
    steps = [[self.num_steps(p, j) if self.on_global(p) else 0 for p in self.phases[j]]
             for j in range(len(self.anchors))]
    return sum(map(sum, steps)), sum(map(sum, steps[:m])) + sum(steps[m][:i])

  def build(self, m, i, carry, seed) -> dict:
    """The states of phase i of stage m for one seed, starting from `carry`: {'g', 'rng'}
    and each state the phase's hooks declare, under its name (a state may be None: nothing
    of that hook's trains in this phase)."""
    cfg, phase, anchor = self.cfg, self.phases[m][i], self.anchors[m]
    n_steps = self.num_steps(phase, m)
    params, batch_stats = carry
    groups = student_groups(phase, self.student.num_blocks)
    lr = cfg.student.lr * cfg.batch_size / 128
    sched = None
    if self.on_global(phase):
      # One warmup + cosine over the student's whole budget; each phase continues it from
      # where the phases before it left off (`optim.start_at` below), rates scaled per group.
      total, offset = self.global_steps(m, i)
      sched = optim.lr_schedule(1.0, total, int(cfg.student.warmup_epochs * self.spe))
      peaks = ({'train': cfg.student.block_lr} if phase.is_feature else
               {'head': lr, 'blocks': lr * (1.0 if phase.standalone else
                                            cfg.student.finetune_lr_mult)})
      transforms = {g: optim.sgd(self.lr_of(g, lambda c, p=p: p * sched(c)),
                                 cfg.student.momentum, cfg.student.weight_decay)
                    for g, p in peaks.items()}
      key = ('g', phase.signature, 'global', total)
    elif phase.is_feature:
      offset = 0
      sched_f = optim.lr_schedule(cfg.student.block_lr, n_steps, 0)
      transforms = {'train': optim.sgd(sched_f, cfg.student.momentum, cfg.student.weight_decay)}
      key = ('g', phase.signature, n_steps)
    else:
      offset = 0
      warm = int(cfg.student.warmup_epochs * self.spe) if phase.standalone else 0
      mult = 1.0 if phase.standalone else cfg.student.finetune_lr_mult
      transforms = {
          'head': optim.sgd(self.lr_of('head', optim.lr_schedule(lr, n_steps, warm)),
                            cfg.student.momentum, cfg.student.weight_decay),
          'blocks': optim.sgd(self.lr_of('blocks', optim.lr_schedule(lr * mult, n_steps, warm)),
                              cfg.student.momentum, cfg.student.weight_decay)}
      key = ('g', phase.signature, n_steps)
    transforms = {k: v for k, v in transforms.items() if k in groups}
    tx = self.tx(key, lambda: optim.masked(params, rules(groups), transforms))
    g = optim.TrainState.create(apply_fn=None, params=params, batch_stats=batch_stats, tx=tx)
    states = {'g': g.replace(opt_state=optim.start_at(g.opt_state, offset)) if offset else g,
              'rng': jax.random.key_data(self.phase_key(m, i, seed))}
    ctx = StateContext(
        cfg=cfg, phase=phase, anchor=anchor, seed=seed, t_model=self.t_model,
        image_shape=self.image_shape, n_steps=n_steps, offset=offset, schedule=sched,
        student_lr=lr, warmup_steps=int(cfg.student.warmup_epochs * self.spe), tx=self.tx,
        cache=self.cache, start_at=optim.start_at, g_key=key,
        num_blocks=self.student.num_blocks, student=self.student, num_train=self.num_train,
        anchors=tuple(self.anchors), lr_per_run=self.lr_per_run)
    for name, hook in phase.states.items():
      states[name] = hook.init_state(ctx)
    return states

  @property
  def lr_per_run(self) -> bool:
    """Whether `student.lr` is a per-run input of this program (its `candidates` differ in
    it: `core.runs`)."""
    return 'student.lr' in self.run_fields

  def lr_of(self, group: str, schedule):
    """The schedule of optimizer group `group`: per run (`core.runs.per_run_lr`) for the
    groups that train at `student.lr` ('head', 'blocks') where it is a per-run input; the
    feature phases' 'train' group runs at `student.block_lr`, a constant of the program."""
    if self.lr_per_run and group in ('head', 'blocks'):
      return runs.per_run_lr(schedule, self.cfg.student.lr)
    return schedule

  def tx(self, key, make):
    """One optimizer object per key (see the class docstring)."""
    if key not in self._txs:
      self._txs[key] = make()
    return self._txs[key]

  @staticmethod
  def phase_key(m, i, seed):
    """The PRNG key of phase i of stage m (both folded into the seed)."""
    return jax.random.fold_in(jax.random.key(seed + 2), 100 * m + i)
