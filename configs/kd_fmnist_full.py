"""Baseline `kd` (Hinton KD from the final teacher): the resnet8 student on full
Fashion-MNIST, the same 15-epoch budget as configs/msmgan_fmnist_full.py.

Run:  python -m msmgan_jax.main --config configs/kd_fmnist_full.py --workdir runs/kd_fmnist_full
      (trains the resnet20 teacher first, as configs/teacher_fmnist.py does; or give its
      anchors with --config.teacher.checkpoints=...). Not yet run to the end by us.
"""
from msmgan_jax import config as config_lib


def get_config(arg=None):
  cfg = config_lib.defaults()
  cfg.method = 'kd'
  cfg.teacher.model = 'resnet20'
  cfg.student.model = 'resnet8'
  cfg.student.epochs = 15
  return config_lib.finalize(cfg, arg)
