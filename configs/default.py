"""The main job: MS-MGANs on Fashion-MNIST, resnet20 teacher -> resnet8 student.

Run:   python -m msmgan_jax.main --config configs/default.py --workdir runs/default
       Trains the teacher 4 epochs (anchors at epochs 1, 3, 4), then the student through
       3 stages x (block_1, block_2, block_3, head) on a 2-epoch image budget, then
       evaluates. Measured on this project's 2-core x86_64 CPU machine while another
       training shared it: 1652 s (27.5 min; alone about 20 min, estimated, not measured),
       teacher 0.9208, student 0.8695 test accuracy (results/default/), with the code
       before commit e85771b; not rerun since the schedule and discriminator changes.
Quick: python -m msmgan_jax.main --config configs/default.py:smoke --workdir runs/smoke
       (20% of the train split, 2 teacher epochs, 2 stages; every phase runs.)
The full-budget run is configs/msmgan_fmnist_full.py.
"""
from msmgan_jax import config as config_lib


def get_config(arg=None):
  cfg = config_lib.defaults()
  cfg.method = 'msmgan'
  cfg.teacher.model = 'resnet20'
  cfg.teacher.epochs = 4
  cfg.student.model = 'resnet8'
  cfg.student.epochs = 2
  return config_lib.finalize(cfg, arg)
