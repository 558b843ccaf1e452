"""Classify images with an exported student: the library behind `python -m msmgan_jax.predict`.

DIR is what `msmgan_jax.export` wrote; this needs TensorFlow only (no JAX, no dataset).
`predict(DIR, paths, k)` decodes each image file (PNG or JPEG; whatever `tf.io.decode_image`
reads) to the model's channels (RGB to grayscale or back, alpha dropped), resizes it
(bilinear, antialiased) when its height and width differ from the model's, and returns its
`k` most likely classes, (name, probability) pairs, most likely first. Raises `BadInput`
for no export in DIR or an image missing or unreadable.
"""
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')  # its start-up notice; XLA runs the model.

import json  # noqa: E402
import re  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


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
