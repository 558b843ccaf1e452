"""Ablation "no GAN" (METHOD.md section 3): alpha_adv = 0, greedy feature regression only
(Stagewise KD); no discriminators are built.

Run: python -m msmgan_jax.main --config configs/ablation_no_gan.py[:smoke] --workdir DIR
Everything else is configs/default.py; summary.json says variant ["no_gan"].
"""
from configs import default
from msmgan_jax import config as config_lib


def get_config(arg=None):
  cfg = default.get_config()
  cfg.gan.alpha_adv = 0.0
  return config_lib.finalize(cfg, arg)
