"""Workdir plumbing: metric logging, orbax checkpoints, device mesh placement."""
import json
import os
import time
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding, PartitionSpec as P


class CheckpointError(RuntimeError):
  """A checkpoint is missing, corrupt or does not match the models of the config."""


class MetricsWriter:
  """Appends one JSON object per event to `workdir/metrics.jsonl` (process 0 only)."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, 'metrics.jsonl')

  def offset(self) -> int:
    """The file's current size: a checkpoint records it to drop later lines on resume."""
    return os.path.getsize(self.path) if os.path.exists(self.path) else 0

  def truncate(self, offset: int) -> None:
    """Drops what was logged after `offset` (steps that a resumed run will redo)."""
    if jax.process_index() == 0 and self.offset() > offset:
      with open(self.path, 'r+') as f:
        f.truncate(offset)

  def write(self, *, step: int, epoch: float, stage: int, phase: str, split: str, **metrics):
    record = dict(step=int(step), epoch=round(float(epoch), 4), stage=int(stage), phase=phase,
                  split=split, time=round(time.time(), 3))
    record.update({k: _scalar(v) for k, v in metrics.items()})
    if jax.process_index() == 0:
      with open(self.path, 'a') as f:
        f.write(json.dumps(record) + '\n')
    return record


def _scalar(v):
  v = np.asarray(v)
  return v.item() if v.size == 1 else v.tolist()


def write_json(path: str, obj) -> None:
  """Writes `obj` as JSON atomically (temp file + rename), on process 0."""
  if jax.process_index() != 0:
    return
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=2, sort_keys=False)
    f.write('\n')
  os.replace(tmp, path)


def read_json(path: str) -> Optional[Any]:
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


class Checkpoints:
  """An orbax CheckpointManager of (array tree `state`, JSON `meta`) pairs."""

  def __init__(self, directory: str, max_to_keep: Optional[int] = None):
    self.directory = os.path.abspath(directory)
    self.manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))

  def save(self, step: int, state, meta: dict) -> None:
    """Saves (state, meta) at `step`, replacing a step left by an interrupted run."""
    if step in self.manager.all_steps():
      self.manager.delete(step)
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
    self.manager.wait_until_finished()

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

  def meta(self, step: int) -> dict:
    try:
      return self.manager.restore(step, args=ocp.args.Composite(
          meta=ocp.args.JsonRestore())).meta
    except Exception as e:
      raise CheckpointError(f'checkpoint {self.directory}/{step} has no readable metadata '
                            f'({type(e).__name__}); it is corrupt: move it away.') from e


def abstract(tree):
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def abstract_variables(model, image_shape, m):
  """Shapes, dtypes and (replicated) shardings of `model`'s variables, computing nothing."""
  shapes = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1,) + tuple(image_shape)), train=False))
  sharding = NamedSharding(m, P())
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
                      dict(shapes))


def mesh() -> jax.sharding.Mesh:
  """A 1-D ('data',) mesh over all devices."""
  return jax.make_mesh((jax.device_count(),), ('data',))


def replicate(tree, m):
  """Places a pytree replicated on every device of mesh `m`."""
  return jax.device_put(tree, NamedSharding(m, P()))


def shard_batch(batch: dict, m) -> dict:
  """Assembles this host's share of a global batch into arrays sharded on 'data'."""
  sharding = NamedSharding(m, P('data'))
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in batch.items()}
