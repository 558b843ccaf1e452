"""MS-MGANs at full budget on Fashion-MNIST: resnet20 teacher -> resnet8 student.

Distils from the three anchors (epochs 5, 10, 15) of the teacher trained by
configs/teacher_fmnist.py, so run that first:
  python -m msmgan_jax.main --config configs/teacher_fmnist.py --workdir runs/teacher_fmnist
  python -m msmgan_jax.main --config configs/msmgan_fmnist_full.py --workdir runs/msmgan_fmnist_full
The student sees 15 epochs of images in all (5 per stage), the budget of
configs/ce_fmnist_full.py. Took / reached: see README ("Measured results").
"""
from msmgan_jax import config as config_lib

TEACHER_WORKDIR = 'runs/teacher_fmnist'


def get_config(arg=None):
  cfg = config_lib.defaults()
  cfg.method = 'msmgan'
  cfg.teacher.model = 'resnet20'
  cfg.teacher.epochs = 15
  cfg.stages.num = 3
  cfg.teacher.checkpoints = tuple(f'{TEACHER_WORKDIR}/checkpoints/anchors/{e}'
                                  for e in config_lib.anchor_epochs(cfg))
  cfg.student.model = 'resnet8'
  cfg.student.epochs = 15
  return config_lib.finalize(cfg, arg)
