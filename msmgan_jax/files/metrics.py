"""metrics.jsonl, the record of a run's training and test metrics, mirrored to TensorBoard."""
import json
import os
import shutil
import time

import jax
import numpy as np


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
