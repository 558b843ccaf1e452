"""Every error the library raises on purpose, and the one table that maps them to exit codes.

The bottom layer: it imports nothing of ours, so every other module can raise these.
Commands (`msmgan_jax.cli.run_command`) turn an exception into a message and an exit code
through `exit_code`, so `main`, `compare`, `export` and the others agree:

| exit | meaning | raised as |
|---|---|---|
| 0 | done | |
| 1 | a failure during the run; the last good checkpoint is kept | `NumericalError`, `WriteError`, `OSError` |
| 2 | bad input; nothing was written | `BadInput` and its kinds: `ConfigError`, `DataError`, `CheckpointError`, `ArrayError` |
| 128 + N | stopped by signal N after saving a checkpoint | `Interrupted` |
| 130 | Ctrl-C before training began, or a second one during it: stopped at once | `KeyboardInterrupt` |
| 3 | several hosts: another process of the job stopped (killed, lost or failed), so this one stopped too; the last checkpoint all of them committed is kept | (`hosts.Watch`, no exception: the process is stuck in a collective) |
"""
import signal

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_HOST_LOST = 0, 1, 2, 3


class BadInput(Exception):
  """Input the user gave cannot be used (exit 2); the message says what to do. Nothing was
  written or changed."""


class ConfigError(BadInput, ValueError):
  """A config field is wrong; the message names the field and how to fix it."""


class WorkdirBusy(ConfigError):
  """Another live process holds the workdir."""


class DataError(BadInput, RuntimeError):
  """A dataset could not be found or prepared; the message says how to get it."""


class ArrayError(BadInput, RuntimeError):
  """An arrays file is missing, not ours, or damaged; the message says what to do."""


class CheckpointError(BadInput, RuntimeError):
  """A checkpoint is missing, corrupt or does not match the models of the config."""


class WriteError(OSError):
  """A file of the run could not be written (full disk, no permission); what was
  committed before is intact (exit 1)."""


class NumericalError(FloatingPointError):
  """A loss or metric became NaN or inf; the last good checkpoint is kept (exit 1)."""


class Interrupted(Exception):
  """The run stopped on a signal after saving a checkpoint; rerunning resumes it
  (exit 128 + the signal number)."""

  def __init__(self, signum: int, where: str):
    self.signum = signum
    super().__init__(f'stopped by {signal.Signals(signum).name} in {where}; a checkpoint was '
                     'saved. Rerun the same command to resume from it.')


# The one table: (exception type, exit code, message prefix), first match wins.
EXIT_CODES = (
    (BadInput, EXIT_BAD_INPUT, 'error'),
    (Interrupted, None, 'stopped'),  # 128 + the signal number.
    (KeyboardInterrupt, 130, 'stopped'),
    (NumericalError, EXIT_FAILED, 'error'),
    (WriteError, EXIT_FAILED, 'error'),
    (OSError, EXIT_FAILED, 'error'),
)


def exit_code(e: BaseException):
  """(exit code, message prefix) for an exception of the table, or None for any other (a bug:
  let it raise with its traceback)."""
  for kind, code, prefix in EXIT_CODES:
    if isinstance(e, kind):
      return (128 + e.signum if code is None else code), prefix
  return None
