"""Ablation "single stage" (METHOD.md section 1): M = 1, the final teacher only.

Run: python -m msmgan_jax.main --config configs/ablation_single_stage.py[:smoke] --workdir DIR
Everything else is configs/default.py; summary.json says variant ["single_stage"].
"""
from configs import default
from msmgan_jax import config as config_lib


def get_config(arg=None):
  cfg = default.get_config()
  cfg.anchors.num = 1
  cfg.anchors.epochs = ()
  return config_lib.finalize(cfg, arg)
