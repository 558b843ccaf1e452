"""Fault injection: a run killed at many points (SIGKILL inside a step, during evaluation,
mid-checkpoint, between stages; SIGTERM from outside) and rerun each time with the same
command ends exactly where an uninterrupted run does."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO_ROOT

# A whole MS-MGANs run (teacher 2 epochs -> 2 stages x 4 phases) in about 45 s on 2 cores.
ARGS = ['--config', 'configs/default.py:smoke', '--config.dataset.train_split=train[:2%]',
        '--config.dataset.test_split=test[:10%]', '--config.teacher.model=resnet8',
        '--config.batch_size=64', '--config.eval_batch_size=500',
        '--config.log_every_steps=5', '--config.checkpoint_every_steps=5']
# Times that change from run to run; everything else must be equal.
VOLATILE = {'wall_s', 'first_step_s', 'images_per_s', 'time', 'path', 'checkpoint', 'machine'}


def command(workdir, data_dir):
  return [sys.executable, '-m', 'msmgan_jax.main', *ARGS,
          f'--config.dataset.data_dir={data_dir}', '--workdir', str(workdir)]


def start(workdir, data_dir, fault=None):
  env = dict(os.environ)
  env.pop('MSMGAN_JAX_FAULT', None)
  if fault:
    env['MSMGAN_JAX_FAULT'] = fault
  return subprocess.Popen(command(workdir, data_dir), cwd=REPO_ROOT, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(proc, timeout=300):
  out, err = proc.communicate(timeout=timeout)
  return proc.returncode, out, err


def strip(obj):
  """`obj` without the volatile fields (times, this run's own paths)."""
  if isinstance(obj, dict):
    return {k: strip(v) for k, v in obj.items() if k not in VOLATILE}
  if isinstance(obj, list):
    return [strip(v) for v in obj]
  return obj


def events(workdir):
  return [strip(json.loads(line)) for line in open(workdir / 'metrics.jsonl')]


def tmp_checkpoints(workdir):
  return [p for p in (workdir / 'checkpoints').rglob('*') if 'orbax-checkpoint-tmp' in p.name]


def arrays(path):
  """{leaf path: numpy array} of the state of a committed checkpoint step."""
  import jax  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  tree = ocp.StandardCheckpointer().restore(path / 'state')
  return {jax.tree_util.keystr(k): np.asarray(v)
          for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


@pytest.fixture(scope='module')
def reference(tfds_data_dir, tmp_path_factory):
  """An uninterrupted run, started in the background while the faulted one runs."""
  workdir = tmp_path_factory.mktemp('faults') / 'reference'
  return workdir, start(workdir, tfds_data_dir)


def test_killed_anywhere_resumes_to_the_same_result(reference, tfds_data_dir, tmp_path):
  workdir = tmp_path / 'run'
  # SIGTERM from outside once training has logged: a checkpoint, a message, exit 143.
  proc = start(workdir, tfds_data_dir)
  deadline = time.time() + 240
  while not (workdir / 'metrics.jsonl').exists() or not (
      workdir / 'metrics.jsonl').read_text().count('"split": "train"'):
    assert proc.poll() is None and time.time() < deadline, proc.communicate()
    time.sleep(0.2)
  proc.send_signal(signal.SIGTERM)
  rc, _, err = finish(proc)
  assert rc == 128 + signal.SIGTERM, err[-3000:]
  assert 'stopped: stopped by SIGTERM in the teacher at step' in err
  assert 'Rerun the same command to resume' in err
  assert (workdir / 'checkpoints' / 'teacher').is_dir()

  # SIGKILL at fault points, each in a fresh process rerunning the same command.
  kills = [('eval:1', 'during an evaluation'),
           ('checkpoint:2', 'while a checkpoint is written'),
           ('phase:4', 'between stage 1 and stage 2'),
           ('step:9', 'inside a student step, mid-phase')]
  for fault, where in kills:
    rc, _, err = finish(start(workdir, tfds_data_dir, fault))
    assert rc == -signal.SIGKILL, f'{where}: expected a kill, got rc {rc}\n{err[-3000:]}'
    if fault.startswith('checkpoint'):
      assert tmp_checkpoints(workdir), 'the kill did not land inside a checkpoint write'
  rc, out, err = finish(start(workdir, tfds_data_dir))
  assert rc == 0, err[-3000:]
  assert 'student: resuming at stage 2' in out
  assert not tmp_checkpoints(workdir)  # what the interrupted save left was cleaned up.

  ref_dir, ref_proc = reference
  rc, _, err = finish(ref_proc)
  assert rc == 0, err[-3000:]
  got, want = (json.loads((d / 'summary.json').read_text()) for d in (workdir, ref_dir))
  assert strip(got) == strip(want)  # every accuracy, step count and parameter count.
  assert got['student']['test_accuracy'] == want['student']['test_accuracy']
  assert events(workdir) == events(ref_dir)  # each event once, with the same numbers.
  for part in ('student_final/0', 'anchors/1', 'anchors/2'):
    a, b = (arrays(d / 'checkpoints' / part) for d in (workdir, ref_dir))
    assert a and a.keys() == b.keys(), part
    for k in a:
      np.testing.assert_array_equal(a[k], b[k], err_msg=f'{part} {k}')  # bit for bit.
