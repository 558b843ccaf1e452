"""Ship the distilled student: `python -m msmgan_jax.export --workdir W --out DIR [--tflite]`.

DIR becomes a TensorFlow SavedModel of the student of run W with its preprocessing built
in: the `serving_default` signature takes `images`, uint8 [batch, H, W, C] in the training
image shape (after `dataset.image_size`, which predict resizes to), scales and normalises
them as training's evaluation does, and returns float32 `logits` and `probabilities`
[batch, classes]. Beside it, `DIR/model.json` holds the class names, the input shape and
where the model came from (for an image folder the run split itself, `source.split`: that
split's record), so `python -m msmgan_jax.predict --model DIR IMAGE...` needs nothing else
(and no JAX). `--tflite` adds `DIR/model.tflite` with the same signature. How the export is
made and written: `msmgan_jax.serving.export`. Installed, the command is also
`msmgan-export`.

Exit codes: 0 done, 1 the export could not be written, 2 bad input (no workdir, no
finished student, DIR not empty without --overwrite, a checkpoint not of the config's
model; nothing written). `--help` and bad arguments answer before TensorFlow or JAX load.
"""
import argparse
import os
import sys

from msmgan_jax import cli


def main(argv=None) -> int:
  """The command line (`argv` without the program name); returns the exit code."""
  parser = argparse.ArgumentParser(
      prog='python -m msmgan_jax.export', description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--workdir', required=True, help='the run whose student to export')
  parser.add_argument('--out', required=True, help='the export folder (new or empty)')
  parser.add_argument('--tflite', action='store_true', help='also write DIR/model.tflite')
  parser.add_argument('--overwrite', action='store_true',
                      help='replace an export already in --out')
  args = parser.parse_args(argv)
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')  # its start-up notice; XLA runs the model.
  from absl import logging  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from msmgan_jax.serving import export  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.ERROR)  # orbax logs each restore, and warns of read-only.
  tf.config.set_visible_devices([], 'GPU')  # TensorFlow only traces and writes here.
  done = {}
  code = cli.run_command(
      lambda: done.update(export.export(args.workdir, args.out, args.tflite, args.overwrite)),
      hints={OSError: lambda e: f'could not write {args.out} ({e}); nothing there was changed'})
  if code:
    return code
  meta = done
  shape = 'x'.join(map(str, meta['input_shape']))
  print(f'exported {meta["model"]} ({meta["dataset"]}, uint8 {shape} images, '
        f'{len(meta["labels"])} classes) to {args.out}; try: python -m msmgan_jax.predict '
        f'--model {args.out} IMAGE.png')
  return 0


if __name__ == '__main__':
  sys.exit(main())
