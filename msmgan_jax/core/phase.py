"""What a method hands the one student trainer: `Phase` values, and the hooks they carry.

A stage is a list of `Phase`s. A phase says which student parameters train (its kind and
`trains`), which loss the student minimises (`loss`, with `weight` on a feature phase),
whose logits a logit phase's loss sees (`partner`: nothing, the anchor, or a network the
method trains beside the student), and, for feature phases, an optional `critic` (say,
MS-MGANs' per-block GAN). A logit phase may also carry a `MethodState`: state the method
keeps beside the student (trainable parameters that receive the gradient of the phase's
loss, and buffers the loss may replace each step, say memory banks). Every hook that
has a train state names it by its `state` (`Phase.states`); the phase's state set is
{'g': the student, 'rng', and those names}. A method may also hand the trainer a `Monitor`
of its logged metrics (through the registry). The hooks are
objects of the method's own module (`msmgan_jax.methods.*`); this module only defines their
shape, so the trainer (`core.steps`, `training.*`) never names a method.

Equal phases share compiled steps: `Phase.signature` is every field but `name` and `share`,
so a field added here is part of the key without anyone listing it. Hooks are compared by
identity: give a phase module-level functions and objects, never a fresh lambda per call.
"""
import dataclasses
import math
from typing import Any, Callable, Optional, Tuple

import jax

from msmgan_jax.core import optim, runs

# Fields that mean something on one kind of phase only; set on the other, `Phase` refuses.
FEATURE_ONLY = ('hint', 'critic', 'weight', 'teacher_forced')
LOGIT_ONLY = ('partner', 'finetune_all', 'standalone', 'trains_connectors', 'method_state')
# State names the trainer keeps for itself: the student's state and the phase's key.
RESERVED = ('g', 'rng')


@dataclasses.dataclass(frozen=True)
class Phase:
  """One phase of a stage.

  Feature phases (`feature_blocks` non-empty) regress student blocks onto the teacher's
  through connectors (`core.models.Connectors`): the student minimises `weight` x the sum
  over the phase's blocks of `loss(projected, teacher_map)` (two (B, H, W, C_T) maps, the
  spatially larger average-pooled by the loss; None: `core.losses.feature_mse`), plus what
  its optional `critic` adds; with `teacher_forced`, the first block it trains takes the
  anchor's map of the block before it as input instead of the student's own (teacher
  forcing: LIT, Koratana et al. ICML 2019), so each block learns its teacher block's mapping
  without the errors of the student's earlier blocks. Logit phases train the head (and, with `finetune_all`, every
  block) on `loss(view)`, a scalar of a `StepView`; with a `method_state` the loss also
  sees (and trains) that state's parameters and may replace its buffers.

  Raises ValueError for a field of the wrong kind (see `FEATURE_ONLY`, `LOGIT_ONLY`), a
  logit phase without a loss, a loss that is not a function, a share outside [0, 1], a
  weight that is not a finite number >= 0, blocks that are not increasing indices >= 0,
  a method state that is not a `MethodState`, or hooks whose state names are not
  identifiers, are taken by the trainer (`RESERVED`) or clash.
  """
  name: str
  share: float                          # fraction of the stage's image budget.
  feature_blocks: Tuple[int, ...] = ()  # 0-based student blocks trained on features.
  hint: bool = False                    # feature phases: the blocks before them train too.
  critic: Any = None                    # feature phases: a `Critic` (one GAN per block).
  weight: float = 1.0                   # feature phases: the weight of `loss` per block.
  loss: Optional[Callable] = None       # logit: loss(view); feature: loss(projected, t_map).
  partner: Any = None                   # logit phases: a `Partner` (None: no teacher logits).
  finetune_all: bool = False            # logit phases: blocks train too (lr * mult).
  standalone: bool = False              # logit phases: warmup, blocks at the full rate.
  trains_connectors: bool = False       # logit phases: the connectors train with the head.
  method_state: Any = None              # logit phases: a `MethodState` (its loss's own state).
  teacher_forced: bool = False          # feature phases: the first block trained is fed the partner's (anchor's) previous block map, not the student's.

  def __post_init__(self):
    if not (isinstance(self.name, str) and self.name):
      raise ValueError(f'a phase needs a name, got {self.name!r}')
    where = f'phase {self.name!r}'
    if not (isinstance(self.share, (int, float)) and 0 <= self.share <= 1):
      raise ValueError(f'{where}: share must be a number in [0, 1], got {self.share!r}')
    blocks = self.feature_blocks
    if not (isinstance(blocks, tuple) and all(
        isinstance(k, int) and k >= 0 for k in blocks) and list(blocks) == sorted(set(blocks))):
      raise ValueError(f'{where}: feature_blocks must be a tuple of increasing block indices '
                       f'>= 0, got {blocks!r}')
    other = LOGIT_ONLY if blocks else FEATURE_ONLY
    defaults = {f.name: f.default for f in dataclasses.fields(self)}
    wrong = [f for f in other if getattr(self, f) != defaults[f]]
    if wrong:
      kind = 'a feature' if blocks else 'a logit'
      raise ValueError(f'{where}: {", ".join(wrong)} cannot be set on {kind} phase (they '
                       f'belong to {"logit" if blocks else "feature"} phases)')
    if self.loss is not None and not callable(self.loss):
      raise ValueError(f'{where}: loss must be a function, got {self.loss!r}')
    if not blocks and self.loss is None:
      raise ValueError(f'{where}: a logit phase needs a loss(view)')
    if not (isinstance(self.weight, (int, float)) and math.isfinite(self.weight)
            and self.weight >= 0):
      raise ValueError(f'{where}: weight must be a finite number >= 0, got {self.weight!r}')
    if self.teacher_forced and self.hint:
      raise ValueError(f'{where}: teacher_forced feeds the first block the anchor\'s map, so '
                       'the blocks before it (hint) receive no gradient: set one of them')
    if self.method_state is not None and not isinstance(self.method_state, MethodState):
      raise ValueError(f'{where}: method_state must be a MethodState, got {self.method_state!r}')
    names = [h.state for h in self._hooks() if getattr(h, 'state', None) is not None]
    bad = [n for n in names if not (isinstance(n, str) and n.isidentifier()) or n in RESERVED]
    if bad or len(set(names)) < len(names):
      raise ValueError(f'{where}: its hooks name their states {names}: each must be a distinct '
                       f'identifier other than {RESERVED}')

  @property
  def is_feature(self) -> bool:
    return bool(self.feature_blocks)

  @property
  def adversarial(self) -> bool:
    return self.critic is not None

  @property
  def hook(self):
    """The phase's hook that may own a train state: its critic or its partner (or None)."""
    return self.critic if self.is_feature else self.partner

  def _hooks(self) -> list:
    """The phase's hooks that may own a train state: critic or partner, method state."""
    return [h for h in (self.hook, self.method_state) if h is not None]

  @property
  def state_name(self) -> Optional[str]:
    """The name of the train state its critic or partner owns (None: none)."""
    return getattr(self.hook, 'state', None)

  @property
  def states(self) -> dict:
    """{name: hook} of the train states the phase's hooks own beside the student's ('d' of
    a critic, 't' of a trained partner, a method state's own name); empty for none."""
    return {h.state: h for h in self._hooks() if getattr(h, 'state', None) is not None}

  @property
  def signature(self) -> tuple:
    """What the compiled steps depend on (every field but `name` and `share`): equal
    signatures share compiled steps."""
    return tuple(getattr(self, f.name) for f in dataclasses.fields(self)
                 if f.name not in ('name', 'share'))

  @property
  def first_trained(self) -> int:
    """The first student block a feature phase trains (earlier ones run frozen)."""
    return 0 if self.hint else min(self.feature_blocks)


def whole_student(name: str, loss: Callable, partner=None, share: float = 1.0,
                  trains_connectors: bool = False, method_state=None) -> Phase:
  """The one-phase pattern of most methods (ce, kd, dkd, at, dml, srrl, ...): the whole
  student, every block at the head's rate after the student's warmup, minimising
  `loss(view)` with `partner`'s logits (None: none) over `share` of the stage (with the
  `MethodState` `method_state`, if given)."""
  return Phase(name, share, loss=loss, partner=partner, finetune_all=True, standalone=True,
               trains_connectors=trains_connectors, method_state=method_state)


@dataclasses.dataclass
class StepView:
  """What a logit phase's `loss` sees inside one jitted student step.

  Shapes: B examples, K blocks, C classes. `s_logits` (B, C) float32, the student in
  training mode; `s_feats` the NHWC maps of the blocks this step computes, blocks
  `first`..K-1 (all K with `finetune_all`); `t_logits` (B, C) and `t_feats` (K maps) the
  partner's (the anchor's in inference mode, or a trained partner's; None without one;
  a peer gives logits only); `labels` (B,) int32; `cfg` the run's config (in a program of
  several candidates, `core.runs`, a view whose per-run fields read as this run's traced
  values: use them as numbers only); `static_cfg` the program's config, for deciding which
  terms to compute (`if w > 0:`), the same for every run of the program.
  `connect(i, f)` puts student map `f` of block `first + i` through its connector
  (training mode; the new BatchNorm statistics are kept) and returns the projected map,
  with the teacher's channels (the phase must set `trains_connectors` for them to learn).
  `t_head(f)` runs the stage's anchor's classifier head (frozen, inference mode) on a map
  with its last block's channels: (B, C) logits. `forced(k)` runs student block `k`
  (0-based, k >= first) in training mode on the partner's block k - 1 map (the images for
  k = 0) without gradient to that map, and returns its (B, H, W, C_S) map (teacher forcing,
  LIT, Koratana et al. ICML 2019); its BatchNorm statistics are dropped (the running ones
  follow the student's own path); ValueError (at trace time) where the partner's map is not
  the shape the student's block k - 1 gives, or the phase has no partner features. `step` is the student's step within the
  phase (a traced int32) and `epoch` the epochs of images the phase has trained on before
  this step. `index` (B,) int32 is each example's position in the training split (None
  unless the method is registered with `needs_index`). With a `MethodState`, `params` are
  its trainable parameters (the loss's gradient trains them) and `buffers` its buffers as
  the step found them; `set_buffers(new)` replaces them after this step (without gradient;
  same structure, shapes and dtypes). Nothing is computed unless a loss uses it.
  """
  s_logits: jax.Array
  s_feats: list
  t_logits: Optional[jax.Array]
  t_feats: Optional[list]
  labels: jax.Array
  cfg: Any
  first: int
  connect: Callable
  t_head: Optional[Callable] = None
  step: Any = None
  images_per_step_epoch: float = 0.0  # batch size / training examples.
  index: Optional[jax.Array] = None
  params: Any = None
  buffers: Any = None
  set_buffers: Optional[Callable] = None
  forced: Optional[Callable] = None
  static_cfg: Any = None

  @property
  def epoch(self):
    return self.step * self.images_per_step_epoch


class Partner:
  """The network whose logits a logit phase's loss sees, and how it learns back.

  `forward(steps, t_state, anchor, x)` -> (t_logits, t_feats, ctx) runs before the
  student's loss; `update(steps, t_state, ctx, x, y, s_logits)` -> (t_state, metrics)
  runs after the student's update (`s_logits` without gradient). A partner that trains
  names its train state (`state`, 't' by convention) and builds it in `init_state(ctx)`;
  its parameter count goes to the phase's record under `record_key`. `steps` is the
  phase's `core.steps.PhaseSteps` (its `cfg`, `teacher` model, `connectors`).
  """
  state = None                   # the name of its train state (None: it does not train).
  record_key = 'partner_params'  # the summary's key for its parameter count.

  @property
  def trains(self) -> bool:
    return self.state is not None

  def init_state(self, ctx: 'StateContext'):
    return None

  def forward(self, steps, t_state, anchor, x):
    raise NotImplementedError

  def update(self, steps, t_state, ctx, x, y, s_logits):
    return t_state, {}


class AnchorPartner(Partner):
  """The stage's anchor, frozen, in inference mode: logits and every block's features."""

  def forward(self, steps, t_state, anchor, x):
    if anchor is None:
      return None, None, None
    t_logits, t_feats = steps.teacher.apply(anchor, x, train=False)
    return t_logits, t_feats, None


ANCHOR = AnchorPartner()


class Critic:
  """The adversarial part of a feature phase (one discriminator per phase block).

  `init_state(ctx)` builds its train state, named `state` ('d' by convention; the state
  may be None: nothing of the critic's trains in this phase);
  `step(steps, d_state, reals, proj, cotangent, metrics, anchor, labels)` ->
  (d_state, cotangent, metrics, g_loss term) updates the discriminators and adds its
  gradient to the student's cotangent on its projected features `proj` (one (B, H, W, C_T)
  map per phase block, like the teacher's block maps `reals`); `anchor` is the stage's
  anchor variables (frozen), `labels` the batch's (B,) int32 labels. Its parameter count
  goes to the phase's record under `record_key`.
  """
  state = 'd'
  record_key = 'critic_params'

  def init_state(self, ctx: 'StateContext'):
    raise NotImplementedError

  def step(self, steps, d_state, reals, proj, cotangent, metrics, anchor, labels):
    raise NotImplementedError


class OwnedState(optim.TrainState):
  """A `MethodState`'s train state: `params` under `tx` (stepped by the gradient of the
  phase's loss), `buffers` (a pytree of arrays the loss may replace, never differentiated),
  `batch_stats` unused."""
  buffers: Any = None


class MethodState:
  """State a method keeps beside the student through a logit phase, read by its loss.

  `init_state(ctx)` builds it, an `OwnedState`, named `state` in the phase's state set (so
  checkpointed and restored with the phase). In each step the loss sees its parameters as
  `StepView.params` (the step differentiates the loss with respect to them too and applies
  their gradient with the state's `tx`, in the student's step) and its buffers as
  `StepView.buffers`, which `StepView.set_buffers` replaces (say, memory banks updated
  with this batch's embeddings). Its parameter count goes to the phase's record under
  `record_key`.
  """
  state = None                  # its name in the phase's state set (required).
  record_key = 'method_params'  # the summary's key for its parameter count.

  def init_state(self, ctx: 'StateContext') -> OwnedState:
    raise NotImplementedError


class Monitor:
  """Watches one phase's logged training metrics (a method's, given to the registry as
  `monitor`): built as `Monitor(cfg, where, state)` for the phase named by `where` (e.g.
  'stage 1 phase block_2'), `state` what `state()` returned at the checkpoint a resumed
  phase starts from (None: a fresh phase). `update(metrics)` sees every logged step's
  metrics ({name: value, or one per seed}); what it finds wrong goes to `warnings` (strings,
  recorded with the phase). `state()` is JSON, kept in a checkpoint's metadata under `key`.
  """
  key = 'monitor'

  def __init__(self, cfg, where: str, state: Optional[dict] = None):
    self.cfg, self.where, self.warnings = cfg, where, []

  def update(self, metrics: dict) -> None:
    raise NotImplementedError

  def state(self) -> dict:
    raise NotImplementedError


@dataclasses.dataclass
class StateContext:
  """What a hook's `init_state` (`Partner`, `Critic`) may use to build its train state for
  phase `phase` of one seed.

  `tx(key, make)` returns one optimizer object per key (a train state's optimizer is static
  in the compiled step, so equal keys must give the same object); `schedule` is the
  student's global warmup + cosine (peak 1, counted over the whole budget) or None with
  per-phase schedules; `offset` the student steps before this phase; `student_lr` the
  student's peak rate (scaled by batch size); `n_steps` this phase's steps; `start_at`
  sets an optimizer state's step count; `student` is the student's model (a
  `core.models.Classifier`) and `num_train` the examples of the training split; `anchors`
  every stage's anchor, weakest first (`anchor` is one of them).
  """
  cfg: Any
  phase: Phase
  anchor: Any             # the stage's anchor (`training.teacher.Anchor`) or None.
  seed: int
  t_model: Any
  image_shape: tuple
  n_steps: int
  offset: int
  schedule: Optional[Callable]
  student_lr: float
  warmup_steps: int
  tx: Callable
  cache: dict             # per trainer: compiled initialisers and the like.
  start_at: Callable
  g_key: tuple            # the student optimizer's `tx` key (a partner may share its schedule).
  num_blocks: int
  student: Any = None
  num_train: int = 0
  anchors: tuple = ()
  lr_per_run: bool = False  # `student.lr` is a per-run input of the program (`core.runs`).

  def per_run(self, schedule: Callable) -> Callable:
    """`schedule`, built at the program's `student_lr`, as the traced run's own rate where
    `student.lr` is a per-run input (`core.runs.per_run_lr`); `schedule` itself otherwise.
    An optimizer a hook builds at the student's rate must go through it."""
    return runs.per_run_lr(schedule, self.cfg.student.lr) if self.lr_per_run else schedule

  def student_lr_fn(self) -> Callable:
    """The student's learning rate as a function of the optimizer's step count: the global
    schedule times the student's peak rate, or (with per-phase schedules) a warmup + cosine
    over this phase. A partner or method state that trains beside the student uses it."""
    if self.schedule is not None:
      sched, lr = self.schedule, self.student_lr
      return self.per_run(lambda c: lr * sched(c))
    return self.per_run(optim.lr_schedule(self.student_lr, self.n_steps, self.warmup_steps))
