"""Stopping a run safely: signals, fault points for the kill tests, numerical faults.

- `graceful_stop()` turns the first SIGTERM / SIGINT into a request that the training
  loops honour at the next step boundary: they save a checkpoint and raise `Interrupted`
  (a second signal stops the process at once).
- `point(name)` is where the fault-injection tests kill the process: with
  `MSMGAN_JAX_FAULT=name:n[,name:n]` in the environment, the n-th time this process
  reaches `point(name)` it sends itself SIGKILL. Without the variable it does nothing.
  Points: `step` (a training step dispatched, its result not yet read), `eval` (one
  eval batch done), `checkpoint` (a checkpoint being written, not yet committed),
  `phase` (a student phase committed, the next not started).
"""
import collections
import contextlib
import os
import signal
import threading

from msmgan_jax.errors import Interrupted, NumericalError  # noqa: F401 (raised by the loops)

FAULT_ENV = 'MSMGAN_JAX_FAULT'
_HITS = collections.Counter()
_REQUESTED = {'signal': None}


def point(name: str) -> None:
  """A fault point (see the module docstring)."""
  spec = os.environ.get(FAULT_ENV)
  if not spec:
    return
  _HITS[name] += 1
  for item in spec.split(','):
    target, _, count = item.partition(':')
    if target == name and _HITS[name] == int(count or 1):
      os.kill(os.getpid(), signal.SIGKILL)


def stop_requested():
  """The signal number of a pending stop request, or None."""
  return _REQUESTED['signal']


def stop_was_requested():
  """The signal number of the last stop request of the last `graceful_stop` block (kept
  after the block ends, so a command can tell "interrupted twice" from "interrupted
  before the block began"), or None."""
  return _REQUESTED.get('seen')


@contextlib.contextmanager
def graceful_stop():
  """Within this block, SIGTERM and SIGINT request a stop instead of killing the run.

  Installs nothing outside the main thread (signal handlers live there only).
  """
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  sigs = (signal.SIGTERM, signal.SIGINT)
  old = {s: signal.getsignal(s) for s in sigs}

  def handler(signum, _):
    _REQUESTED['signal'] = _REQUESTED['seen'] = signum
    for s in sigs:  # a second signal acts at once.
      signal.signal(s, old[s] if old[s] is not None else signal.SIG_DFL)

  _REQUESTED['signal'] = _REQUESTED['seen'] = None
  for s in sigs:
    signal.signal(s, handler)
  try:
    yield
  finally:
    for s in sigs:
      signal.signal(s, old[s] if old[s] is not None else signal.SIG_DFL)
    _REQUESTED['signal'] = None
