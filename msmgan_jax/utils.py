"""Workdir plumbing: metric logging, atomic files, orbax checkpoints, device mesh placement."""
import json
import os
import shutil
import time
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding, PartitionSpec as P

from msmgan_jax import faults


class CheckpointError(RuntimeError):
  """A checkpoint is missing, corrupt or does not match the models of the config."""


class WriteError(OSError):
  """A file of the run could not be written (full disk, no permission); what was
  committed before is intact."""


class MetricsWriter:
  """One JSON object per event in `workdir/metrics.jsonl`, mirrored as TensorBoard scalars in
  `workdir/tensorboard/` (process 0 only).

  metrics.jsonl is the record; the event files are rebuilt from it whenever a resumed run
  cuts it back (`truncate`), so TensorBoard never shows steps that the run redid. Tags are
  `teacher|student/train|test/<metric>`, on an x axis of training images seen.
  """
  TB_DIR = 'tensorboard'

  def __init__(self, workdir: str, images_per_epoch: int = 1000):
    self.path = os.path.join(workdir, 'metrics.jsonl')
    self.tb_path = os.path.join(workdir, self.TB_DIR)
    self.images_per_epoch = images_per_epoch
    self._tb = None

  def offset(self) -> int:
    """The file's current size: a checkpoint records it to drop later lines on resume.
    The lines up to it are synced to disk first, so the checkpoint never points past them."""
    if not os.path.exists(self.path):
      return 0
    with open(self.path, 'rb') as f:
      os.fsync(f.fileno())
    return os.path.getsize(self.path)

  def truncate(self, offset: int) -> None:
    """Drops what was logged after `offset` (steps that a resumed run will redo)."""
    if jax.process_index() != 0:
      return
    if self.offset() > offset:
      with open(self.path, 'r+') as f:
        f.truncate(offset)
    self.close()
    shutil.rmtree(self.tb_path, ignore_errors=True)
    if os.path.exists(self.path):
      with open(self.path) as f:
        for line in f:
          self._scalars(json.loads(line))

  def write(self, *, step: int, epoch: float, stage: int, phase: str, split: str, **metrics):
    record = dict(step=int(step), epoch=round(float(epoch), 4), stage=int(stage), phase=phase,
                  split=split, time=round(time.time(), 3))
    record.update({k: _scalar(v) for k, v in metrics.items()})
    if jax.process_index() == 0:
      with open(self.path, 'a') as f:
        f.write(json.dumps(record) + '\n')
      self._scalars(record)
    return record

  def _scalars(self, record: dict) -> None:
    if self._tb is None:
      import tensorboardX  # pylint: disable=g-import-not-at-top
      self._tb = tensorboardX.SummaryWriter(self.tb_path, flush_secs=10)
    role = 'teacher' if record['phase'] == 'teacher' else 'student'
    if 'seed' in record:  # a run of several seeds logs one record per seed.
      role = f'{role}/seed{record["seed"]}'
    images = int(round(record['epoch'] * self.images_per_epoch))
    for k, v in record.items():
      if k not in _KEYS and isinstance(v, (int, float)) and not isinstance(v, bool):
        self._tb.add_scalar(f'{role}/{record["split"]}/{k}', v, images, walltime=record['time'])

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._tb = None


_KEYS = ('step', 'epoch', 'stage', 'phase', 'split', 'time', 'count', 'seed')


def _scalar(v):
  v = np.asarray(v)
  return v.item() if v.size == 1 else v.tolist()


def write_text(path: str, text: str) -> None:
  """Writes `text` atomically: a reader sees the old file or the whole new one, never a part
  (temp file, fsync, rename, fsync of the directory). On process 0 only."""
  if jax.process_index() != 0:
    return
  tmp = f'{path}.tmp{os.getpid()}'
  try:
    with open(tmp, 'w') as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
      os.fsync(fd)
    finally:
      os.close(fd)
  except OSError as e:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise WriteError(e.errno, f'could not write {path} ({e.strerror or e}); '
                     'the previous version, if any, is intact') from e


def write_json(path: str, obj) -> None:
  """Writes `obj` as indented JSON atomically (see `write_text`)."""
  write_text(path, json.dumps(obj, indent=2, sort_keys=False) + '\n')


def read_json(path: str) -> Optional[Any]:
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


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

  def save(self, step: int, state, meta: dict) -> None:
    """Saves (state, meta) at `step`, replacing a step left by an interrupted run.

    Orbax writes into a temporary directory and renames it when complete, so a kill
    mid-save leaves the previous checkpoints as they were. A state holding NaN or inf
    is refused (`faults.NumericalError`), so the last checkpoint is always a good one.
    """
    bad = [k for k, ok in _finite_leaves(state).items() if not ok]
    if bad:
      raise faults.NumericalError(f'refusing to checkpoint step {step} to {self.directory}: '
                                  f'non-finite values in {", ".join(bad[:5])}')
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


def abstract_variables(model, image_shape, m):
  """Shapes, dtypes and (replicated) shardings of `model`'s variables, computing nothing."""
  shapes = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1,) + tuple(image_shape)), train=False))
  sharding = NamedSharding(m, P())
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
                      dict(shapes))


def mesh() -> jax.sharding.Mesh:
  """A 1-D ('data',) mesh over all devices.

  Its axis is `Auto`: shardings propagate through the steps as XLA chooses (our steps are
  written for that). Newer JAX makes `Explicit` axes the default, under which the
  gradient of an integer-label gather (`optax.softmax_cross_entropy_with_integer_labels`)
  fails to resolve its sharding.
  """
  axis_type = getattr(jax.sharding, 'AxisType', None)
  if axis_type is None:  # JAX before axis types: every axis is automatic.
    return jax.make_mesh((jax.device_count(),), ('data',))
  return jax.make_mesh((jax.device_count(),), ('data',), axis_types=(axis_type.Auto,))


def replicate(tree, m):
  """Places a pytree replicated on every device of mesh `m`."""
  return jax.device_put(tree, NamedSharding(m, P()))


def shard_batch(batch: dict, m) -> dict:
  """Assembles this host's share of a global batch into arrays sharded on 'data'. Arrays
  already on the device (the device pipeline's batches, several seeds' stacked batches)
  are global and placed: they pass unchanged."""
  sharding = NamedSharding(m, P('data'))
  return {k: v if isinstance(v, jax.Array)
          else jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in batch.items()}
