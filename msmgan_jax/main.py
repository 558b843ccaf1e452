"""Command line: `python -m msmgan_jax.main --config configs/X.py[:smoke] --workdir DIR`.

Overrides: `--config.teacher.epochs=3`. Rerunning the same command resumes; a finished
run is left as it is unless `--overwrite`. Exit codes (`msmgan_jax.errors`): 0 done, 1 a
failure during the run (non-finite loss, unwritable disk; the last good checkpoint is
kept), 2 bad input (config, data, checkpoints, workdir; nothing written), 128 + signal
number when stopped by SIGTERM / SIGINT after saving a checkpoint.

Installed, the same command is `msmgan-train --config ...`. `--help` and bad arguments
(a config file not found, an unknown flag or config field) are answered before TensorFlow
loads; a config file's fields are known once it is read, which loads JAX.
"""
import os
import sys

from msmgan_jax import cli, hosts
from msmgan_jax.cli import EXIT_BAD_INPUT, EXIT_FAILED, USAGE  # noqa: F401 (the exit codes)
from msmgan_jax.errors import BadInput, WriteError


def run(argv) -> int:
  """The command line `argv` (argv[0] is the program); returns the exit code."""
  if any(a in ('-h', '--help', '--helpfull') for a in argv[1:]):
    print(f'{__doc__}\n{USAGE}')
    return 0
  try:
    cfg, workdir, overwrite, distributed = cli.parse(argv)
    if all(f in cfg for f in ('base', 'methods', 'tuning')):
      raise BadInput('this is a comparison config (it has base, methods and tuning): run it '
                     'with python -m msmgan_jax.compare --config ..., or give main a run config '
                     'such as configs/default.py')
  except BadInput as e:
    return cli.error(str(e), EXIT_BAD_INPUT)
  cli.quiet(init_backend=not distributed)  # TensorFlow and the JAX backend, quietly.
  if distributed:
    try:
      hosts.start(*distributed)  # before any JAX computation: it sets up the backend.
    except BadInput as e:
      return cli.error(str(e), EXIT_BAD_INPUT)
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    tfds.disable_progress_bar()
  except ImportError:  # no TFDS here: only arrays files can be read (msmgan_jax.data.arrays).
    pass
  from msmgan_jax.training import train  # pylint: disable=g-import-not-at-top
  try:
    code = cli.run_command(lambda: train.train_and_evaluate(cfg, workdir, overwrite=overwrite),
                           hints={
        KeyboardInterrupt: _interrupted,
        WriteError: str,
        OSError: lambda e: _failed(e, workdir)})
  except BaseException:  # pylint: disable=broad-except
    if not distributed:
      raise
    hosts.end(1, sys.exc_info())  # names a lost process, or prints this one's traceback.
    raise
  if distributed:  # the other processes must not take this one's exit for a lost one.
    hosts.end(code)
  if code:
    return code
  print(f'done: {os.path.join(workdir, "summary.json")}')
  return 0


def _failed(e: OSError, workdir: str) -> str:
  """What an OSError during the run means: resumable where a checkpoint was committed."""
  from msmgan_jax.files import checkpoints  # pylint: disable=g-import-not-at-top
  if checkpoints.committed(workdir):
    return f'{e}; the last checkpoint is intact: fix the cause and rerun the same command to resume'
  return f'{e}; no checkpoint was written yet: fix the cause and rerun the same command'


def _interrupted(_) -> str:
  """What a KeyboardInterrupt means: a second Ctrl-C during training, or one before
  training began (data preparation, loading the teacher), when nothing was trained yet."""
  from msmgan_jax.files import faults  # pylint: disable=g-import-not-at-top
  if faults.stop_was_requested():
    return ('interrupted twice: stopped at once, without a new checkpoint. Rerun the same '
            'command to resume from the last one.')
  return ('interrupted before training began (while preparing the data or loading the '
          'teacher): nothing was trained and no checkpoint written. Rerun the same command to '
          'start; a half-prepared dataset is prepared again.')


def main() -> int:
  """The `msmgan-train` console script: `run(sys.argv)`."""
  return run(sys.argv)


if __name__ == '__main__':
  sys.exit(main())
