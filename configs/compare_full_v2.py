"""The `full` comparison under the v2 protocol: ce, kd, dkd and MS-MGANs, a resnet8 student
on the whole Fashion-MNIST training split (15 epochs, 900,000 images each), distilled from
the same resnet20 teacher, 3 seeds each; if lowdata's msmgan starts from an anchor
(`student.init`), kd and dkd with that start too (budget `init`, beside msmgan's main run).

Run:  python -m msmgan_jax.compare --config configs/compare_full_v2.py
Settings: the ones chosen on the validation hold-out by configs/compare_lowdata_v2.py (its
results/lowdata_v2/compare.json, which must be finished first); tuning again at full scale
would cost 16 more full-data tuning runs (32 seed trainings). No validation split is
checked here: nothing is tuned. Resumable: stop it and rerun the command.
Results: results/full_v2/compare.{json,md} and the plots.
"""
import ml_collections

from configs import compare_lowdata_v2
from msmgan_jax import config as config_lib


def full_data(c, version: str, methods: tuple, note: str = ''):
  """Lowdata comparison `c` (its protocol `version`, 'v2') moved onto the whole training
  split: configs/compare_full_<version>.py, runs/ and results/full_<version>/, `methods`
  x 3 seeds, no ablations, an evaluation each epoch; `note` ends the description."""
  c.title = f'full ({version} protocol): resnet20 -> resnet8 on all of Fashion-MNIST'
  c.description = (
      'The full-data resnet20 teacher (15 epochs, anchors at epochs 5/10/15) guides a resnet8 '
      'student that trains on the whole training split for 15 epochs (900,000 images, the '
      'same budget for every method), tested on the full test split' + (note or '') + '.')
  c.config_path = f'configs/compare_full_{version}.py'
  c.workdir, c.out = f'runs/compare_full_{version}', f'results/full_{version}'
  c.base.dataset.train_split = 'train'
  c.base.student.eval_every_epochs = 1.0
  c.methods, c.ablations, c.seeds = methods, (), 3
  return c


def get_config(arg=None):
  c = full_data(compare_lowdata_v2.get_config(), 'v2', ('ce', 'kd', 'dkd', 'msmgan'))
  # Only the like-with-like budget, if lowdata's msmgan starts from an anchor: kd and dkd
  # with that start, beside msmgan's main run (3 seeds, like the main runs).
  c.budgets = {k: v for k, v in c.budgets.items() if k == 'init'}
  # The target at full data: above kd and above dkd, each paired interval above zero.
  c.target = ml_collections.ConfigDict({'margin': 0.0, 'against': ('kd', 'dkd')})
  c.min_validation_images = 0  # no tuning here: the settings come from lowdata's.
  c.settings_from = 'results/lowdata_v2/compare.json'
  if arg not in (None, ''):
    raise config_lib.ConfigError(f'unknown config argument {arg!r}: use nothing')
  return c
