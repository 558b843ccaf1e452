"""One process of a job that writes the global batches its pipeline makes (not a test).

  python tests/support/host_batches.py OUT.npz PIPELINE DATA_DIR [COORDINATOR COUNT ID]

Loads the small real Fashion-MNIST slices (`support.TRAIN` / `TEST`) with `dataset.pipeline`
PIPELINE (device | tfdata) on every device of the job (with the last three arguments,
started through `msmgan_jax.hosts` as one of COUNT processes), gathers the first training
batches of two seeds (crossing an epoch boundary) and every eval batch into whole global
arrays, and (process 0) saves them to OUT.npz, so a test compares them across host counts.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

STEPS = 30  # 30 batches of 64 cross the first epoch of 1,800 examples (28 batches).


def main(out, pipeline, data_dir, *job):
  from msmgan_jax import hosts  # pylint: disable=g-import-not-at-top
  if job:
    hosts.start(hosts.Settings(job[0], int(job[1]), int(job[2])), timeout=120)
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  from support import dataset_cfg, TRAIN, TEST  # pylint: disable=g-import-not-at-top
  from msmgan_jax.core import sharding  # pylint: disable=g-import-not-at-top
  from msmgan_jax.data import datasets as data  # pylint: disable=g-import-not-at-top
  cfg = dataset_cfg(data_dir=data_dir, source='local', train_split=TRAIN, test_split=TEST,
                    pipeline=pipeline, shuffle_buffer=512)
  mesh = sharding.mesh()
  info, train_batches, eval_fn = data.load(cfg, batch_size=64, eval_batch_size=240, mesh=mesh,
                                           with_index=True)
  whole = lambda x: np.asarray(multihost_utils.process_allgather(x, tiled=True))
  arrays = {}
  for seed in (0, 7):
    it = train_batches(seed, skip=0)
    for step in range(STEPS):
      batch = sharding.shard_batch(next(it), mesh)
      for k in ('image', 'label', 'index'):
        arrays[f'train{seed}_{step}_{k}'] = whole(batch[k])
    it = train_batches(seed, skip=STEPS - 2)  # a resume: the same batches from a step on.
    batch = sharding.shard_batch(next(it), mesh)
    arrays[f'resume{seed}_index'] = whole(batch['index'])
  for i, batch in enumerate(eval_fn()):
    batch = sharding.shard_batch(batch, mesh)
    for k in ('image', 'label', 'mask'):
      arrays[f'eval_{i}_{k}'] = whole(batch[k])
  arrays['num_train'] = np.int64(info.num_train)
  if jax.process_index() == 0:
    np.savez(out, **arrays)
  if job:
    hosts.end(0)


if __name__ == '__main__':
  main(*sys.argv[1:])
