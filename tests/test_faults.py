"""Fault injection: a run killed at one point (SIGKILL inside a step, during evaluation,
mid-checkpoint, between stages; SIGTERM from outside; one case each, in its own workdir), or
failed by a full disk while it writes a checkpoint, and rerun with the same command ends
exactly where an uninterrupted run does."""
import errno
import json
import os
import re
import signal
import subprocess
import shutil
import sys
import time

import filelock
import numpy as np
import pytest

from support import REPO_ROOT

# A whole MS-MGANs run (teacher 2 epochs -> 2 stages: 4 phases, then the head) in about 45 s
# on 2 cores.
ARGS = ['--config', 'configs/default.py:smoke', '--config.dataset.train_split=train[:2%]',
        '--config.dataset.test_split=test[:10%]', '--config.teacher.model=resnet8',
        '--config.batch_size=64', '--config.eval_batch_size=500',
        '--config.log_every_steps=5', '--config.checkpoint_every_steps=5']
# `loop.PlainProgress`'s lines: 'stage 1 phase block_2: 1/1 step (100%), 1.13 step/s, ...',
# 'evaluating: 8 batch, 0.85 batch/s'.
PROGRESS_LINE = re.compile(r'^[\w /]+: \d+(/\d+)? \w+( \(\d+%\))?(,|$)')
# Times that change from run to run; everything else must be equal.
VOLATILE = {'wall_s', 'first_step_s', 'images_per_s', 'time', 'path', 'checkpoint', 'machine'}


def command(workdir, data_dir):
  return [sys.executable, '-m', 'msmgan_jax.main', *ARGS,
          f'--config.dataset.data_dir={data_dir}', '--workdir', str(workdir)]


def start(workdir, data_dir, fault=None, env=None):
  """The run's process (`env`: variables added to this one's environment)."""
  env = {**os.environ, **(env or {})}
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


@pytest.fixture(scope='session')
def reference(request, tfds_data_dir, tmp_path_factory):
  """The workdir of an uninterrupted run, made once per session: pytest-xdist's workers
  share it (the first to ask runs it, under a file lock; the others wait, then reuse it)."""
  root = tmp_path_factory.getbasetemp()
  if hasattr(request.config, 'workerinput'):  # an xdist worker: the session's folder.
    root = root.parent
  workdir = root / 'faults_reference'
  with filelock.FileLock(str(root / 'faults_reference.lock')):
    if not (workdir / 'summary.json').exists():
      shutil.rmtree(workdir, ignore_errors=True)
      rc, _, err = finish(start(workdir, tfds_data_dir))
      assert rc == 0, err[-3000:]
  return workdir


def assert_same_run(workdir, ref_dir):
  """`workdir` ended where the uninterrupted run `ref_dir` did: the same summary (every
  accuracy, step and parameter count), events and final checkpoints, bit for bit."""
  got, want = (json.loads((d / 'summary.json').read_text()) for d in (workdir, ref_dir))
  assert strip(got) == strip(want)
  assert got['student']['test_accuracy'] == want['student']['test_accuracy']
  assert events(workdir) == events(ref_dir)  # each event once, with the same numbers.
  for part in ('student_final/0', 'anchors/1', 'anchors/2'):
    a, b = (arrays(d / 'checkpoints' / part) for d in (workdir, ref_dir))
    assert a and a.keys() == b.keys(), part
    for k in a:
      np.testing.assert_array_equal(a[k], b[k], err_msg=f'{part} {k}')


@pytest.mark.slow
def test_sigterm_checkpoints_names_the_rerun_and_the_rerun_ends_the_same(reference, tfds_data_dir,
                                                                        tmp_path):
  """SIGTERM from outside once training has logged: a checkpoint, a message, exit 143."""
  workdir = tmp_path / 'run'
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
  rc, out, err = finish(start(workdir, tfds_data_dir))
  assert rc == 0, err[-3000:]
  assert re.search(r'^teacher: resuming at step \d+/36$', out, re.M), out
  assert_same_run(workdir, reference)


# SIGKILL at a fault point (`faults.point`: the n-th time the process reaches it), then the
# same command again. The run's updates: the teacher's 36 steps (2 epochs of 18, checkpoints
# every 5 steps and at each epoch's end), then the student's stage 1 (blocks 1-3 one step
# each, the head 7) and stage 2 (the head, 9 steps, checkpointed after its 5th).
KILLS = [
    pytest.param('eval:1', 'teacher: resuming at step 15/36', id='during-an-evaluation'),
    pytest.param('checkpoint:2', 'teacher: resuming at step 5/36',
                 id='while-a-checkpoint-is-written'),
    pytest.param('phase:4', 'student: resuming at stage 2, phase 1, step 0',
                 id='between-stage-1-and-stage-2'),
    pytest.param('step:53', 'student: resuming at stage 2, phase 1, step 5',
                 id='inside-a-student-step-mid-phase'),
]


@pytest.mark.slow
@pytest.mark.parametrize('fault, resumed', KILLS)
def test_killed_at_a_fault_point_resumes_to_the_same_result(fault, resumed, reference,
                                                             tfds_data_dir, tmp_path):
  workdir = tmp_path / 'run'
  rc, _, err = finish(start(workdir, tfds_data_dir, fault))
  assert rc == -signal.SIGKILL, f'{fault}: expected a kill, got rc {rc}\n{err[-3000:]}'
  if fault.startswith('checkpoint'):
    assert tmp_checkpoints(workdir), 'the kill did not land inside a checkpoint write'
  rc, out, err = finish(start(workdir, tfds_data_dir))
  assert rc == 0, err[-3000:]
  assert resumed in out, out  # from the last checkpoint committed before the kill.
  assert not tmp_checkpoints(workdir)  # what the interrupted save left was cleaned up.
  assert_same_run(workdir, reference)


# The disk fills while orbax writes a checkpoint: the DISK_FULL_AT-th checkpoint metadata
# write of the process fails with ENOSPC, in orbax's own writer thread (as a real full disk
# fails it; test_a_disk_that_fills_mid_write_is_one_write_error has tensorstore's array
# writes fail too, on a real full disk).
DISK_FULL = """
import errno, os
from etils import epath
_cls = type(epath.Path('/'))
_write, _count = _cls.write_text, [0]
def write_text(self, *args, **kwargs):
  if str(self).endswith(os.path.join('meta.orbax-checkpoint-tmp', 'metadata')):
    _count[0] += 1
    if _count[0] == int(os.environ['DISK_FULL_AT']):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
  return _write(self, *args, **kwargs)
_cls.write_text = write_text
"""


@pytest.mark.slow
@pytest.mark.parametrize('at, failed, kept, resumed', [
    # The third checkpoint written (the teacher's at step 5, 10, 15): the teacher keeps 10.
    (3, 'teacher/15', {'teacher': ['10']}, 'teacher: resuming at step 10/36'),
    # The student's second: its first is kept, and the teacher and its anchors whole.
    (13, 'student/2', {'teacher': ['36'], 'anchors': ['1', '2'], 'student': ['1']},
     'student: resuming at stage 1, phase 2, step 0'),
])
def test_a_full_disk_mid_checkpoint_is_one_error_line_and_the_rerun_resumes(
    at, failed, kept, resumed, reference, tfds_data_dir, tmp_path):
  site = tmp_path / 'site'
  site.mkdir()
  (site / 'sitecustomize.py').write_text(DISK_FULL)
  workdir = tmp_path / 'run'
  path = os.pathsep.join(p for p in (str(site), os.environ.get('PYTHONPATH')) if p)
  rc, _, err = finish(start(workdir, tfds_data_dir, env={'PYTHONPATH': path,
                                                         'DISK_FULL_AT': str(at)}))
  assert rc == 1, err[-3000:]
  assert 'Traceback' not in err and 'ERROR' not in err, err[-3000:]
  (line,) = [l for l in err.splitlines() if l.startswith('error:')]
  # Besides it: warnings, notes, and the plain progress lines a slow machine prints once
  # `loop.HEARTBEAT_S` has passed (off a terminal), nothing (no traceback, no noise).
  assert all(l.startswith(('warning: ', 'note: ')) or PROGRESS_LINE.match(l)
             for l in err.splitlines() if l != line), err
  where, step = failed.split('/')
  assert re.fullmatch(
      rf'error: \[Errno 28\] could not write checkpoint {step} in '
      rf'{re.escape(str(workdir / "checkpoints" / where))} \(No space left on device\); the '
      r'checkpoints committed before it are intact\. Free space \(or fix permissions\) and '
      r'rerun the same command to resume\.', line), line
  assert {d: sorted(os.listdir(workdir / 'checkpoints' / d)) for d in kept} == kept
  assert not tmp_checkpoints(workdir)  # what was written of the failed one is gone.
  rc, out, err = finish(start(workdir, tfds_data_dir))
  assert rc == 0, err[-3000:]
  assert resumed in out, out
  assert_same_run(workdir, reference)


def test_a_disk_that_fills_mid_write_is_one_write_error(tmp_path, capfd, caplog):
  """A real full disk (a 4 MiB tmpfs; skipped where mounting is not allowed): tensorstore
  fails the array writes in many threads at once; `save` raises one WriteError, nothing is
  printed or logged, no partial step is left, and the committed step restores."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from msmgan_jax.errors import WriteError  # pylint: disable=g-import-not-at-top
  from msmgan_jax.files import checkpoints  # pylint: disable=g-import-not-at-top
  disk = tmp_path / 'disk'
  disk.mkdir()
  if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', str(disk)],
                    capture_output=True, check=False).returncode:
    pytest.skip('cannot mount a tmpfs here (not root, or no CAP_SYS_ADMIN)')
  try:
    ck = checkpoints.Checkpoints(str(disk / 'ck'), max_to_keep=1)
    small = {'w': jnp.arange(10.0)}
    ck.save(1, small, {'step': 1})
    big = {f'w{i}': jnp.asarray(np.random.default_rng(i).standard_normal(40_000, np.float32))
           for i in range(60)}  # 9.6 MB of random numbers: no compression fits it in 4 MiB.
    capfd.readouterr()
    with pytest.raises(WriteError, match=rf'^\[Errno 28\] could not write checkpoint 2 in '
                       rf'{re.escape(str(disk / "ck"))} \(No space left on device\)') as e:
      ck.save(2, big, {'step': 2})
    assert e.value.errno == errno.ENOSPC
    assert capfd.readouterr() == ('', '') and not caplog.records
    assert sorted(os.listdir(disk / 'ck')) == ['1']
    state, meta = checkpoints.Checkpoints(str(disk / 'ck')).restore(1, small)
    np.testing.assert_array_equal(state['w'], small['w'])
    assert meta == {'step': 1}
  finally:
    subprocess.run(['umount', str(disk)], check=False)
