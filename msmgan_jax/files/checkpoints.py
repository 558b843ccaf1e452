"""Orbax checkpoints of (array tree, JSON metadata) pairs, refusing non-finite states."""
import contextlib
import glob
import logging
import os
import re
import shutil
import sys
import threading
from typing import Optional

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from msmgan_jax.errors import CheckpointError, NumericalError, WriteError
from msmgan_jax.files import faults


SETTLE_S = 60.0  # after a failed save: the longest wait for each of its threads to end.


class Checkpoints:
  """An orbax CheckpointManager of (array tree `state`, JSON `meta`) pairs."""

  def __init__(self, directory: str, max_to_keep: Optional[int] = None, read_only: bool = False):
    """`read_only` for checkpoints of another run (anchors trained elsewhere): nothing there is
    created or cleaned. Otherwise, what an interrupted save left (orbax's temporary
    directories, never committed) is removed; committed steps are never touched."""
    self.directory = os.path.abspath(directory)
    self.manager = ocp.CheckpointManager(self.directory, options=ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=not read_only, read_only=read_only,
        cleanup_tmp_directories=not read_only))

  def save(self, step: int, state, meta: dict, where: str = '') -> None:
    """Saves (state, meta) at checkpoint number `step`, replacing one an interrupted run left.

    Orbax writes into a temporary directory and renames it when complete, so a kill
    mid-save leaves the previous checkpoints as they were. A state holding NaN or inf
    is refused (`NumericalError`, naming `where` the state diverged, e.g. 'in stage 1
    phase head after training step 12', and what to do), so the last checkpoint is
    always a good one. A write that fails for the OS (a full disk, no permission; orbax
    and tensorstore report it from several threads) raises one `WriteError` naming the
    checkpoint and the fix, with nothing else printed, and leaves no partial step.
    """
    bad = [k for k, ok in _finite_leaves(state).items() if not ok]
    if bad:
      raise NumericalError(
          f'training diverged{" " + where if where else ""}: non-finite values in '
          f'{len(bad)} arrays of the state ({", ".join(bad[:3])}{", ..." if len(bad) > 3 else ""}),'
          f' so checkpoint {step} in {self.directory} is not written and the last good '
          'one is kept. Lower the learning rate (or check the data), then rerun with '
          '--overwrite or in a new --workdir.')
    try:
      with _held_reports():
        self._write(step, state, meta)
    except Exception as e:  # pylint: disable=broad-except  (orbax and tensorstore wrap OS errors)
      code = write_errno(e)
      if code is None:
        raise
      partial = os.path.join(glob.escape(self.directory), f'{step}.orbax-checkpoint-tmp*')
      for tmp in glob.glob(partial):  # what was written of it: the space back at once.
        shutil.rmtree(tmp, ignore_errors=True)
      raise WriteError(code, f'could not write checkpoint {step} in {self.directory} '
                       f'({os.strerror(code)}); the checkpoints committed before it are '
                       'intact. Free space (or fix permissions) and rerun the same command to '
                       'resume.') from e

  def _write(self, step: int, state, meta: dict) -> None:
    """Writes and commits checkpoint `step`. On a failure, the threads the save started
    (orbax's, writing the arrays and the metadata) are ended first: none writes or reports
    anything after the error is raised."""
    before = set(threading.enumerate())
    try:
      if step in self.manager.all_steps():
        self.manager.delete(step)
      self.manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
      faults.point('checkpoint')
      self.manager.wait_until_finished()
    except Exception:
      with contextlib.suppress(Exception):  # it raises the same failure again.
        self.manager.close()
      for thread in set(threading.enumerate()) - before:
        thread.join(timeout=SETTLE_S)
      raise

  def steps(self):
    return sorted(self.manager.all_steps())

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def restore(self, step: int, target):
    """(state, meta) at `step`, with `target` giving structure, shapes and shardings."""
    try:
      out = self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract(target)), meta=ocp.args.JsonRestore()))
    except Exception as e:  # orbax raises many types for unreadable / mismatched data
      raise CheckpointError(
          f'checkpoint {self.directory}/{step} could not be restored ({type(e).__name__}: '
          f'{str(e)[:300]}). It is corrupt or was written for other models: move it away to '
          'start that part over, or fix the config to match it.') from e
    return out.state, out.meta

  def shapes(self, step: int) -> dict:
    """{path: shape} of the arrays saved at `step` (from orbax's metadata, nothing restored);
    paths like "['params']['head']['Dense_0']['kernel']". {} when unreadable."""
    try:
      md = ocp.StandardCheckpointer().metadata(os.path.join(self.directory, str(step), 'state'))
    except Exception:  # pylint: disable=broad-except  (orbax raises many types)
      return {}
    tree = getattr(getattr(md, 'item_metadata', md), 'tree', getattr(md, 'item_metadata', md))
    return {jax.tree_util.keystr(p): tuple(v.shape)
            for p, v in jax.tree_util.tree_flatten_with_path(tree)[0] if hasattr(v, 'shape')}

  def meta(self, step: int) -> dict:
    try:
      return self.manager.restore(step, args=ocp.args.Composite(
          meta=ocp.args.JsonRestore())).meta
    except Exception as e:
      raise CheckpointError(f'checkpoint {self.directory}/{step} has no readable metadata '
                            f'({type(e).__name__}); it is corrupt: move it away.') from e


def committed(workdir: str) -> list:
  """The committed checkpoints of the run folder `workdir`, as 'teacher/36', 'anchors/1',
  ... (orbax names a committed step by its number; one being written ends in
  `.orbax-checkpoint-tmp-...`); [] when there is none, or no such folder."""
  root = os.path.join(workdir, 'checkpoints')
  kinds = sorted(os.listdir(root)) if os.path.isdir(root) else []
  return [f'{kind}/{step}' for kind in kinds if os.path.isdir(os.path.join(root, kind))
          for step in sorted((s for s in os.listdir(os.path.join(root, kind)) if s.isdigit()),
                             key=int)]


def write_errno(e: BaseException) -> Optional[int]:
  """The OS error number behind a failed write, or None when `e` is no OS error: an
  `OSError` in `e`'s chain of causes, or tensorstore's `[os_error_code='28']` in its
  message (orbax surfaces a failed array write as a ValueError)."""
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, OSError) and e.errno:
      return e.errno
    found = re.search(r"os_error_code='?(\d+)", str(e))
    if found:
      return int(found.group(1))
    e = e.__cause__ or e.__context__
  return None


@contextlib.contextmanager
def _held_reports():
  """Holds what orbax's threads report while a save runs: absl log records and the
  exceptions of threads and of tensorstore's callbacks (a failed write gives one per
  array in flight, as tracebacks). Passed on as usual when the block ends normally;
  dropped when it raises, since the exception raised says what went wrong, once."""
  held, absl = [], logging.getLogger('absl')
  hooks = {(sys, 'excepthook'): sys.excepthook, (sys, 'unraisablehook'): sys.unraisablehook,
           (threading, 'excepthook'): threading.excepthook}

  def hold(record):
    held.append((absl.handle, (record,)))
    return False
  for (module, name), hook in hooks.items():
    setattr(module, name, lambda *args, hook=hook: held.append((hook, args)))
  absl.addFilter(hold)
  try:
    yield
  finally:
    absl.removeFilter(hold)
    for (module, name), hook in hooks.items():
      setattr(module, name, hook)
  for report, args in held:
    report(*args)


def _finite_leaves(tree) -> dict:
  """{leaf path: all finite} over the floating-point leaves of `tree` (one device sync)."""
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  checks = {jax.tree_util.keystr(p): jnp.all(jnp.isfinite(x)) for p, x in flat
            if hasattr(x, 'dtype') and jnp.issubdtype(x.dtype, jnp.floating)}
  return {k: bool(v) for k, v in jax.device_get(checks).items()}


def abstract(tree):
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
