"""The `lowdata` v3 comparison with MS-MGANs as the v3 design study chose it over its
candidates 0-16 (issue 36), LIT's joint form included.

Run:  python -m msmgan_jax.compare --config configs/compare_lowdata_v3b.py
      (resumable; --report rewrites the tables)
configs/compare_lowdata_v3.py was planned when the design study had screened candidates
0-13 and runs MS-MGANs with their best (teacher forcing in the greedy block phases). The
study then screened LIT's joint form (candidates 14-16: each block's teacher-forced
feature MSE beside the head's logit loss, Koratana et al. ICML 2019), and its choice over
every candidate may differ. This comparison is v3's protocol, runs and seeds with that
choice for MS-MGANs (its tuning, finals, ablations and budget rows): every baseline's run is
v3's very config, so v3's records are adopted (copy them in once:
`cp -r results/lowdata_v3/runs results/lowdata_v3b/`), and kd, dkd and the logit baselines
keep MS-MGANs' start (the same `student.init` in every candidate of the study). Where the
chosen design has no discriminator, msmgan's candidate that weighed the adversarial term
weighs the design's own term instead (a candidate that changes nothing would leave msmgan
three candidates to the baselines' four).
Results: results/lowdata_v3b/compare.{json,md} and the two plots.
"""
from configs import compare_lowdata_v3
from msmgan_jax import config as config_lib
from msmgan_jax.methods.msmgan import config as msmgan_config


# The design candidates screened when this comparison was planned (0-16, LIT's joint form
# included); later ones (17-) would choose another MS-MGANs, for a comparison of their own.
SCREENED = 17


def get_config(arg=None):
  return pinned(arg, SCREENED, 'v3b', 'its candidates 0-16')


def pinned(arg, screened: int, version: str, over: str):
  """v3's comparison with MS-MGANs the design study's choice over its first `screened`
  candidates (`over` says which, in the title), named `version` (its config file, workdir
  and results folder follow the name); ConfigError for a config argument."""
  if arg not in (None, ''):
    raise config_lib.ConfigError(f'unknown config argument {arg!r}: use nothing')
  c = compare_lowdata_v3.get_config(candidates=screened)
  c.title = (f'lowdata ({version}): resnet20 -> resnet8 on 10% of Fashion-MNIST, MS-MGANs as '
             f'the v3 design study chose it over {over}')
  c.config_path = f'configs/compare_lowdata_{version}.py'
  c.workdir, c.out = f'runs/compare_lowdata_{version}', f'results/lowdata_{version}'
  weigh_the_joint_term(c)
  return c


def weigh_the_joint_term(c) -> None:
  """Gives msmgan's candidate that weighs the adversarial term to the joint term instead,
  where the chosen design has no discriminator but the joint form.

  msmgan's candidates weigh its own terms (v2: the adversarial term at 0.3, the head's KL
  at 0.5). Without a discriminator gan.alpha_adv would change nothing (the candidate would
  train the lr-only candidate's student again): its place goes to the weight of the
  design's own term, the joint form's, at LIT's 1 : 3 ratio of section to KD loss (0.3
  against 1.0; Koratana et al. ICML 2019). Changes `c.tuning.msmgan` in place.
  """
  design = compare_lowdata_v3.msmgan_design(c)
  if not msmgan_config.has_gan(design) and design.stages.forced_joint > 0:
    c.tuning.msmgan = tuple(t.replace('gan.alpha_adv=0.3', 'stages.forced_joint=0.3')
                            for t in c.tuning.msmgan)
