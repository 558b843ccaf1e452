"""The `lowdata` v3 comparison with MS-MGANs as the v3 design study chose it over all of its
candidates (issue 36), LIT's joint form included.

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
keep MS-MGANs' start (the same `student.init` in every candidate of the study).
Results: results/lowdata_v3b/compare.{json,md} and the two plots.
"""
from configs import compare_lowdata_v3
from msmgan_jax import config as config_lib


def get_config(arg=None):
  if arg not in (None, ''):
    raise config_lib.ConfigError(f'unknown config argument {arg!r}: use nothing')
  c = compare_lowdata_v3.get_config(candidates=0)
  c.title = ('lowdata (v3b): resnet20 -> resnet8 on 10% of Fashion-MNIST, MS-MGANs as the v3 '
             'design study chose it over all its candidates')
  c.config_path = 'configs/compare_lowdata_v3b.py'
  c.workdir, c.out = 'runs/compare_lowdata_v3b', 'results/lowdata_v3b'
  return c
