"""Ablation "no mutual" (METHOD.md section 4): the teacher side is frozen (discriminator
trunks frozen, no trainable anchor copy in the head phase).

Run: python -m msmgan_jax.main --config configs/ablation_no_mutual.py[:smoke] --workdir DIR
Everything else is configs/default.py; summary.json says variant ["no_mutual"].
"""
from configs import default
from msmgan_jax import config as config_lib


def get_config(arg=None):
  cfg = default.get_config()
  cfg.mutual.enabled = False
  return config_lib.finalize(cfg, arg)
