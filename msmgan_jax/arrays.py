"""`python -m msmgan_jax.arrays NAME OUT.npz` (installed, also `msmgan-arrays`): a dataset's
splits saved for runs without TensorFlow (see `msmgan_jax.data.arrays`)."""
import argparse
import os
import sys
from typing import Optional

from msmgan_jax import cli


def main(argv: Optional[list] = None) -> int:
  """`python -m msmgan_jax.arrays NAME OUT.npz`: saves a dataset's splits for TF-free runs."""
  parser = argparse.ArgumentParser(prog='python -m msmgan_jax.arrays', description=main.__doc__)
  parser.add_argument('name', help='dataset.name: a TFDS name, a prepared TFDS dir or an image '
                      'folder')
  parser.add_argument('out', help='the .npz file to write')
  parser.add_argument('--train-split', default='train')
  parser.add_argument('--test-split', default='test')
  parser.add_argument('--data-dir', default='', help='TFDS data dir')
  parser.add_argument('--image-size', type=int, default=0, help='resize to this (0 = keep)')
  args = parser.parse_args(argv)
  cli.quiet()  # before TensorFlow loads.
  from msmgan_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from msmgan_jax.data import datasets as data  # pylint: disable=g-import-not-at-top
  from msmgan_jax.data.arrays import save  # pylint: disable=g-import-not-at-top
  cfg = config_lib.defaults().dataset
  cfg.name, cfg.data_dir, cfg.image_size = args.name, args.data_dir, args.image_size
  cfg.train_split, cfg.test_split = args.train_split, args.test_split
  try:
    arrays = data.to_arrays(cfg)
  except data.DataError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  save(args.out, arrays)
  print(f'wrote {args.out}: train {arrays["train_images"].shape}, test '
        f'{arrays["test_images"].shape}, '
        f'{os.path.getsize(args.out) / 2 ** 20:.1f} MiB')
  return 0


if __name__ == '__main__':
  sys.exit(main())
