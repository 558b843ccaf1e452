"""Classify images with an exported student: `python -m msmgan_jax.predict --model DIR IMAGE...`.

DIR is what `python -m msmgan_jax.export` wrote; this needs TensorFlow only (no JAX, no
dataset). Each image file (PNG or JPEG; whatever `tf.io.decode_image` reads) is decoded to
the model's channels (RGB to grayscale or back, alpha dropped), resized (bilinear,
antialiased) when its height and width differ from the model's, and printed on one line
with its `--top-k` classes, most likely first:

  shoe.png: Ankle boot 97.1%, Sneaker 2.3%, Sandal 0.6%

Exit codes: 0 done, 2 bad input (no export in DIR, an image missing or unreadable; then
no prediction is printed).
"""
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')  # its start-up notice; XLA runs the model.

import argparse  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from msmgan_jax import cli  # noqa: E402

FORMAT, META = 'msmgan_jax.export/1', 'model.json'  # what msmgan_jax.export writes.


from msmgan_jax.errors import BadInput  # noqa: E402,F401 (predict.BadInput)


def read_meta(model_dir: str) -> dict:
  """The export's `model.json` (labels, input shape, signature); BadInput if DIR holds none."""
  path = os.path.join(model_dir, META)
  if not os.path.isdir(model_dir):
    what = 'is not a folder' if os.path.exists(model_dir) else 'not found'
    raise BadInput(f'--model {model_dir} {what}; give a folder written by '
                   'python -m msmgan_jax.export')
  if not os.path.isfile(path):
    raise BadInput(f'--model {model_dir} holds no {META}: it is not a folder written by '
                   'python -m msmgan_jax.export')
  try:
    with open(path) as f:
      meta = json.load(f)
  except (OSError, ValueError) as e:
    raise BadInput(f'{path} cannot be read ({e}); export the student again') from e
  if not isinstance(meta, dict) or meta.get('format') != FORMAT:
    raise BadInput(f'{path} is not of format {FORMAT}; export the student again')
  return meta


def read_image(path: str, shape) -> np.ndarray:
  """The image at `path` as uint8 of `shape` (H, W, C): channels converted by the decoder,
  then resized when its height and width differ."""
  height, width, channels = shape
  if not os.path.isfile(path):
    raise BadInput(f'image {path} not found')
  try:
    image = tf.io.decode_image(tf.io.read_file(path), channels=channels,
                               expand_animations=False)
  except tf.errors.OpError as e:
    reason = re.sub(r'\{\{.*?\}\}|\[Op:.*', '', e.message).strip()
    raise BadInput(f'image {path} cannot be read as an image ({reason})') from e
  if tuple(image.shape[:2]) != (height, width):
    image = tf.image.resize(image, (height, width), antialias=True)
    image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
  return image.numpy()


def top_k(probabilities: np.ndarray, labels, k: int) -> list:
  """[(label, probability)] of the `k` most likely classes, most likely first."""
  order = np.argsort(-probabilities, kind='stable')[:k]
  return [(labels[i], float(probabilities[i])) for i in order]


def predict(model_dir: str, paths, k: int) -> list:
  """The `top_k` list of each image in `paths` under the export in `model_dir`."""
  meta = read_meta(model_dir)
  images = np.stack([read_image(p, meta['input_shape']) for p in paths])
  try:
    serve = tf.saved_model.load(model_dir).signatures[meta['signature']]
  except (OSError, KeyError, ValueError, tf.errors.OpError) as e:
    raise BadInput(f'the SavedModel in {model_dir} cannot be loaded ({type(e).__name__}: '
                   f'{str(e)[:200]}); export the student again') from e
  probabilities = serve(**{meta['inputs']: tf.constant(images)})['probabilities'].numpy()
  return [top_k(p, meta['labels'], k) for p in probabilities]


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
  tf.get_logger().setLevel('ERROR')
  results = []
  code = cli.run_command(lambda: results.extend(predict(args.model, args.images, args.top_k)))
  if code:
    return code
  for path, classes in zip(args.images, results):
    print(f'{path}: ' + ', '.join(f'{name} {100 * p:.1f}%' for name, p in classes))
  return 0


if __name__ == '__main__':
  sys.exit(main())
