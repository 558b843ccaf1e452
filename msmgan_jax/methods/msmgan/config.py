"""MS-MGANs' config groups, their checks, its ablations, and where its old fields went.

Groups: `stages` (the stage fields only msmgan reads: greedy blocks, phase shares, block
stages, the head phase's fine-tuning), `msmgan` (its head loss: temperature and weight),
`gan`, `disc` and `mutual`. Fields shared with other methods or the trainer left `stages`
(`MOVED`); configs recorded and settings written before that still mean what they meant
(`methods.registry.migrate`, `registry.current_fields`).
"""
import ml_collections

from msmgan_jax.core import models
from msmgan_jax.methods.msmgan.losses import GAN_LOSSES
from msmgan_jax.methods.registry import Moved, check_finite, check_sub_batch, require

DISC_KINDS = ('teacher', 'conv', 'task')


def defaults_stages(c: ml_collections.ConfigDict) -> None:
  c.stages = s = ml_collections.ConfigDict()
  s.greedy = True                 # layer-wise greedy block phases (False = ablation end to end).
  s.teacher_forced = False        # greedy block phases: block k is fed the anchor's block k-1 map, not the student's (LIT's teacher forcing).
  s.forced_joint = 0.0            # head phase (finetune_all): + this x every block's feature MSE with teacher forcing (LIT's joint form; 0 = off).
  s.phase_shares = (0.1, 0.1, 0.1, 0.7)  # stage budget split: block_1..block_K, head.
  s.block_stages = 1              # leading stages with block phases (-1 = all; later: head only).
  s.finetune_all = True           # head phase also trains every block (at student.finetune_lr_mult).
  s.head_feat = 0.0               # head phase (finetune_all): + this x feature MSE of every block.


def defaults_msmgan(c: ml_collections.ConfigDict) -> None:
  c.msmgan = ms = ml_collections.ConfigDict()
  ms.tau = 4.0                    # temperature of msmgan's KL terms (head, mutual copy, task critic).
  ms.beta = 0.9                   # head phase: weight of the logit loss (kd: tau^2 KL(T' || S)) beside CE (weight 1).
  ms.target = 'anchor'            # head phase's logits to learn from: anchor (the stage's, or its mutual copy) | ensemble (all anchors' softened outputs averaged; needs mutual.enabled=False).
  ms.loss = 'kd'                  # head phase's logit loss: kd (Hinton) | dkd (TCKD + NCKD, Zhao et al.).
  ms.logit_std = False            # head phase: both logits Z-scored per row before tau (Sun et al. 2024).
  ms.dkd_alpha = 1.0              # loss dkd: weight of TCKD (the target-class term).
  ms.dkd_beta = 8.0               # loss dkd: weight of NCKD (the non-target term).
  ms.dkd_warmup_epochs = 1.25     # loss dkd: its weight rises from 0 to 1 over the head phase's first epochs.
  ms.ctkd = False                 # head phase: CTKD's learned temperature (the ctkd group's defaults).
  ms.head_disc = 0.0              # head phase: weight of a last-map discriminator's LSGAN term (0 = off).
  ms.head_disc_lr = 1e-4          # head_disc: Adam learning rate of that discriminator (b1 0.5).
  ms.head_disc_r1 = 1.0           # head_disc: R1 penalty weight on the teacher's maps.
  ms.head_disc_ramp = 1.0         # head_disc: epochs over which its weight ramps up from 0.


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


def check_stages(cfg) -> None:
  check_finite(cfg, ('stages.head_feat', 'stages.forced_joint'))


HEAD_LOSSES = ('kd', 'dkd')
HEAD_TARGETS = ('anchor', 'ensemble')


def check_msmgan(cfg) -> None:
  check_finite(cfg, ('msmgan.tau', 'msmgan.beta', 'msmgan.dkd_alpha', 'msmgan.dkd_beta',
                     'msmgan.dkd_warmup_epochs', 'msmgan.head_disc', 'msmgan.head_disc_lr',
                     'msmgan.head_disc_r1', 'msmgan.head_disc_ramp'),
               positive=('msmgan.tau',))
  require(cfg.msmgan.beta <= 1, 'msmgan.beta', f'must be in [0, 1], got {cfg.msmgan.beta}')
  require(cfg.msmgan.loss in HEAD_LOSSES, 'msmgan.loss',
          f'{cfg.msmgan.loss!r} is not one of {HEAD_LOSSES}')
  require(isinstance(cfg.msmgan.logit_std, bool), 'msmgan.logit_std',
          f'must be True or False, got {cfg.msmgan.logit_std!r}')
  require(cfg.msmgan.target in HEAD_TARGETS, 'msmgan.target',
          f'{cfg.msmgan.target!r} is not one of {HEAD_TARGETS}')


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
  """The fields only msmgan reads that depend on the rest of the config (run when it is the
  chosen method)."""
  k = models.create_model(cfg.student.model, 10).num_blocks
  shares = tuple(cfg.stages.phase_shares)
  require(len(shares) == k + 1 and all(x > 0 for x in shares), 'stages.phase_shares',
          f'needs {k + 1} positive shares (block_1..block_{k}, head) for {cfg.student.model}, '
          f'got {shares}')
  require(abs(sum(shares) - 1) < 1e-6, 'stages.phase_shares', f'{shares} must sum to 1')
  b = cfg.stages.block_stages
  require(isinstance(b, int) and not isinstance(b, bool) and b >= -1, 'stages.block_stages',
          f'must be -1 (every stage) or an integer >= 0 (that many leading stages; '
          f'anchors.num or more: every stage), got {b!r}')
  require(cfg.gan.loss in GAN_LOSSES, 'gan.loss', f'{cfg.gan.loss!r} is not one of {GAN_LOSSES}')
  require(cfg.msmgan.head_disc <= 0 or cfg.stages.finetune_all, 'msmgan.head_disc',
          'needs stages.finetune_all=True (the discriminator reads the last block\'s map, '
          'which a head-only phase does not train)')
  require(cfg.msmgan.target != 'ensemble' or not cfg.mutual.enabled, 'msmgan.target',
          'ensemble replaces the mutual copy as the head\'s target: set mutual.enabled=False '
          '(a copy of an ensemble is not defined)')
  require(cfg.msmgan.target != 'ensemble' or not cfg.msmgan.ctkd, 'msmgan.target',
          'ensemble averages the anchors softened at msmgan.tau; msmgan.ctkd learns another '
          'temperature: use one of them')
  if cfg.stages.teacher_forced:
    _check_teacher_forcing(cfg)
  if cfg.stages.forced_joint > 0:
    require(cfg.stages.finetune_all, 'stages.forced_joint',
            'trains every block in the head phase: it needs stages.finetune_all=True')
    _check_forced_maps(cfg, 'stages.forced_joint')
  require(cfg.disc.kind in DISC_KINDS, 'disc.kind',
          f'{cfg.disc.kind!r} is not one of {DISC_KINDS}')
  require(isinstance(cfg.disc.steps_per_g, int) and cfg.disc.steps_per_g >= 1,
          'disc.steps_per_g', 'must be an integer >= 1')
  require(0 <= cfg.disc.b1 < 1, 'disc.b1', f'must be in [0, 1), got {cfg.disc.b1}')
  require(isinstance(cfg.disc.trunk_blocks, int) and cfg.disc.trunk_blocks >= 0,
          'disc.trunk_blocks', f'must be an integer >= 0, got {cfg.disc.trunk_blocks!r}')


def _check_teacher_forcing(cfg) -> None:
  """stages.teacher_forced: greedy block phases, and a teacher whose block maps the
  student's blocks can take (the same channels and downsampling before the last block)."""
  require(isinstance(cfg.stages.teacher_forced, bool), 'stages.teacher_forced',
          f'must be True or False, got {cfg.stages.teacher_forced!r}')
  require(cfg.stages.greedy, 'stages.teacher_forced',
          'feeds each block phase\'s block the anchor\'s map before it: it needs '
          'stages.greedy=True (one block per phase)')
  _check_forced_maps(cfg, 'stages.teacher_forced')


def _check_forced_maps(cfg, field: str) -> None:
  """A built-in teacher whose block maps the student's blocks can take as inputs (the same
  channels and downsampling before the last block), for teacher forcing by `field`."""
  if cfg.teacher.source != 'msmgan_jax':
    return  # an external teacher's maps are checked when its first block phase is traced.
  s = models.create_model(cfg.student.model, 10)
  t = models.create_model(cfg.teacher.model, 10)
  fits = (tuple(s.block_channels[:-1]) == tuple(t.block_channels[:-1])
          and tuple(s.block_strides[:-1]) == tuple(t.block_strides[:-1]))
  require(fits, field,
          f'feeds student blocks the teacher\'s maps, but {cfg.teacher.model} gives '
          f'{tuple(t.block_channels[:-1])} channels at downsampling '
          f'{tuple(t.block_strides[:-1])} where {cfg.student.model} takes '
          f'{tuple(s.block_channels[:-1])} at {tuple(s.block_strides[:-1])}: pick a pair '
          'of the same widths (resnet20 -> resnet8) or set it False')


# The fields that left msmgan's `stages` group (the trainer's and the anchors' now), and the
# fields whose values other methods' runs took from there or msmgan's from kd's, before
# each had its own: recorded configs and written settings are read through this table.
MOVED = (
    Moved('stages.num', 'anchors.num'),
    Moved('stages.teacher_epochs', 'anchors.epochs'),
    Moved('stages.stage_shares', 'student.stage_shares'),
    Moved('stages.schedule', 'student.schedule'),
    Moved('stages.block_schedule', 'student.block_schedule'),
    Moved('stages.block_lr', 'student.block_lr'),
    Moved('stages.finetune_lr_mult', 'student.finetune_lr_mult'),
    Moved('stages.phase_shares', 'skd.phase_shares', method='skd', copy=True),
    Moved('kd.tau', 'msmgan.tau', method='msmgan', copy=True),
    Moved('kd.beta', 'msmgan.beta', method='msmgan', copy=True),
)
# Fields added after runs were recorded, with the value under which those runs trained (a
# recorded config without the field ran that way); the default may differ.
ADDED = {'stages.block_stages': -1, 'mutual.frozen_bn': False, 'msmgan.loss': 'kd',
         'msmgan.logit_std': False, 'msmgan.dkd_alpha': 1.0, 'msmgan.dkd_beta': 8.0,
         'msmgan.dkd_warmup_epochs': 1.25, 'msmgan.ctkd': False,
         'msmgan.head_disc': 0.0, 'msmgan.head_disc_lr': 1e-4, 'msmgan.head_disc_r1': 1.0,
         'msmgan.head_disc_ramp': 1.0, 'msmgan.target': 'anchor',
         'stages.teacher_forced': False, 'stages.forced_joint': 0.0}


def single_stage(cfg) -> dict:
  """One stage (the final anchor) that keeps the full method's block and head budgets:
  each block phase gets the steps it had over all of the full method's stages with block
  phases (stage share x phase share, summed), the head the rest; only the stages (the
  anchors' curriculum) change."""
  num, shares = cfg.anchors.num, tuple(cfg.stages.phase_shares)
  stage = tuple(cfg.student.stage_shares) or (1.0 / num,) * num
  b = cfg.stages.block_stages
  if b == 0:  # no block phases to keep.
    return {'anchors.num': 1, 'student.stage_shares': ()}
  with_blocks = sum(stage[:num if b < 0 else min(b, num)])
  blocks = tuple(round(x * with_blocks, 6) for x in shares[:-1])
  return {'anchors.num': 1, 'student.stage_shares': (), 'stages.block_stages': -1,
          'stages.phase_shares': blocks + (round(1.0 - sum(blocks), 6),)}


def end_to_end(cfg) -> dict:
  """The blocks trained on the student's own maps instead of one at a time on the anchor's:
  greedy block phases become one phase of every block; the joint form's teacher-forced
  terms (`stages.forced_joint`) become the same weight of the blocks' own-path feature MSE
  in the head phase (`stages.head_feat`)."""
  out = {'stages.greedy': False, 'stages.teacher_forced': False}
  if cfg.stages.forced_joint > 0:
    out.update({'stages.forced_joint': 0.0,
                'stages.head_feat': cfg.stages.head_feat + cfg.stages.forced_joint})
  return out


# The ablations of MS-MGANs (the README's "What the method does"): the overrides that make
# each one (a function of the full method's config where a budget or a weight must stay).
ABLATIONS = {
    'single_stage': single_stage,
    # Teacher forcing feeds one block at a time: blocks trained end to end have no such input.
    'end_to_end': end_to_end,
    # Every discriminator: the per-block ones and the head phase's last-map one.
    'no_gan': {'gan.alpha_adv': 0.0, 'msmgan.head_disc': 0.0},
    'no_mutual': {'mutual.enabled': False},
    # No block training in any stage: no greedy block phase (nor its GAN), no joint term.
    'no_blocks': {'stages.block_stages': 0, 'stages.forced_joint': 0.0},
}


def has_block_phases(cfg) -> bool:
  return cfg.stages.block_stages != 0


def has_gan(cfg) -> bool:
  """Whether a discriminator trains: per-block ones (in block phases) or the head's."""
  per_block = cfg.gan.alpha_adv > 0 or (cfg.disc.kind == 'task' and cfg.gan.alpha_task > 0)
  return (has_block_phases(cfg) and per_block) or cfg.msmgan.head_disc > 0


def inapplicable(cfg) -> list:
  """The `ABLATIONS` that would train `cfg` itself (the full method lacks the part they
  remove): a comparison leaves them out rather than train the same student twice."""
  out = []
  if cfg.anchors.num == 1:
    out.append('single_stage')
  if not has_block_phases(cfg) and cfg.stages.forced_joint == 0:
    out += ['end_to_end', 'no_blocks']
  elif not cfg.stages.greedy and cfg.stages.forced_joint == 0:
    out.append('end_to_end')
  if not has_gan(cfg):
    out.append('no_gan')
  if not cfg.mutual.enabled:
    out.append('no_mutual')
  return out


def variant(cfg) -> list:
  """Which of `ABLATIONS` `cfg` is (empty for the full method)."""
  out = []
  blocks = has_block_phases(cfg)  # without block phases greedy and GAN do nothing.
  # The joint form's end_to_end: no block phase, the blocks' own-path terms in the head.
  joint_e2e = (not blocks and not cfg.stages.greedy and cfg.stages.forced_joint == 0
               and cfg.stages.head_feat > 0)
  if cfg.anchors.num == 1:
    out.append('single_stage')
  if (not cfg.stages.greedy and blocks) or joint_e2e:
    out.append('end_to_end')
  if cfg.gan.alpha_adv == 0 and blocks:
    out.append('no_gan')
  if not cfg.mutual.enabled:
    out.append('no_mutual')
  if not blocks and cfg.stages.forced_joint == 0 and not joint_e2e:
    out.append('no_blocks')
  return out
