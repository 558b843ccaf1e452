"""The `lowdata` comparison: every method and MS-MGANs ablation, a resnet8 student on 10% of
Fashion-MNIST's training split, distilled from the full-data resnet20 teacher.

Run:  python -m msmgan_jax.compare --config configs/compare_lowdata.py
      (add --report to rewrite the tables from the finished runs; --config.seeds=N etc.)
The teacher is configs/teacher_fmnist.py's run in runs/teacher_fmnist (trained first if it
is not there, or resumed). Tuning: 3 candidate settings per method, one seed each, scored
on train[90%:] (never trained on by any student); the final runs use each method's best
candidate with 3 seeds in one program and are tested on the full test split.
Results: results/lowdata/compare.{json,md}, accuracy_vs_images.png, accuracy_vs_wall.png.
"""
import ml_collections

from configs import teacher_fmnist
from msmgan_jax import config as config_lib


def get_config(arg=None):
  c = ml_collections.ConfigDict()
  c.title = 'lowdata: resnet20 -> resnet8 on 10% of Fashion-MNIST'
  c.description = (
      'The full-data resnet20 teacher (15 epochs, anchors at epochs 5/10/15) guides a resnet8 '
      'student that trains on `train[:10%]` (6,000 images) for 15 epochs of that slice '
      '(90,000 images, the same budget for every method), tested on the full test split.')
  c.config_path = 'configs/compare_lowdata.py'
  c.teacher = teacher_fmnist.get_config()
  c.teacher_workdir = 'runs/teacher_fmnist'
  c.workdir = 'runs/compare_lowdata'
  c.out = 'results/lowdata'
  c.seeds = 3
  c.validation_split = 'train[90%:]'

  b = config_lib.defaults()
  b.teacher.model, b.teacher.epochs, b.anchors.num = 'resnet20', 15, 3
  b.student.model, b.student.epochs = 'resnet8', 15
  b.dataset.train_split, b.dataset.test_split = 'train[:10%]', 'test'
  b.student.eval_every_epochs = 3.0  # curves for the plots: every 3 epochs and each stage's end.
  b.student.eval_every_phase = False  # (12 phase-end evaluations would cost msmgan minutes).
  # The settings candidate 0 stands for, pinned: later changes to config.defaults() (say, a
  # default chosen by this comparison) must not change the runs it has already made.
  b.student.lr, b.kd.tau, b.kd.beta, b.at.beta, b.fitnets.hint_share = 0.1, 4.0, 0.9, 1000.0, 0.2
  b.dml.tau, b.dml.beta, b.disc.lr = 1.0, 1.0, 2e-4
  b.msmgan.tau, b.msmgan.beta = 4.0, 0.9  # msmgan's head loss (it read kd's before it had its own).
  b.student.block_lr, b.student.finetune_lr_mult, b.stages.head_feat = 0.05, 0.5, 0.0
  b.student.stage_shares, b.student.schedule, b.stages.block_stages = (), 'global', -1
  b.mutual.lr, b.mutual.beta_t, b.mutual.frozen_bn = 0.01, 0.5, False
  c.base = b

  c.methods = ('ce', 'kd', 'msmgan', 'rco', 'fitnets', 'at', 'dml', 'skd')  # the run order.
  c.ablations = ('single_stage', 'end_to_end', 'no_gan', 'no_mutual', 'no_blocks')
  # v1's single_stage, as it ran: one stage with the stage's phase shares, so its block
  # phases had 5x msmgan's block steps (confounded; msmgan's single_stage now keeps them).
  c.ablation_definitions = ml_collections.ConfigDict({
      'single_stage': 'stages.num=1; stages.stage_shares=()'})
  # The same number of candidates for every method; candidate 0 is the paper's defaults.
  t = c.tuning = ml_collections.ConfigDict()
  t.ce = ('', 'student.lr=0.05', 'student.lr=0.2')
  t.kd = ('', 'kd.tau=2.0', 'kd.beta=0.5')
  t.rco = ('', 'kd.tau=2.0', 'kd.beta=0.5')
  t.fitnets = ('', 'fitnets.hint_share=0.1', 'fitnets.hint_share=0.4')
  t.at = ('', 'at.beta=250.0', 'at.beta=4000.0')
  t.dml = ('', 'dml.beta=0.5', 'dml.beta=2.0')
  t.skd = ('', 'stages.block_lr=0.1', 'stages.block_lr=0.02')
  # MS-MGANs: METHOD.md's settings (pinned above); then the schedule the design study
  # (configs/compare_lowdata_design.py, validation split only) found best while keeping every
  # part of the method, now config.defaults(): blocks at the full rate, 60% of the budget on
  # the final anchor, greedy block phases (with their GANs) in the first stage only, a
  # faster discriminator and a slower, steadier mutual copy; then the best schedule before
  # that study (block phases in every stage, feature terms kept during the head).
  rate = 'stages.block_lr=0.1; stages.finetune_lr_mult=1.0; stages.stage_shares=(0.2, 0.2, 0.6)'
  t.msmgan = ('', rate + '; disc.lr=0.001; stages.block_stages=1; mutual.lr=0.001; '
              'mutual.beta_t=0.1', rate + '; stages.head_feat=1.0; disc.lr=0.001')
  if arg == 'smoke':
    return smoke(c)
  if arg not in (None, ''):
    raise config_lib.ConfigError(f'unknown config argument {arg!r}: use nothing or :smoke')
  return c


def smoke(c):
  """Minutes, not hours: 2 seeds, 1 epoch of 1% of the data, the smoke teacher."""
  c.teacher = config_lib.smoke(c.teacher)
  c.teacher_workdir, c.workdir, c.out = 'runs/teacher_fmnist_smoke', 'runs/compare_smoke', 'runs/compare_smoke/results'
  c.seeds = 2
  c.base.anchors.num = c.teacher.anchors.num
  c.base.student.epochs, c.base.student.warmup_epochs = 1, 0.1
  c.base.dataset.train_split, c.validation_split, c.base.dataset.test_split = (
      'train[:1%]', 'train[95%:]', 'test[:10%]')
  c.base.student.eval_every_epochs = 0.5
  c.tuning.msmgan = tuple(s.replace('(0.2, 0.2, 0.6)', '(0.4, 0.6)') for s in c.tuning.msmgan)
  return c
