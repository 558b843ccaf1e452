"""Ablation "no blocks": stages.block_stages = 0, no greedy block phase (and so no GAN) in
any stage: every stage is the mutual head phase alone, KD from its anchor (RCO with a
trainable anchor copy). It measures what the first stage's block phases add.

Run: python -m msmgan_jax.main --config configs/ablation_no_blocks.py[:smoke] --workdir DIR
Everything else is configs/default.py; summary.json says variant ["no_blocks"].
"""
from configs import default
from msmgan_jax import config as config_lib


def get_config(arg=None):
  cfg = default.get_config()
  cfg.stages.block_stages = 0
  return config_lib.finalize(cfg, arg)
