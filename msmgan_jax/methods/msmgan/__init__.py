"""`msmgan`: MS-MGANs (Huang et al., Computer Science 2022), as reconstructed in the
README's "What the method does".

Per stage (one teacher anchor each, weakest first):
- greedy block phases `block_k` (`stages.greedy`; only in the first `stages.block_stages`
  stages): student block k (and its connector) regresses the anchor's block-k features,
  gan.alpha_feat x MSE, against a discriminator D_k with weight gan.alpha_adv: `GanCritic`
  (the anchor's next block(s) and a real/fake unit, `disc.kind = 'teacher'`, or a conv net)
  or `TaskCritic` (`disc.kind = 'task'`: the anchor's blocks k+1..K and head, a K+1-class
  critic, plus the task term gan.alpha_task x tau^2 KL(T(x) || T_up(C_k(f_S))));
- the head phase: CE + msmgan.beta tau^2 KL from the logits of a trainable copy of the
  anchor (`mutual.enabled`; `MutualCopy`), which learns CE + mutual.beta_t tau^2 KL towards
  the student (deep mutual learning, Zhang et al. 2018), plus stages.head_feat x the block
  features' MSE, stages.forced_joint x each block's MSE fed the anchor's previous map
  (teacher forcing beside the logit loss, LIT's joint form) and gan.head_task x the last
  block's task term where those are > 0.
Ablations (`config.ABLATIONS`) switch one part off each.

Its modules: `config` (its groups `stages`, `msmgan`, `gan`, `disc`, `mutual`, checks,
ablations, and where its former fields went), `discriminators`, `losses` (the GAN losses),
`critics`, `head` (the head phase's losses and the mutual copy) and `monitor`.
"""
from msmgan_jax.core.phase import ANCHOR, Phase
from msmgan_jax.methods import registry
from msmgan_jax.methods.msmgan import adversarial, config
from msmgan_jax.methods.msmgan.critics import GAN, TASK
from msmgan_jax.methods.msmgan.head import COPY, ENSEMBLE, head_loss, head_loss_with_features
from msmgan_jax.methods.msmgan.monitor import DiscWatch


def _phases(cfg, num_blocks: int, stage: int) -> list:
  """Greedy block phases (one GAN per block), then the (mutual) head phase. With
  `stages.block_stages` >= 0 only that many leading stages run the block phases; the later
  ones are one head phase (its feature terms, with `stages.head_feat`, kept as auxiliaries)."""
  shares = tuple(cfg.stages.phase_shares)
  if cfg.disc.kind == 'task':  # the task term acts without the adversarial one (no_gan).
    critic = TASK if cfg.gan.alpha_adv > 0 or cfg.gan.alpha_task > 0 else None
  else:
    critic = GAN if cfg.gan.alpha_adv > 0 else None
  weight = cfg.gan.alpha_feat
  if 0 <= cfg.stages.block_stages <= stage:
    blocks, shares = [], (0.0,) * num_blocks + (1.0,)
  elif cfg.stages.greedy:
    forced = {'teacher_forced': True} if cfg.stages.teacher_forced else {}
    blocks = [Phase(f'block_{k + 1}', shares[k], (k,), critic=critic, weight=weight, **forced)
              for k in range(num_blocks)]
  else:
    blocks = [Phase('blocks', sum(shares[:num_blocks]), tuple(range(num_blocks)),
                    critic=critic, weight=weight)]
  feature_aux = (cfg.stages.head_feat > 0 or cfg.gan.head_task > 0
                 or cfg.stages.forced_joint > 0) and cfg.stages.finetune_all
  adv = adversarial.uses(cfg)
  head = Phase('head', shares[num_blocks],
               loss=head_loss_with_features if feature_aux else head_loss,
               partner=_head_partner(cfg), finetune_all=cfg.stages.finetune_all,
               trains_connectors=feature_aux or cfg.msmgan.head_disc > 0,
               method_state=adversarial.HEAD_ADV if adv else None)
  return blocks + [head]


def _head_partner(cfg):
  """Whose logits the head phase's loss sees: the snapshot ensemble of every anchor
  (`msmgan.target` ensemble), the mutual copy (`mutual.enabled`) or the anchor."""
  if cfg.msmgan.target == 'ensemble':
    return ENSEMBLE
  return COPY if cfg.mutual.enabled else ANCHOR


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


registry.register_group('stages', config.defaults_stages, config.check_stages)
registry.register_group('msmgan', config.defaults_msmgan, config.check_msmgan)
registry.register_group('gan', config.defaults_gan, config.check_gan)
registry.register_group('disc', config.defaults_disc, config.check_disc)
registry.register_group('mutual', config.defaults_mutual, config.check_mutual)
registry.register_history(config.MOVED, config.ADDED)
registry.register_method('msmgan', _phases, per_stage=True, check=config.check,
                         ablations=config.ABLATIONS, variant=config.variant, needs_features=True,
                         needs_network=needs_network, monitor=DiscWatch,
                         # read only as numbers (the head's KL weight and temperature, the
                         # joint form's block-term weight): may differ within one program.
                         run_fields=('msmgan.beta', 'msmgan.tau', 'stages.forced_joint'))
