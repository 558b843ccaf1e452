"""Ablation "end to end" (METHOD.md section 2): all student blocks train at once on the
summed per-block losses, then the head phase.

Run: python -m msmgan_jax.main --config configs/ablation_end_to_end.py[:smoke] --workdir DIR
Everything else is configs/default.py; summary.json says variant ["end_to_end"].
"""
from configs import default
from msmgan_jax import config as config_lib


def get_config(arg=None):
  cfg = default.get_config()
  cfg.stages.greedy = False
  return config_lib.finalize(cfg, arg)
