"""Baseline `ce`: the resnet8 student alone on full Fashion-MNIST, the same 15-epoch budget
as configs/msmgan_fmnist_full.py.

Run:  python -m msmgan_jax.main --config configs/ce_fmnist_full.py --workdir runs/ce_fmnist_full
Took: 1514 s (25 min) on the 2-core x86_64 CPU machine of this project, sharing it with the
      teacher run. Reached: test accuracy 0.9307.
results/fmnist_full/ce_fmnist_full/ holds its config, summary and metrics.
"""
from msmgan_jax import config as config_lib


def get_config(arg=None):
  cfg = config_lib.defaults()
  cfg.method = 'ce'
  cfg.student.model = 'resnet8'
  cfg.student.epochs = 15
  return config_lib.finalize(cfg, arg)
