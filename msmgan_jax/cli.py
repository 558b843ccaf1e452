"""What every command shares: the `--config` flag parser, the quiet start-up, and
`run_command`, which turns the exceptions of `msmgan_jax.errors` into a message and the
exit code of its one table.

The lowest layer above `errors` (the commands, `msmgan_jax/X.py`, build on it; no library
package imports it), and light: importing it loads neither JAX nor TensorFlow, so a
command answers `--help` and refuses a bad argument at once. `parse` loads JAX only when
it reads a config file (the schema is built from the method registry); TensorFlow and the
JAX backend load in `quiet`, which each command calls once its arguments are good.
"""
import os
import sys

from absl import flags, logging
from ml_collections import config_flags

from msmgan_jax import errors
from msmgan_jax.errors import BadInput, EXIT_BAD_INPUT, EXIT_FAILED  # noqa: F401

USAGE = ('usage: python -m msmgan_jax.main --config configs/X.py[:smoke] [--workdir DIR] '
         '[--overwrite] [--distributed [--coordinator_address HOST:PORT --num_processes N '
         '--process_id I]] [--config.FIELD=VALUE ...]')


def _flags(argv, load_config: bool = True):
  """A fresh flag set for `argv` (so `run` works more than once in a process, as tests do).

  With `load_config` False, `--config` is a plain string flag: parsing `argv` without its
  `--config.a.b=v` overrides then checks the flag names without loading the config file.
  """
  fv = flags.FlagValues()
  if load_config:
    config_flags.DEFINE_config_file('config', None, 'config file, e.g. configs/default.py',
                                    flag_values=fv, lock_config=True, sys_argv=list(argv))
  else:
    flags.DEFINE_string('config', None, 'config file, e.g. configs/default.py', flag_values=fv)
  flags.DEFINE_string('workdir', None, 'run directory (default: runs/<config>[_<arg>])',
                      flag_values=fv)
  flags.DEFINE_boolean('overwrite', False, 'delete a run (finished or not, any config) in '
                       '--workdir and start this one', flag_values=fv)
  flags.DEFINE_boolean('distributed', False, 'one process per host of a multi-host job: '
                       'start JAX\'s multi-controller runtime first (msmgan_jax.hosts)',
                       flag_values=fv)
  flags.DEFINE_string('coordinator_address', None, 'with --distributed: process 0\'s '
                      'host:port (or JAX_COORDINATOR_ADDRESS); unset: the cluster is detected',
                      flag_values=fv)
  flags.DEFINE_integer('num_processes', None, 'with --distributed: the job\'s process count '
                       '(or JAX_NUM_PROCESSES)', flag_values=fv)
  flags.DEFINE_integer('process_id', None, 'with --distributed: this process\'s id, 0-based '
                       '(or JAX_PROCESS_ID)', flag_values=fv)
  flags.DEFINE_float('distributed_timeout', 300.0, 'with --distributed: seconds to wait for '
                     'every process to reach the coordinator before exit 2', flag_values=fv)
  return fv


def parse(argv, usage: str = USAGE):
  """(config, workdir, overwrite, distributed) from `argv`; `BadInput` otherwise (its
  message ends with `usage`, the calling command's). `distributed` is None without
  --distributed, else (`hosts.Settings`, timeout in seconds); the host flags without
  --distributed are refused. `~` in --config and --workdir is
  the user's home; a config file inside a package (configs/, with its __init__.py)
  imports its sibling configs from any working directory.

  A missing --config, a config file not found and an unknown flag are refused before the
  config file is read (no JAX, no TensorFlow loaded); an unknown `--config.a.b=v` field
  after it is read, with the field's nearest name."""
  argv = [_expand(a) for a in argv]
  path = next((a.split('=', 1)[1] for a in argv if a.startswith('--config=')), None) or next(
      (argv[i + 1] for i, a in enumerate(argv[:-1]) if a == '--config'), None)
  if path is None:
    raise BadInput(f'--config is required, e.g. --config configs/default.py\n{usage}')
  if not os.path.exists(path.partition(':')[0]):
    raise BadInput(f'config file {path.partition(":")[0]} not found; pass e.g. '
                    '--config configs/default.py')
  _importable(path.partition(':')[0])
  _check_flag_names(argv, usage)
  fv = _flags(argv)
  try:
    fv(argv)
    cfg = fv.config  # Loads the file and applies the --config.a.b=v overrides.
  except flags.Error as e:
    raise BadInput(f'{_unknown_override(argv) or _last_line(str(e))}\n{usage}') from e
  except errors.ConfigError as e:
    raise BadInput(str(e)) from e
  except (AttributeError, KeyError) as e:
    raise BadInput(_unknown_override(argv) or f'unknown config field in an override ({e}); '
                    'see msmgan_jax/config.py for the fields') from e
  except (ValueError, TypeError) as e:
    raise BadInput(f'bad config override: {e}') from e
  return cfg, fv.workdir or default_workdir(path), fv.overwrite, _hosts(fv, usage)


def _hosts(fv, usage: str):
  """None, or (`hosts.Settings`, timeout s) for --distributed (see `parse`)."""
  from msmgan_jax import hosts  # pylint: disable=g-import-not-at-top
  named = [n for n in ('coordinator_address', 'num_processes', 'process_id')
           if fv[n].present]
  if not fv.distributed:
    if named:
      raise BadInput(f'--{named[0]} needs --distributed\n{usage}')
    return None
  if not fv.distributed_timeout > 0:
    raise BadInput(f'--distributed_timeout must be > 0 seconds, got {fv.distributed_timeout}')
  return (hosts.settings(fv.coordinator_address, fv.num_processes, fv.process_id),
          fv.distributed_timeout)


def _check_flag_names(argv, usage: str) -> None:
  """`BadInput` (absl's message, then `usage`) for a flag of `argv` that no command defines,
  e.g. `--workdri`; the config file is not read. `--config.a.b=v` overrides are left to
  `parse`, which reads the file to know its fields."""
  names = [a for a in argv if not a.startswith('--config.')]
  try:
    _flags(names, load_config=False)(names)
  except flags.Error as e:
    raise BadInput(f'{_last_line(str(e))}\n{usage}') from e


def _expand(arg: str) -> str:
  """`--workdir ~/x`, `--workdir=~/x`, `--config=~/c.py` with `~` expanded (a shell does it
  only at a word's start)."""
  for flag in ('--workdir=', '--config='):
    if arg.startswith(flag + '~'):
      return flag + os.path.expanduser(arg[len(flag):])
  return os.path.expanduser(arg) if arg.startswith('~') else arg


def _importable(config_file: str) -> None:
  """Puts the folder above a config file's package (the repository root for configs/X.py)
  on sys.path, so `from configs import teacher_fmnist` works from any working directory."""
  folder = os.path.dirname(os.path.abspath(config_file))
  if os.path.exists(os.path.join(folder, '__init__.py')):
    root = os.path.dirname(folder)
    if root not in sys.path:
      sys.path.insert(0, root)


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
  comparison = all(f in cfg for f in ('base', 'methods', 'tuning'))
  for arg in overrides:
    node, path = cfg, arg[len('--config.'):].split('=', 1)[0]
    if comparison and path.split('.')[0] not in cfg:
      return (f'unknown config field {path} in {arg!r}: this is a comparison config, whose '
              f'runs\' fields are under base (--config.base.{path}=...); it is run with '
              'python -m msmgan_jax.compare --config ...')
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


def default_workdir(config_arg: str) -> str:
  path, _, arg = config_arg.partition(':')
  name = os.path.splitext(os.path.basename(path))[0]
  return os.path.join('runs', f'{name}_{arg}' if arg else name)


def quiet(init_backend: bool = True) -> None:
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
    except ImportError:  # no TensorFlow: arrays files still work (msmgan_jax.data.arrays).
      pass
    if init_backend:  # not before jax.distributed.initialize(), which must come first.
      jax.devices()  # initialises the backend, which logs too.
  finally:
    os.dup2(saved, 2)
    os.close(saved)
    os.close(devnull)


def error(msg: str, code: int, prefix: str = 'error') -> int:
  sys.stdout.flush()
  sys.stderr.write(f'{prefix}: {msg}\n')
  return code


def run_command(fn, *, hints=None, extra=()) -> int:
  """Calls `fn()`; returns 0, or the exit code of `errors.EXIT_CODES` (then `extra`, more
  (type, code, prefix) rows) for what it raised, after printing `prefix: message` on stderr.
  `hints` maps an exception type to the message shown instead of (or, for a callable, made
  from) the exception's own. Anything else raises: a bug shows its traceback."""
  try:
    fn()
  except BaseException as e:  # pylint: disable=broad-except
    found = errors.exit_code(e)
    for kind, code, prefix in extra:
      if found is None and isinstance(e, kind):
        found = code, prefix
    if found is None:
      raise
    msg = str(e)
    for kind, hint in (hints or {}).items():
      if isinstance(e, kind):
        msg = hint(e) if callable(hint) else hint
        break
    return error(msg, *found)
  return 0
