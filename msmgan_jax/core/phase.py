"""What a method hands the one student trainer: `Phase` values, and the hooks they carry.

A stage is a list of `Phase`s. A phase says which student parameters train (its kind and
`trains`), which loss the student minimises (`loss`, a function of a `StepView`), whose
logits that loss sees (`partner`: nothing, the anchor, or a network the method trains
beside the student), and, for feature phases, an optional `critic` (MS-MGANs' per-block
GAN). The hooks are objects of the method's own module (`msmgan_jax.methods.*`); this
module only defines their shape, so the trainer (`core.steps`, `training.student`) never
names a method.

Equal phases share compiled steps: `Phase.signature` is every field but `name` and `share`,
so a field added here is part of the key without anyone listing it. Hooks are compared by
identity: give a phase module-level functions and objects, never a fresh lambda per call.
"""
import dataclasses
from typing import Any, Callable, Optional, Tuple

import jax


@dataclasses.dataclass(frozen=True)
class Phase:
  """One phase of a stage.

  Feature phases (`feature_blocks` non-empty) regress student blocks onto the teacher's
  through connectors (`core.models.Connectors`), optionally against a `critic`. Logit
  phases train the head (and, with `finetune_all`, every block) on `loss(view)`.
  """
  name: str
  share: float                          # fraction of the stage's image budget.
  feature_blocks: Tuple[int, ...] = ()  # 0-based student blocks trained on features.
  hint: bool = False                    # feature phases: the blocks before them train too.
  critic: Any = None                    # feature phases: a `Critic` (one GAN per block).
  loss: Optional[Callable] = None       # logit phases: loss(StepView) -> scalar.
  partner: Any = None                   # logit phases: a `Partner` (None: no teacher logits).
  finetune_all: bool = False            # logit phases: blocks train too (lr * mult).
  standalone: bool = False              # logit phases: warmup, blocks at the full rate.
  trains_connectors: bool = False       # logit phases: the connectors train with the head.

  @property
  def is_feature(self) -> bool:
    return bool(self.feature_blocks)

  @property
  def adversarial(self) -> bool:
    return self.critic is not None

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


@dataclasses.dataclass
class StepView:
  """What a logit phase's `loss` sees inside one jitted student step.

  Shapes: B examples, K blocks, C classes. `s_logits` (B, C) float32, the student in
  training mode; `s_feats` the NHWC maps of the blocks this step computes, blocks
  `first`..K-1 (all K with `finetune_all`); `t_logits` (B, C) and `t_feats` (K maps) the
  partner's (the anchor's in inference mode, or a trained partner's; None without one;
  a peer gives logits only); `labels` (B,) int32; `cfg` the run's config.
  `connect(i, f)` puts student map `f` of block `first + i` through its connector
  (training mode; the new BatchNorm statistics are kept) and returns the projected map,
  with the teacher's channels (the phase must set `trains_connectors` for them to learn).
  `t_head(f)` runs the stage's anchor's classifier head (frozen, inference mode) on a map
  with its last block's channels: (B, C) logits. `step` is the student's step within the
  phase (a traced int32) and `epoch` the epochs of images the phase has trained on before
  this step. Nothing is computed unless a loss uses it.
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

  @property
  def epoch(self):
    return self.step * self.images_per_step_epoch


class Partner:
  """The network whose logits a logit phase's loss sees, and how it learns back.

  `forward(steps, t_state, anchor, x)` -> (t_logits, t_feats, ctx) runs before the
  student's loss; `update(steps, t_state, ctx, x, y, s_logits)` -> (t_state, metrics)
  runs after the student's update (`s_logits` without gradient); `init_state(ctx)` builds
  the `t` train state (None: the partner does not train). `steps` is the phase's
  `core.steps.PhaseSteps` (its `cfg`, `teacher` model, `connectors`).
  """
  trains = False
  record_key = 'partner_params'  # the summary's key for its parameter count.

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

  `init_state(ctx)` builds the `d` train state (None: the critic has none to train);
  `step(steps, d_state, reals, proj, cotangent, metrics, anchor, labels)` ->
  (d_state, cotangent, metrics, g_loss term) updates the discriminators and adds its
  gradient to the student's cotangent on its projected features `proj` (one (B, H, W, C_T)
  map per phase block, like the teacher's block maps `reals`); `anchor` is the stage's
  anchor variables (frozen), `labels` the batch's (B,) int32 labels.
  """

  def init_state(self, ctx: 'StateContext'):
    raise NotImplementedError

  def step(self, steps, d_state, reals, proj, cotangent, metrics, anchor, labels):
    raise NotImplementedError


@dataclasses.dataclass
class StateContext:
  """What a method's `Partner.init_state` / `Critic.init_state` may use to build its train
  state for phase `phase` of one seed.

  `tx(key, make)` returns one optimizer object per key (a train state's optimizer is static
  in the compiled step, so equal keys must give the same object); `schedule` is the
  student's global warmup + cosine (peak 1, counted over the whole budget) or None with
  per-phase schedules; `offset` the student steps before this phase; `student_lr` the
  student's peak rate (scaled by batch size); `n_steps` this phase's steps; `start_at`
  sets an optimizer state's step count.
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
