"""Full-data teacher: resnet20 on Fashion-MNIST, 15 epochs, anchors at epochs 5, 10, 15.

Run:  python -m msmgan_jax.main --config configs/teacher_fmnist.py --workdir runs/teacher_fmnist
Took: 3448 s (57 min) on the 2-core x86_64 CPU machine of this project, sharing it with
      another training run most of the time (about 2 min/epoch alone).
Reached: test accuracy 0.9412 (anchors: epoch 5 0.8935, epoch 10 0.9254, epoch 15 0.9412).
results/fmnist_full/teacher_fmnist/ holds its config, summary and metrics.
Its anchors are what configs/msmgan_fmnist_full.py distils from.
"""
from msmgan_jax import config as config_lib


def get_config(arg=None):
  cfg = config_lib.defaults()
  cfg.method = 'teacher'
  cfg.teacher.model = 'resnet20'
  cfg.teacher.epochs = 15
  cfg.anchors.num = 3
  return config_lib.finalize(cfg, arg)
