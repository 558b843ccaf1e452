"""Command line: `python -m msmgan_jax.main --config configs/X.py[:smoke] --workdir DIR`.

Overrides: `--config.teacher.epochs=3`. Exit code 2 for bad input (config, data,
checkpoints), with a message naming the field or file and the fix.
"""
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', None, 'config file, e.g. configs/default.py',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'run directory (default: runs/<config>[_<arg>])')
EXIT_BAD_INPUT = 2


def _parse(argv):
  """Parses flags; a bad flag, config file or override exits with code 2 and a message."""
  from msmgan_jax.config import ConfigError  # pylint: disable=g-import-not-at-top
  path = next((a.split('=', 1)[1] if '=' in a else None for a in argv if a.startswith('--config=')),
              None) or next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == '--config'), None)
  if path and not os.path.exists(path.partition(':')[0]):
    _fail(f'config file {path.partition(":")[0]} not found; pass e.g. --config configs/default.py')
  try:
    rest = flags.FLAGS(argv)
    _CONFIG.value  # Loads the file and applies the --config.a.b=v overrides.
  except flags.Error as e:
    _fail(str(e))
  except ConfigError as e:
    _fail(str(e))
  except (AttributeError, KeyError) as e:
    _fail(f'unknown config field in an override ({e}); see msmgan_jax/config.py for the fields')
  except (ValueError, TypeError) as e:
    _fail(f'bad config override: {e}')
  return rest


def _fail(msg: str):
  sys.stderr.write(f'error: {msg}\n')
  sys.exit(EXIT_BAD_INPUT)


def default_workdir(config_arg: str) -> str:
  path, _, arg = config_arg.partition(':')
  name = os.path.splitext(os.path.basename(path))[0]
  return os.path.join('runs', f'{name}_{arg}' if arg else name)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax logs every save and restore at INFO.
  # TensorFlow only feeds data: keep it off any accelerator JAX uses.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], 'GPU')
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  tfds.disable_progress_bar()
  from msmgan_jax import config as config_lib, data, train, utils  # pylint: disable=g-import-not-at-top
  if _CONFIG.value is None:
    sys.stderr.write('error: --config is required, e.g. --config configs/default.py\n')
    return EXIT_BAD_INPUT
  workdir = _WORKDIR.value or default_workdir(flags.FLAGS['config'].config_filename)
  try:
    train.train_and_evaluate(_CONFIG.value, workdir)
  except (config_lib.ConfigError, data.DataError, utils.CheckpointError) as e:
    sys.stderr.write(f'error: {e}\n')
    return EXIT_BAD_INPUT
  print(f'done: {os.path.join(workdir, "summary.json")}')
  return 0


if __name__ == '__main__':
  flags.mark_flag_as_required('config')
  app.run(main, flags_parser=_parse)
