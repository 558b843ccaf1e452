"""Classify images with an exported student: `python -m msmgan_jax.predict --model DIR IMAGE...`.

DIR is what `python -m msmgan_jax.export` wrote; this needs TensorFlow only (no JAX, no
dataset). Each image file (PNG or JPEG; whatever `tf.io.decode_image` reads) is decoded to
the model's channels (RGB to grayscale or back, alpha dropped), resized (bilinear,
antialiased) when its height and width differ from the model's, and printed on one line
with its `--top-k` classes, most likely first:

  shoe.png: Ankle boot 97.1%, Sneaker 2.3%, Sandal 0.6%

Installed, the command is also `msmgan-predict`. Exit codes: 0 done, 2 bad input (no
export in DIR, an image missing or unreadable; then no prediction is printed). `--help` and
bad arguments answer before TensorFlow loads.
"""
import argparse
import sys

from msmgan_jax import cli


def main(argv=None) -> int:
  """The command line (`argv` without the program name); returns the exit code."""
  parser = argparse.ArgumentParser(
      prog='python -m msmgan_jax.predict', description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--model', required=True, help='a folder written by msmgan_jax.export')
  parser.add_argument('--top-k', type=int, default=3, help='classes shown per image')
  parser.add_argument('images', nargs='+', help='PNG or JPEG files')
  args = parser.parse_args(argv)
  if args.top_k < 1:
    parser.error(f'--top-k must be at least 1, got {args.top_k}')
  from msmgan_jax.serving import predict  # pylint: disable=g-import-not-at-top (TF's settings)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.get_logger().setLevel('ERROR')
  results = []
  code = cli.run_command(lambda: results.extend(predict.predict(args.model, args.images,
                                                                args.top_k)))
  if code:
    return code
  for path, classes in zip(args.images, results):
    print(f'{path}: ' + ', '.join(f'{name} {100 * p:.1f}%' for name, p in classes))
  return 0


if __name__ == '__main__':
  sys.exit(main())
