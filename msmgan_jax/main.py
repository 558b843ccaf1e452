"""Command line: `python -m msmgan_jax.main --config configs/X.py[:smoke] --workdir DIR`.

Overrides: `--config.teacher.epochs=3`. Rerunning the same command resumes; a finished
run is left as it is unless `--overwrite`. Exit codes: 0 done, 1 a failure during the
run (non-finite loss, unwritable disk; the last good checkpoint is kept), 2 bad input
(config, data, checkpoints, workdir; nothing written), 128 + signal number when
stopped by SIGTERM / SIGINT after saving a checkpoint.
"""
import os
import sys

from absl import flags, logging
from ml_collections import config_flags

EXIT_FAILED, EXIT_BAD_INPUT = 1, 2
USAGE = ('usage: python -m msmgan_jax.main --config configs/X.py[:smoke] [--workdir DIR] '
         '[--overwrite] [--distributed] [--config.FIELD=VALUE ...]')


def _flags(argv):
  """A fresh flag set for `argv` (so `run` works more than once in a process, as tests do)."""
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, 'config file, e.g. configs/default.py',
                                  flag_values=fv, lock_config=True, sys_argv=list(argv))
  flags.DEFINE_string('workdir', None, 'run directory (default: runs/<config>[_<arg>])',
                      flag_values=fv)
  flags.DEFINE_boolean('overwrite', False, 'delete a run (finished or not, any config) in '
                       '--workdir and start this one', flag_values=fv)
  flags.DEFINE_boolean('distributed', False, 'call jax.distributed.initialize() first: one '
                       'process per host of a multi-host job (Cloud TPU pods, SLURM)',
                       flag_values=fv)
  return fv


def _parse(argv):
  """(config, workdir, overwrite, distributed) from `argv`; `_BadInput` otherwise."""
  from msmgan_jax.config import ConfigError  # pylint: disable=g-import-not-at-top
  path = next((a.split('=', 1)[1] for a in argv if a.startswith('--config=')), None) or next(
      (argv[i + 1] for i, a in enumerate(argv[:-1]) if a == '--config'), None)
  if path is None:
    raise _BadInput(f'--config is required, e.g. --config configs/default.py\n{USAGE}')
  if not os.path.exists(path.partition(':')[0]):
    raise _BadInput(f'config file {path.partition(":")[0]} not found; pass e.g. '
                    '--config configs/default.py')
  fv = _flags(argv)
  try:
    fv(argv)
    cfg = fv.config  # Loads the file and applies the --config.a.b=v overrides.
  except flags.Error as e:
    raise _BadInput(f'{_unknown_override(argv) or _last_line(str(e))}\n{USAGE}') from e
  except ConfigError as e:
    raise _BadInput(str(e)) from e
  except (AttributeError, KeyError) as e:
    raise _BadInput(_unknown_override(argv) or f'unknown config field in an override ({e}); '
                    'see msmgan_jax/config.py for the fields') from e
  except (ValueError, TypeError) as e:
    raise _BadInput(f'bad config override: {e}') from e
  return cfg, fv.workdir or default_workdir(path), fv.overwrite, fv.distributed


def _unknown_override(argv):
  """A message for the first `--config.a.b=v` whose field the config file lacks, or None."""
  import difflib  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  overrides = [a for a in argv[1:] if a.startswith('--config.')]
  base = [argv[0]] + [a for a in argv[1:] if a not in overrides]
  fv = _flags(base)
  try:
    fv(base)
    cfg = fv.config
  except Exception:  # pylint: disable=broad-except
    return None
  for arg in overrides:
    node, path = cfg, arg[len('--config.'):].split('=', 1)[0]
    for depth, name in enumerate(path.split('.')):
      if not isinstance(node, ml_collections.ConfigDict) or name not in node:
        where = '.'.join(path.split('.')[:depth]) or 'the config'
        known = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
        close = difflib.get_close_matches(name, known, n=1)
        hint = f'; did you mean {close[0]!r}?' if close else f'; {where} has {known}'
        return f'unknown config field {path} in {arg!r}{hint}'
      node = node[name]
  return None


def _last_line(msg: str) -> str:
  """The exception line of a message that embeds a traceback (absl does, for config files)."""
  if 'Traceback' not in msg:
    return msg
  last = [l for l in msg.splitlines() if l.strip()][-1]
  return last.split(': ', 1)[1] if last.split(': ', 1)[0].endswith(('Error', 'Exception')) else last


class _BadInput(Exception):
  pass


def default_workdir(config_arg: str) -> str:
  path, _, arg = config_arg.partition(':')
  name = os.path.splitext(os.path.basename(path))[0]
  return os.path.join('runs', f'{name}_{arg}' if arg else name)


def _quiet(init_backend: bool = True) -> None:
  """Keeps TensorFlow's, JAX's and absl's start-up chatter off the console.

  TensorFlow and jaxlib print C++ log lines while they load, before any Python setting can
  reach them; they are loaded here with file descriptor 2 pointed at /dev/null. Python
  errors still surface (as exceptions), and everything after start-up prints as usual.
  """
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  flags.FLAGS.mark_as_parsed()  # absl logs "before flag parsing" warnings otherwise.
  logging.set_verbosity(logging.ERROR)  # orbax logs every save at INFO and slow ones at WARNING.
  sys.stderr.flush()
  saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
  try:
    os.dup2(devnull, 2)
    import jax  # pylint: disable=g-import-not-at-top
    try:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      tf.get_logger().setLevel('ERROR')
      tf.config.set_visible_devices([], 'GPU')  # TF only feeds data: keep it off accelerators.
    except ImportError:  # no TensorFlow: arrays files still work (see data.py).
      pass
    if init_backend:  # not before jax.distributed.initialize(), which must come first.
      jax.devices()  # initialises the backend, which logs too.
  finally:
    os.dup2(saved, 2)
    os.close(saved)
    os.close(devnull)


def run(argv) -> int:
  """The command line `argv` (argv[0] is the program); returns the exit code."""
  _quiet(init_backend='--distributed' not in argv)
  if any(a in ('-h', '--help', '--helpfull') for a in argv[1:]):
    print(f'{__doc__}\n{USAGE}')
    return 0
  try:
    cfg, workdir, overwrite, distributed = _parse(argv)
  except _BadInput as e:
    return _error(str(e), EXIT_BAD_INPUT)
  if distributed:
    import jax  # pylint: disable=g-import-not-at-top
    jax.distributed.initialize()  # coordinator, process count and id from the environment.
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    tfds.disable_progress_bar()
  except ImportError:  # no TFDS here: only arrays files can be read (see data.py).
    pass
  from msmgan_jax import config as config_lib, data, faults, train, utils  # pylint: disable=g-import-not-at-top
  try:
    train.train_and_evaluate(cfg, workdir, overwrite=overwrite)
  except (config_lib.ConfigError, data.DataError, utils.CheckpointError) as e:
    return _error(str(e), EXIT_BAD_INPUT)
  except faults.Interrupted as e:
    return _error(str(e), 128 + e.signum, 'stopped')
  except KeyboardInterrupt:  # a second Ctrl-C: stopped at once, without a new checkpoint.
    return _error('interrupted twice: stopped at once, without a new checkpoint. Rerun the '
                  'same command to resume from the last one.', 130, 'stopped')
  except (faults.NumericalError, utils.WriteError) as e:
    return _error(str(e), EXIT_FAILED)
  except OSError as e:
    return _error(f'{e}; the last checkpoint is intact: fix the cause and rerun the same '
                  'command to resume', EXIT_FAILED)
  print(f'done: {os.path.join(workdir, "summary.json")}')
  return 0


def _error(msg: str, code: int, prefix: str = 'error') -> int:
  sys.stdout.flush()
  sys.stderr.write(f'{prefix}: {msg}\n')
  return code


if __name__ == '__main__':
  sys.exit(run(sys.argv))
