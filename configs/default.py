"""The main job: Fashion-MNIST, resnet20 teacher.

Run:   python -m msmgan_jax.main --config configs/default.py --workdir runs/default
Quick: python -m msmgan_jax.main --config configs/default.py:smoke --workdir runs/smoke
       (2 teacher epochs on 20% of the train split; about 2 minutes on 2 CPU cores,
       teacher test accuracy about 0.85).
"""
from msmgan_jax import config as config_lib


def get_config(arg=None):
  cfg = config_lib.defaults()
  cfg.teacher.epochs = 6
  return config_lib.finalize(cfg, arg)
