"""The `full` comparison: ce, kd and MS-MGANs, a resnet8 student on the whole Fashion-MNIST
training split (15 epochs, 900,000 images each), distilled from the same resnet20 teacher.

Run:  python -m msmgan_jax.compare --config configs/compare_full.py
Settings: the ones chosen on the validation hold-out by configs/compare_lowdata.py (its
results/lowdata/compare.json); tuning again at full scale would cost 9 more full-data
runs. 3 seeds in one program per method; about 3.4 hours on the 2-core development machine
once the teacher exists (measured alone: ce 2922 s, kd 4209 s, msmgan 4917 s; resumable:
stop it and rerun the command).
Results: results/full/compare.{json,md} and the plots.
"""
from configs import compare_lowdata
from msmgan_jax import config as config_lib


def get_config(arg=None):
  c = compare_lowdata.get_config()
  c.title = 'full: resnet20 -> resnet8 on all of Fashion-MNIST'
  c.description = (
      'The full-data resnet20 teacher (15 epochs, anchors at epochs 5/10/15) guides a resnet8 '
      'student that trains on the whole training split for 15 epochs (900,000 images, the '
      'same budget for every method), tested on the full test split.')
  c.config_path = 'configs/compare_full.py'
  c.workdir, c.out = 'runs/compare_full', 'results/full'
  c.base.dataset.train_split = 'train'
  c.base.student.eval_every_epochs = 1.0
  c.methods, c.ablations = ('ce', 'kd', 'msmgan'), ()
  c.settings_from = 'results/lowdata/compare.json'
  if arg not in (None, ''):
    raise config_lib.ConfigError(f'unknown config argument {arg!r}: use nothing')
  return c
