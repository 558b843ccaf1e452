"""The one student trainer: stages x phases, each phase a value (`core.phase.Phase`).

For every stage (one teacher anchor, weakest first; a single anchor-less stage for a
method without a teacher) and every phase of it, fresh functional train states are built
from the student carried over (`training.states`), the phase runs (`training.runner`), and
the student moves on. Checkpoints after every phase and every `checkpoint_every_steps`
hold all states, the RNG key and the position (stage, phase, step), so a rerun continues
where the last one stopped. Several seeds train in one program (`training.seeds`).
"""
import time

import jax

from msmgan_jax import config as config_lib
from msmgan_jax.core import models, sharding
from msmgan_jax.core import steps as steps_lib
from msmgan_jax.files import checkpoints, faults
from msmgan_jax.methods import registry
from msmgan_jax.training import loop
from msmgan_jax.training import teacher as teacher_lib
from msmgan_jax.training import summary as summary_lib
from msmgan_jax.training.runner import PhaseRunner
from msmgan_jax.training.seeds import Seeds
from msmgan_jax.training.states import StateBuilder


class Distiller:
  """Trains the student of `cfg` through all its stages and phases.

  Its parts: `states` (a `StateBuilder`: train states and optimizers), `seeds` (`Seeds`:
  several students in one program), `runner` (`PhaseRunner`: one phase's steps, logs and
  checkpoints) and `training.summary` (the summary and final checkpoints); this class
  holds the compiled steps and the stage/phase order, and resumes.
  """

  def __init__(self, cfg, wd, info, batches, eval_batches, mesh, teacher):
    # With `candidates` the program is compiled from the first candidate's config; the
    # fields in which the candidates differ are per-run inputs (`core.runs`).
    self.run_fields, values = config_lib.candidate_values(cfg)
    settings = tuple(cfg.get('candidates', ()))
    if settings:
      cfg = config_lib.candidate_configs(cfg)[0]
    self.cfg, self.wd, self.info, self.mesh = cfg, wd, info, mesh
    self.seeds = Seeds(cfg, mesh, values, settings)
    self.batches, self.eval_batches, self.teacher = batches, eval_batches, teacher
    self.student = models.create_model(cfg.student.model, info.num_classes)
    self.t_model = (teacher.model if teacher is not None
                    else models.create_model(cfg.teacher.model, info.num_classes))
    channels = tuple(self.t_model.block_channels)  # a logits-only teacher has none.
    self.connectors = models.Connectors(channels if len(channels) == self.student.num_blocks
                                        else tuple(self.student.block_channels))
    self.anchors = [None]
    if registry.uses_teacher(cfg):
      self.anchors = (teacher.anchors if registry.METHODS[cfg.method].all_anchors
                      else teacher.anchors[-1:])
    phases = [registry.stage_phases(cfg, self.student.num_blocks, m)  # per stage.
              for m in range(len(self.anchors))]
    init_from = None  # `student.init`: weight selection from the first or last anchor,
    if cfg.student.init_checkpoint:  # or from the anchor `student.init_checkpoint` names.
      init_from = teacher_lib.load_anchor(
          cfg.student.init_checkpoint,
          sharding.abstract_variables(self.t_model, info.image_shape, mesh),
          cfg.teacher.model, info)
    elif cfg.student.init != 'random':
      init_from = teacher.anchors[0 if cfg.student.init == 'first_anchor' else -1]
    self.states = StateBuilder(cfg, self.student, self.t_model, self.connectors,
                               info.image_shape, phases, self.anchors,
                               loop.steps_per_epoch(cfg, info), info.num_train, init_from,
                               run_fields=self.run_fields)
    self.ckpt = checkpoints.Checkpoints(wd.file('checkpoints', 'student'), max_to_keep=2)
    self.eval_step = self.seeds.eval_step(loop.make_eval_step(self.student))
    self.runner = PhaseRunner(cfg, wd, info, mesh, self.ckpt, self.states, self.seeds,
                              step_fn=lambda phase, anchor: self.step_fn(phase, anchor),
                              multi_step_fn=lambda phase, anchor: self.multi_step_fn(phase, anchor),
                              evaluate=lambda g: self.evaluate(g), batches=batches)
    self._steps, self._multi_steps, self._scans = {}, {}, {}

  @property
  def phases(self) -> list:
    """The phases of each stage (`phases[m]`: stage m's), as the state builder has them."""
    return self.states.phases

  @phases.setter
  def phases(self, value: list) -> None:  # the benchmark times one phase as a whole run.
    self.states.phases = value

  def init_carry(self):
    """Fresh student + connector variables (the `g` params/batch_stats layout); with several
    seeds, each seed's (as its own run would make them) stacked on a leading axis."""
    if self.seeds.multi:
      from msmgan_jax.training.seeds import stack  # pylint: disable=g-import-not-at-top
      return stack([self.states.init_carry(seed) for seed in self.seeds.seeds])
    return self.states.init_carry(self.seeds.seeds[0])

  def build_states(self, m, i, carry) -> dict:
    """Fresh functional train states of phase i of stage m, starting from `carry` (with
    several seeds: each seed's, stacked on a leading axis), placed on the mesh."""
    return sharding.replicate(self.seeds.build(
        lambda c, seed: self.states.build(m, i, c, seed), carry), self.mesh)

  def num_steps(self, phase, m: int = 0) -> int:
    """Steps of `phase` in stage m."""
    return self.states.num_steps(phase, m)

  def global_steps(self, m, i) -> tuple:
    """(the student's steps over all stages and phases, the steps before phase i of stage m)."""
    return self.states.global_steps(m, i)

  def steps_for(self, phase):
    """Compiled steps for `phase`, shared by every phase (any stage) of equal signature."""
    if phase.signature not in self._steps:  # stages differ only in (same-shaped) anchors.
      self._steps[phase.signature] = steps_lib.PhaseSteps(
          self.cfg, phase, self.student, self.t_model, self.connectors, self.info.num_train,
          run_fields=self.run_fields)
    return self._steps[phase.signature]

  def step_fn(self, phase, anchor):
    """(states, batch) -> (states, metrics) for one student update of `phase` (of every
    seed at once, in one jitted program, with several seeds)."""
    anchor_vars = anchor.variables if anchor is not None else None
    one = self._seed_step(phase)
    if not self.seeds.multi:
      return lambda states, batch: one(states, batch, anchor_vars)
    if phase.signature not in self._multi_steps:  # compiled once, reused by every stage.
      self._multi_steps[phase.signature] = jax.jit(
          self.seeds.over(one, in_axes=(0, 0, None)), donate_argnums=0)
    multi = self._multi_steps[phase.signature]
    return lambda states, batch: multi(states, batch, anchor_vars)

  def multi_step_fn(self, phase, anchor):
    """(states, batches stacked on a leading axis of c) -> (states, metrics stacked on it):
    c consecutive updates of `phase` in one program (`loop.scanned`; every seed's, with
    several), the steps of `step_fn` one after another; compiled once per phase signature
    (and c), reused by every stage."""
    anchor_vars = anchor.variables if anchor is not None else None
    if phase.signature not in self._scans:
      one = self._seed_step(phase)
      self._scans[phase.signature] = loop.scanned(
          self.seeds.over(one, in_axes=(0, 0, None)) if self.seeds.multi else one)
    program = self._scans[phase.signature]
    return lambda states, stacked: program(states, stacked, anchor_vars)

  def _seed_step(self, phase):
    """One run's update: (states, batch, anchor variables) -> (states, metrics). The
    phase's compiled step takes the student's state, its critic's or partner's and its
    method state's (each None where the phase has none); it is traced with the run's
    per-run values bound (`core.runs`; states['hp'], with candidates)."""
    fns = self.steps_for(phase)
    fn = fns.feature_step if phase.is_feature else fns.logit_step
    name = phase.state_name
    m_name = phase.method_state.state if phase.method_state is not None else None

    def step(states, batch, anchor_vars):
      g, other, metrics, owned = fn(states['g'], states.get(name), anchor_vars, batch,
                                    states.get(m_name), states.get('hp'))
      out = {**states, 'g': g}
      out.update({n: v for n, v in ((name, other), (m_name, owned)) if n is not None})
      return out, metrics
    return step

  def evaluate(self, g_state) -> dict:
    """Test accuracy and loss of the student (lists of one value per seed with several)."""
    variables = {'params': g_state.params['student'], 'batch_stats': g_state.batch_stats['student']}
    return loop.evaluate(self.eval_step, variables, self.eval_batches, self.mesh)

  def _restore(self, step, meta, states) -> dict:
    """The states of checkpoint `step` (`meta` its metadata), `states` giving their
    structure. A checkpoint names its states (`meta['states']`); one written before it did
    holds 'd' and 't' in every phase, None where the phase had no such state: those
    slots are restored as the None they are and dropped."""
    slots = meta.get('states', ['d', 'g', 'rng', 't'])
    empty = {name: None for name in slots if name not in states}
    restored, _ = self.ckpt.restore(step, {**states, **empty})
    return {name: v for name, v in restored.items() if name not in empty}

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
      m, i, s = pos
      restored = self._restore(resume, meta, self.build_states(m, i, carry))
      # Only a checkpoint that restored cuts the log back (a refused resume changes nothing).
      self.wd.metrics.truncate(meta['metrics_offset'])
      carry = (restored['g'].params, restored['g'].batch_stats)
      # A phase is finished once its record is in (checkpoints before this key: all steps).
      if meta.get('phase_done', s >= self.num_steps(self.phases[m][i], m)):
        restored, pos = None, (m, i + 1, 0) if i + 1 < len(self.phases[m]) else (m + 1, 0, 0)
      print(f'student: resuming at stage {pos[0] + 1}, phase {pos[1] + 1}, step {pos[2]}')
    if resume is None and self.states.init_record:
      r = self.states.init_record
      print(f'student: started from the anchor of teacher epoch {r["epoch"]} '
            f'({self.cfg.student.init}): {r["selected"]:,} of its {r["total"]:,} parameters '
            'and statistics selected')
    t_start = time.time() - wall
    for m in range(len(self.anchors)):
      for i in range(len(self.phases[m])):
        if (m, i) < pos[:2]:
          continue
        resumed = (m, i) == pos[:2] and restored is not None
        states = restored if resumed else self.build_states(m, i, carry)
        restored = None
        states, record = self.runner.run_phase(m, i, states, pos[2] if resumed else 0,
                                        meta if resumed else None, records, t_start)
        carry = (states['g'].params, states['g'].batch_stats)
        records.append(record)
        self.ckpt.save((self.ckpt.latest_step() or 0) + 1, states,
                       self.runner.meta((m, i, record['steps']), records, t_start,
                                        record['wall_s'], states, phase_done=True),
                       where=f'in stage {m + 1} phase {self.phases[m][i].name} by its last '
                             f'training step ({record["steps"]})')
        faults.point('phase')
    out = summary_lib.summary(self.cfg, self.wd, self.seeds, self.anchors, self.teacher, carry,
                              records, time.time() - t_start)
    if self.states.init_record:
      out['init'] = self.states.init_record
    return out
