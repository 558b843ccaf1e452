"""Phases: the values handed to the one student trainer.

A stage is a list of `Phase`s; a phase says which student parameters train, which
losses apply and which extra states exist (discriminators, a mutual teacher copy).
Methods differ only in their phase lists (see `stage_phases`), never in the loop.
"""
import dataclasses
from typing import Callable, Optional, Tuple


@dataclasses.dataclass(frozen=True)
class Phase:
  """One phase of a stage.

  Feature phases (`feature_blocks` non-empty) regress student blocks onto the teacher's
  through connectors, optionally against one discriminator per block. Logit phases
  train the head (and, with `finetune_all`, every block) with CE, optionally KD from
  the anchor, optionally against a trainable copy of it (`mutual`).
  """
  name: str
  share: float                          # fraction of the stage's image budget.
  feature_blocks: Tuple[int, ...] = ()  # 0-based student blocks trained on features.
  adversarial: bool = False             # feature phases: one GAN per block.
  kd: bool = False                      # logit phases: distil from the anchor's logits.
  mutual: bool = False                  # logit phases: DML with a trainable anchor copy.
  finetune_all: bool = False            # logit phases: blocks train too (lr * mult).
  standalone: bool = False              # logit phases: warmup, blocks at the full rate.
  loss: Optional[Callable] = None       # logit phases: loss(s_logits, t_logits, labels, cfg).
  hint: bool = False                    # feature phases: the blocks before them train too.
  attention: bool = False               # logit phases: + attention transfer on every block.
  full_ce: bool = False                 # kd logit phases: CE at weight 1 (not 1 - kd.beta).
  peer: bool = False                    # logit phases: DML with a fresh peer (teacher.model).
  feature_aux: bool = False             # logit phases: + stages.head_feat * feature MSE per block.

  @property
  def is_feature(self) -> bool:
    return bool(self.feature_blocks)

  @property
  def signature(self) -> tuple:
    """What the compiled steps depend on: equal signatures share compiled steps."""
    return (self.feature_blocks, self.adversarial, self.kd, self.mutual, self.finetune_all,
            self.standalone, self.loss, self.hint, self.attention, self.full_ce, self.peer,
            self.feature_aux)

  @property
  def first_trained(self) -> int:
    """The first student block a feature phase trains (earlier ones run frozen)."""
    return 0 if self.hint else min(self.feature_blocks)


@dataclasses.dataclass(frozen=True)
class Method:
  """A distillation method: the phases of each stage, whether it needs the teacher, and
  which anchors guide it: every anchor, one stage each (`all_anchors`), or only the
  final teacher in a single stage. Without a teacher: a single stage."""
  name: str
  stage_phases: Callable  # (cfg, num_blocks) -> list of Phase.
  uses_teacher: bool = True
  all_anchors: bool = True
  per_stage: bool = False  # stage_phases takes the 0-based stage as a third argument.


METHODS = {}  # name -> Method; `config.method` must name one (or 'teacher').


def register_method(name: str, stage_phases: Callable, uses_teacher: bool = True,
                    all_anchors: bool = True, per_stage: bool = False) -> Method:
  """Adds a method: `stage_phases(cfg, num_blocks)` returns the phases of one stage (with
  `per_stage`, `stage_phases(cfg, num_blocks, stage)`: stages may differ); with
  `all_anchors` False the final teacher alone guides a single stage."""
  if not name.isidentifier() or name == 'teacher':
    raise ValueError(f'method name {name!r} must be an identifier other than teacher')
  if name in METHODS:
    raise ValueError(f'method {name!r} is already registered')
  METHODS[name] = Method(name, stage_phases, uses_teacher, all_anchors, per_stage)
  return METHODS[name]


def stage_phases(cfg, num_blocks: int, stage: int = 0) -> list:
  """The phases of stage `stage` (0-based) for `cfg.method`."""
  if cfg.method not in METHODS:
    raise ValueError(f'method {cfg.method!r} trains no student')
  method = METHODS[cfg.method]
  if method.per_stage:
    return method.stage_phases(cfg, num_blocks, stage)
  return method.stage_phases(cfg, num_blocks)


def uses_teacher(cfg) -> bool:
  """Whether `cfg.method` needs the teacher's anchors."""
  return cfg.method == 'teacher' or METHODS[cfg.method].uses_teacher


def _msmgan(cfg, num_blocks: int, stage: int) -> list:
  """METHOD.md: greedy block phases (one GAN per block), then the (mutual) head phase. With
  `stages.block_stages` >= 0 only that many leading stages run the block phases; the later
  ones are one head phase (its feature terms, with `stages.head_feat`, kept as auxiliaries)."""
  shares = tuple(cfg.stages.phase_shares)
  adv = cfg.gan.alpha_adv > 0
  if 0 <= cfg.stages.block_stages <= stage:
    blocks, shares = [], (0.0,) * num_blocks + (1.0,)
  elif cfg.stages.greedy:
    blocks = [Phase(f'block_{k + 1}', shares[k], (k,), adversarial=adv)
              for k in range(num_blocks)]
  else:
    blocks = [Phase('blocks', sum(shares[:num_blocks]), tuple(range(num_blocks)),
                    adversarial=adv)]
  # CE at weight 1 with or without the mutual copy: the no_mutual ablation changes mutual
  # learning only (METHOD.md section 4), not the student's loss weights.
  head = Phase('head', shares[num_blocks], kd=True, mutual=cfg.mutual.enabled,
               finetune_all=cfg.stages.finetune_all, full_ce=True,
               feature_aux=cfg.stages.head_feat > 0 and cfg.stages.finetune_all)
  return blocks + [head]


register_method('ce', lambda cfg, k: [Phase('ce', 1.0, finetune_all=True, standalone=True)],
                uses_teacher=False)
def _kd(cfg, num_blocks: int, share: float = 1.0) -> Phase:
  """Hinton KD on the whole student (METHOD.md's `kd`)."""
  return Phase('kd', share, kd=True, finetune_all=True, standalone=True)


def _fitnets(cfg, num_blocks: int) -> list:
  """FitNets: a hint phase (student blocks up to the middle one regress the teacher's middle
  block through a connector), then KD on the whole student."""
  hint = Phase('hint', cfg.fitnets.hint_share, (num_blocks // 2,), hint=True)
  return [hint, _kd(cfg, num_blocks, 1 - cfg.fitnets.hint_share)]


def _at(cfg, num_blocks: int) -> list:
  """Attention transfer: CE + at.beta * attention transfer on every block, whole student."""
  return [Phase('at', 1.0, finetune_all=True, standalone=True, attention=True)]


def _skd(cfg, num_blocks: int) -> list:
  """Stagewise KD: greedy block phases regressing the teacher's features (no GAN), then the
  classifier alone with CE, blocks frozen."""
  shares = tuple(cfg.stages.phase_shares)
  return [Phase(f'block_{k + 1}', shares[k], (k,)) for k in range(num_blocks)] + [
      Phase('head', shares[num_blocks])]


register_method('kd', lambda cfg, k: [_kd(cfg, k)], all_anchors=False)
# RCO: KD from every anchor in turn, weakest first (the route-constrained curriculum).
register_method('rco', lambda cfg, k: [_kd(cfg, k)])
register_method('fitnets', _fitnets, all_anchors=False)
register_method('at', _at, all_anchors=False)
register_method('skd', _skd, all_anchors=False)
# DML: the student and a peer of the teacher's architecture, both from scratch, each learning
# CE + dml.beta tau^2 KL(other || self) on the same batches; no pretrained teacher.
register_method('dml', lambda cfg, k: [Phase('dml', 1.0, finetune_all=True, standalone=True,
                                             peer=True)], uses_teacher=False)
register_method('msmgan', _msmgan, per_stage=True)


def stage_share(cfg, stage: int, num_stages: int) -> float:
  """Stage `stage`'s (0-based) part of the student's image budget: `stages.stage_shares`,
  or equal parts when it is empty (and the whole budget for a single stage)."""
  if num_stages == 1 or not cfg.stages.stage_shares:
    return 1 / num_stages
  return cfg.stages.stage_shares[stage]


def phase_steps(cfg, phase: Phase, num_train: int, num_stages: int, stage: int = 0) -> int:
  """Steps of `phase` in stage `stage`: its share of that stage's part of the budget."""
  images = cfg.student.epochs * num_train * phase.share * stage_share(cfg, stage, num_stages)
  return max(1, round(images / cfg.batch_size))


def variant(cfg) -> list:
  """Which of METHOD.md's ablations `cfg` is (empty for the full method)."""
  if cfg.method != 'msmgan':
    return []
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
