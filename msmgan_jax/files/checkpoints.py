"""Orbax checkpoints of (array tree, JSON metadata) pairs, refusing non-finite states."""
import os
from typing import Optional

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from msmgan_jax.errors import CheckpointError, NumericalError, WriteError
from msmgan_jax.files import faults


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
    always a good one.
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
      if step in self.manager.all_steps():
        self.manager.delete(step)
      self.manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
      faults.point('checkpoint')
      self.manager.wait_until_finished()
    except OSError as e:
      raise WriteError(e.errno, f'could not write checkpoint {step} in {self.directory} '
                       f'({e.strerror or e}); the checkpoints committed before it are intact. '
                       'Free space (or fix permissions) and rerun the same command to '
                       'resume.') from e

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


def _finite_leaves(tree) -> dict:
  """{leaf path: all finite} over the floating-point leaves of `tree` (one device sync)."""
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  checks = {jax.tree_util.keystr(p): jnp.all(jnp.isfinite(x)) for p, x in flat
            if hasattr(x, 'dtype') and jnp.issubdtype(x.dtype, jnp.floating)}
  return {k: bool(v) for k, v in jax.device_get(checks).items()}


def abstract(tree):
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
