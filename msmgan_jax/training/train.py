"""The whole job: teacher with anchors, then the configured student method.

`train_and_evaluate(config, workdir)` validates the config, claims the workdir
(refusing one that holds a different run), trains or reuses the teacher and its
anchor checkpoints, then trains the student for `config.method`, and writes
`summary.json`. Rerunning the same command resumes; a finished run is not redone.

This module orchestrates; `loop` holds the loop utilities that `teacher` and `student`
build on, so nothing there imports the trainers.
"""
import importlib.metadata
import json
import os
import platform
import subprocess
import time

import jax
import ml_collections

from msmgan_jax import config as config_lib
from msmgan_jax.data import datasets as data
from msmgan_jax.files import faults
from msmgan_jax import methods  # noqa: F401 (registers the built-in methods)
from msmgan_jax.methods import registry as phases
from msmgan_jax.training import student
from msmgan_jax.training import teacher as teacher_lib
from msmgan_jax.files import io
from msmgan_jax.core import sharding
from msmgan_jax.training.workdir import Workdir, same_run


def train_and_evaluate(cfg: ml_collections.ConfigDict, workdir: str,
                       overwrite: bool = False, teacher=None) -> dict:
  """Runs the whole job described by `cfg` in `workdir`; returns the summary.

  `teacher`: a teacher built in Python (`msmgan_jax.teachers.flax_teacher` and the like,
  a `core.teachers.Given`) in place of `teacher.checkpoints` or a teacher trained here. It is
  not part of the config: a rerun in the same workdir resumes with the teacher it is given.

  Rerunning resumes from the last checkpoint; a finished run (summary.json) is returned
  as it is, touching nothing, unless `overwrite`, which deletes it and starts over.
  SIGTERM / SIGINT save a checkpoint and raise `faults.Interrupted`.
  """
  _keep_tensorflow_off_accelerators()
  config_lib.validate(cfg)
  teacher_lib.check_anchor_paths(cfg)
  wd = Workdir(workdir)
  if not overwrite and os.path.isdir(workdir):
    done = io.read_json_or_refuse(wd.file('summary.json'), 'rerun with --overwrite to train '
                                'this run again, or move it away.')
    if done is not None and same_run(wd.read_config(), json.loads(cfg.to_json())):
      print(f'{workdir} already holds this finished run (summary.json); nothing to do. '
            'Add --overwrite to train it again.')
      return done
  mesh = sharding.mesh()
  # Batches carry each example's index only for a method that reads it (the others' steps
  # see the batches they always saw).
  index = {'with_index': True} if phases.needs_index(cfg) else {}
  info, batches, eval_batches = data.load(cfg.dataset, batch_size=cfg.batch_size,
                                          eval_batch_size=cfg.eval_batch_size, mesh=mesh,
                                          **index)
  # Given checkpoints are restored before the workdir is claimed (for `ce`, for reference).
  given = None
  if cfg.teacher.checkpoints or teacher is not None:
    given = teacher_lib.load_given(cfg, info, mesh, eval_batches, given=teacher)
  teacher_lib.check_student_init(cfg, info, given)
  wd.claim(cfg, overwrite=overwrite)
  wd.metrics.images_per_epoch = info.num_train
  try:
    with faults.graceful_stop():
      return _run(cfg, wd, info, batches, eval_batches, mesh, given)
  finally:
    wd.metrics.close()
    wd.release()


def _keep_tensorflow_off_accelerators() -> None:
  """TensorFlow only feeds data: it must not take GPU memory from JAX (notebooks, scripts)."""
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    tf.config.set_visible_devices([], 'GPU')
  except ImportError:  # no TensorFlow here: only arrays files can be read (data/arrays.py).
    pass
  except RuntimeError:  # TF already initialised its devices; nothing to do any more.
    pass


def _run(cfg, wd, info, batches, eval_batches, mesh, teacher) -> dict:
  t0 = time.time()
  if teacher is None and (phases.uses_teacher(cfg) or (
      cfg.method != 'teacher' and cfg.student.init != 'random')):
    teacher = teacher_lib.train_teacher(cfg, wd, info, batches, eval_batches, mesh)
  summary = {'method': cfg.method, 'dataset': cfg.dataset.name, 'data': info.record(),
             'teacher': teacher.summary() if teacher else None}
  if cfg.method != 'teacher':
    summary['variant'] = phases.variant(cfg)
    summary['student'] = student.Distiller(cfg, wd, info, batches, eval_batches, mesh,
                                           teacher).run()
  summary['wall_s'] = round(time.time() - t0, 2)
  summary['environment'] = environment()
  io.write_json(wd.file('summary.json'), summary)
  return summary


def environment() -> dict:
  """Versions, code commit and devices of this run, for reproducing it."""
  dev = jax.devices()[0]
  versions = {p.replace('-', '_'): _version(p) for p in (
      'msmgan_jax', 'jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'tensorflow-datasets')}
  return {**versions, 'git_commit': _git_commit(), 'python': platform.python_version(),
          'platform': dev.platform, 'device_kind': dev.device_kind,
          'device_count': jax.device_count(), 'process_count': jax.process_count()}


def _version(package: str):
  """The installed version of `package`, or None (not installed: TFDS on a TF-free machine,
  this package run from a checkout)."""
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return None


def _git_commit():
  """HEAD of the checkout this package runs from ('+dirty' with local changes), or None."""
  here = os.path.dirname(os.path.abspath(__file__))
  git = lambda *args: subprocess.run(['git', *args], cwd=here, capture_output=True, text=True,
                                     timeout=10, check=True).stdout.strip()
  try:
    if os.path.realpath(git('rev-parse', '--show-toplevel')) != os.path.dirname(here):
      return None  # installed as a package inside some other repository.
    head = git('rev-parse', 'HEAD')
    dirty = git('status', '--porcelain', '--untracked-files=no')
  except (OSError, subprocess.SubprocessError):
    return None
  return head + ('+dirty' if dirty else '')
