"""MS-MGANs at full budget on Fashion-MNIST: resnet20 teacher -> resnet8 student.

Distils from the three anchors (epochs 5, 10, 15) of the teacher trained by
configs/teacher_fmnist.py, so run that first:
  python -m msmgan_jax.main --config configs/teacher_fmnist.py --workdir runs/teacher_fmnist
  python -m msmgan_jax.main --config configs/msmgan_fmnist_full.py --workdir runs/msmgan_fmnist_full
The student sees 15 epochs of images in all (5 per stage), the budget of
configs/ce_fmnist_full.py. Measured on this project's 2-core x86_64 CPU machine (shared
with other runs for about 41 of its 61 minutes): student 3414 s, test accuracy 0.9234
(after stages 1/2/3: 0.9049 / 0.9173 / 0.9234), below ce's 0.9307 at the same budget.
results/fmnist_full/ holds the summaries, metrics and a plot. That was the code before
commit e85771b: a cosine restart per phase, D on the anchor's blocks k+1..K over whole
batches. Not rerun since the schedule, discriminator and mutual-copy changes.
"""
from msmgan_jax import config as config_lib

TEACHER_WORKDIR = 'runs/teacher_fmnist'


def get_config(arg=None):
  cfg = config_lib.defaults()
  cfg.method = 'msmgan'
  cfg.teacher.model = 'resnet20'
  cfg.teacher.epochs = 15
  cfg.anchors.num = 3
  cfg.teacher.checkpoints = tuple(f'{TEACHER_WORKDIR}/checkpoints/anchors/{e}'
                                  for e in config_lib.anchor_epochs(cfg))
  cfg.student.model = 'resnet8'
  cfg.student.epochs = 15
  return config_lib.finalize(cfg, arg)
