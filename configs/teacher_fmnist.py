"""Full-data teacher: resnet20 on Fashion-MNIST, 15 epochs, anchors at epochs 5, 10, 15.

Run:  python -m msmgan_jax.main --config configs/teacher_fmnist.py --workdir runs/teacher_fmnist
Took: see README ("Measured results"); results/teacher_fmnist/ holds its summary and metrics.
Its anchors are what configs/msmgan_fmnist_full.py distils from.
"""
from msmgan_jax import config as config_lib


def get_config(arg=None):
  cfg = config_lib.defaults()
  cfg.method = 'teacher'
  cfg.teacher.model = 'resnet20'
  cfg.teacher.epochs = 15
  cfg.stages.num = 3
  return config_lib.finalize(cfg, arg)
