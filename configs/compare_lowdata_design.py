"""A design study of MS-MGANs' schedule on `lowdata`'s validation split (no test split).

Run:  python -m msmgan_jax.compare --config configs/compare_lowdata_design.py
Every candidate trains the resnet8 student on `train[:10%]` exactly as configs/compare_lowdata.py
does (same teacher anchors, budget and seed) and is scored on `train[90%:]`. Candidates 0-2 are
lowdata's first msmgan tuning candidates; the later ones test the issue's leads one at a time.
This is tuning effort the baselines did not get: the README says so next to the results.
Results: results/lowdata_design/compare.{json,md} and the validation curves.
"""
from configs import compare_lowdata
from msmgan_jax import config as config_lib


def get_config(arg=None):
  c = compare_lowdata.get_config()
  c.title = 'lowdata design study: MS-MGANs schedules on the validation split'
  c.config_path = 'configs/compare_lowdata_design.py'
  c.description = (
      "lowdata's setting: the full-data resnet20 teacher (anchors at epochs 5/10/15) guides a "
      'resnet8 student that trains on `train[:10%]` for 15 epochs of that slice; every '
      'candidate is scored on `train[90%:]`, a hold-out no student trains on.')
  c.workdir, c.out = 'runs/design_lowdata', 'results/lowdata_design'
  c.methods, c.ablations, c.tune_only = ('msmgan',), (), True
  c.design_note = ('Candidates of MS-MGANs only, one seed each, scored on the validation '
                   'split; each later candidate changes one thing from an earlier one. '
                   '"chosen": the best validation accuracy. Left out: the copy with '
                   'frozen BatchNorm at mutual.lr=0.01 (candidate 4 + mutual.frozen_bn), '
                   'which diverged (NaN loss at its 6th head step).')
  # lowdata's first msmgan candidates: METHOD.md's settings; blocks at the full rate and a
  # budget favouring the strongest anchor; then also feature terms kept during the head
  # and a faster-learning discriminator.
  rate = 'stages.block_lr=0.1; stages.finetune_lr_mult=1.0; stages.stage_shares=(0.2, 0.2, 0.6)'
  t = ('', rate, rate + '; stages.head_feat=1.0; disc.lr=0.001')
  late = rate + '; disc.lr=0.001; stages.block_stages=1'  # block phases in stage 1 only.
  c.tuning.msmgan = t + (
      late + '; stages.head_feat=1.0',  # = candidate 2 with block phases in stage 1 only.
      late,  # no feature MSE while the head trains.
      late + '; mutual.enabled=False',
      late + '; mutual.lr=0.001; mutual.beta_t=0.1',  # a slower, steadier mutual copy.
      late + '; stages.head_feat=0.1',  # a light feature term.
      # (late + '; mutual.frozen_bn=True' at mutual.lr=0.01 diverged: NaN at the 6th head step.)
      late + '; mutual.lr=0.001; mutual.beta_t=0.1; mutual.frozen_bn=True',  # both.
      late.replace('stages.block_stages=1', 'stages.block_stages=0')
      + '; mutual.lr=0.001; mutual.beta_t=0.1',  # candidate 6 without any block phase.
  )
  if arg not in (None, ''):
    raise config_lib.ConfigError(f'unknown config argument {arg!r}: use nothing')
  return c
