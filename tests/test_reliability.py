"""Reliability: bad input never costs data, busy workdirs are refused, --overwrite is the only
way to redo a finished run, concurrent dataset preparation, NaN losses, stuck discriminators."""
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import PIL.Image
import pytest

from support import REPO_ROOT
from msmgan_jax import config
from msmgan_jax.training import workdir as workdir_lib
from msmgan_jax.files import faults
from msmgan_jax import cli, main
from msmgan_jax.core import models
from msmgan_jax.training import student
from msmgan_jax.files import checkpoints
from msmgan_jax.files import io
from support import snapshot
from support import write_idx
from support import make_distiller, tiny_cfg

SMALL = ['--config.dataset.train_split=train[:3%]', '--config.dataset.test_split=test[:10%]',
         '--config.teacher.model=resnet8', '--config.batch_size=64',
         '--config.eval_batch_size=500']


@pytest.fixture(scope='module')
def world(teacher_run, tmp_path_factory):
  """Existing things a bad command must leave alone: a finished teacher run, anchors (one
  copy truncated), a file, a foreign folder, a corrupt IDX folder, a run of another config."""
  cfg, teacher_dir, _ = teacher_run
  root = tmp_path_factory.mktemp('world')
  shutil.copytree(os.path.join(teacher_dir, 'checkpoints', 'anchors'), root / 'trunc')
  for p in (root / 'trunc' / '2' / 'state').rglob('*'):
    if p.is_file() and p.stat().st_size > 1000:
      p.write_bytes(p.read_bytes()[:p.stat().st_size // 2])
  (root / 'afile').write_text('a file, not a folder\n')
  (root / 'bad.npz').write_bytes(b'not a zip archive')
  np.savez(root / 'other.npz', x=np.zeros(3))
  (root / 'damaged').mkdir()
  (root / 'damaged' / 'config.json').write_text('{"method": "msmgan", "see')
  (root / 'notours').mkdir()
  (root / 'notours' / 'config.json').write_text('{"name": "my project"}\n')
  (root / 'notours' / 'data.csv').write_text('1,2\n')
  (root / 'foreign').mkdir()
  (root / 'foreign' / 'notes.txt').write_text('not a run\n')
  (root / 'idx').mkdir()
  for split, (img, lab) in {'train': ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz'),
                            'test': ('t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz')
                            }.items():
    write_idx(root / 'idx' / img, np.zeros((4, 28, 28)))
    (root / 'idx' / lab).write_bytes(b'\x1f\x8b broken gzip')
  shutil.copytree(teacher_dir, root / 'other_run')
  for folder, classes in (('one_class', 'a'), ('bad_image', 'abc')):
    for split in ('train', 'test'):
      for c in classes:
        (root / folder / split / c).mkdir(parents=True)
        for i in range(2):  # test images differ from training ones (no copies note).
          PIL.Image.fromarray(np.full((20, 20, 3), 40 * i + (split == 'test'), np.uint8)).save(
              root / folder / split / c / f'{i}.png')
  (root / 'bad_image' / 'train' / 'b' / '1.png').write_bytes(b'\x89PNG\r\n\x1a\n truncated')
  for split in ('train', 'test'):  # 3 RGB classes: not what the Fashion-MNIST teacher knows.
    for c in ('cat', 'dog', 'fox'):
      (root / 'rgb3' / split / c).mkdir(parents=True)
      for i in range(2):
        PIL.Image.fromarray(np.full((20, 20, 3), 40 * i + (split == 'test'), np.uint8)).save(
            root / 'rgb3' / split / c / f'{i}.png')
  shutil.copytree(root / 'one_class', root / 'hidden_class')  # 'a' and a hidden folder.
  for split in ('train', 'test'):
    shutil.copytree(root / 'one_class' / split / 'a', root / 'hidden_class' / split /
                    '.ipynb_checkpoints')
  shutil.copytree(root / 'bad_image', root / 'empty_class')  # a training class without images.
  for p in (root / 'empty_class' / 'train' / 'b').iterdir():
    p.unlink()
  return {'root': root, 'teacher': teacher_dir, 'data': cfg.dataset.data_dir,
          'anchors': [os.path.join(teacher_dir, 'checkpoints', 'anchors', e) for e in '12']}


def base(world, workdir=None, config_file='configs/default.py:smoke'):
  return ['msmgan_jax.main', '--config', config_file,
          f'--config.dataset.data_dir={world["data"]}', *SMALL,
          '--workdir', str(workdir or world['root'] / 'new')]


def given(world, anchors):
  return f'--config.teacher.checkpoints=({",".join(repr(a) for a in anchors)},)'


class FlatCNN(models.PlainCNN):
  """A user's CNN that never downsamples."""

  @property
  def block_strides(self):
    return (1,) * len(self.widths)

  def make_block(self, k, norm):
    return models.ConvBlock(self.widths[k], 1, norm, name=self.block_names[k])


# (id, extra argv, workdir name under the world root or None, exit code, stderr regex)
CASES = [
    ('mistyped field', ['--config.studnet.epochs=1'], None, 2, "did you mean 'student'"),
    ('mistyped group field', ['--config.kd.temp=2'], None, 2, r"field kd\.temp .*kd has \['beta', 'logit_std', 'tau'\]"),
    ('wrong type', ['--config.batch_size=abc'], None, 2, "invalid literal for int.*'abc'"),
    ('wrong float', ['--config.kd.tau=warm'], None, 2, "could not convert string to float: 'warm'"),
    ('zero batch', ['--config.batch_size=0'], None, 2, 'config field batch_size: must be a pos'),
    ('kd.tau=0', ['--config.kd.tau=0'], None, 2, r'config field kd\.tau: must be > 0'),
    ('negative lr', ['--config.student.lr=-0.1'], None, 2, r'student\.lr: must be a finite'),
    ('nan lr', ['--config.teacher.lr=nan'], None, 2, r'teacher\.lr: must be a finite'),
    ('beta above 1', ['--config.kd.beta=1.5'], None, 2, r'kd\.beta: must be in \[0, 1\]'),
    ('unknown model', ['--config.student.model=vgg99'], None, 2, "'vgg99' is not one of"),
    ('unknown dataset', ['--config.dataset.name=svhn'], None, 2, "'svhn' is not one of"),
    ('unknown method', ['--config.method=fitnetz'], None, 2, "'fitnetz' is not one of"),
    ('blocks do not align', ['--config.student.model=cnn4'], None, 2,
     'cnn4 has 4 blocks but teacher resnet8 has 3'),
    ('downsampling does not align', ['--config.student.model=cnn_flat'], None, 2,
     r'cnn_flat downsamples its blocks by \(1, 1, 1\) but teacher resnet8 by \(1, 2, 4\)'),
    ('weight selection across model families', ['--config.student.model=cnn',
                                                 '--config.student.init=first_anchor'], None,
     2, r"student\.init: first_anchor: weight selection would take only 0\.0\d% of the "
     r"student cnn's parameters and statistics from the teacher resnet8 .*set student\.init=random"),
    ('unknown gan loss', ['--config.gan.loss=wgan'], None, 2, "'wgan' is not one of"),
    ('shares do not sum to 1', ['--config.stages.phase_shares=(0.5,0.5,0.5,0.5)'], None, 2,
     r'phase_shares: .* must sum to 1'),
    ('anchor past teacher', ['--config.anchors.epochs=(1,5)'], None, 2,
     r'anchors\.epochs: \(1, 5\) must increase strictly within 1\.\.teacher\.epochs \(2\)'),
    ('no D updates', ['--config.disc.steps_per_g=0'], None, 2, r'steps_per_g: must be'),
    ('malformed split', ['--config.dataset.train_split=train[:10%'], None, 2,
     'is not a TFDS split'),
    ('missing split', ['--config.dataset.test_split=validation'], None, 2,
     "split 'validation' of fashion_mnist_local cannot be read"),
    ('empty split', ['--config.dataset.train_split=train[5:5]'], None, 2, 'holds no examples'),
    ('data_dir is a file', ['--config.dataset.data_dir={root}/afile'], None, 2,
     'data_dir .*afile is a file'),
    ('corrupt IDX files', ['--config.dataset.data_dir={fresh}', '--config.dataset.source=local',
                           '--config.dataset.manual_dir={root}/idx'], None, 2,
     'is not a readable gzip file'),
    ('missing anchor', ['{given_missing}', '--config.anchors.num=2'], None, 2,
     'nope not found .*fix teacher.checkpoints'),
    ('anchor of another architecture', ['{given}', '--config.anchors.num=2',
                                        '--config.teacher.model=resnet20'], None, 2,
     "holds a 'resnet8' but teacher.model is 'resnet20'"),
    ('truncated anchor', ['{given_trunc}', '--config.anchors.num=2'], None, 2,
     'trunc/2 could not be restored.*move it away'),
    ('anchors and stages disagree', ['{given}', '--config.anchors.num=3'], None, 2,
     r'teacher\.checkpoints: gives 2 paths but anchors\.num is 3'),
    ('image folder with one class', ['--config.dataset.name={root}/one_class'], None, 2,
     r'one_class/train holds 1 class folder\(s\) \[.a.\]; a classifier needs at least 2'),
    ('unreadable image', ['--config.dataset.name={root}/bad_image'], None, 2,
     'cannot be decoded: .*bad_image/train/b/1.png; replace or remove them'),
    ('a teacher of other data', ['--config.dataset.name={root}/rgb3', '{given}',
                                 '--config.anchors.num=2', '--config.batch_size=2',
                                 '--config.disc.batch_size=0', '--config.mutual.batch_size=0',
                                 '--config.dataset.train_split=train',
                                 '--config.dataset.test_split=test'], None, 2,
     r'anchors/1 does not fit this data \(classes, channels, image size differ\): the teacher '
     r'was trained on fashion_mnist: 10 classes, 1 channel, 28x28 images; the data here is '
     r'.*rgb3: 3 classes, 3 channels, 20x20 images\. Give teacher.checkpoints trained on this'),
    ('a slice smaller than a batch', ['--config.dataset.name={root}/rgb3',
                                      '--config.dataset.train_split=train[:50%]',
                                      '--config.dataset.test_split=test'], None, 2,
     r"the training split train\[:50%\] holds 3 examples, fewer than one batch of \d+ "
     r"\(dataset.train_split 'train\[:50%\]' is a slice of it: a :smoke config takes"),
    ('a hidden folder is not a class', ['--config.dataset.name={root}/hidden_class'], None, 2,
     r"hidden_class/train holds 1 class folder\(s\) \['a'\] \(and the hidden or system "
     r"folder\(s\) \['.ipynb_checkpoints'\], never classes\)"),
    ('a training class without images', ['--config.dataset.name={root}/empty_class'], None, 2,
     r"the class folder\(s\) \['b'\] of .*empty_class/train hold no image .*add some or "
     'remove the folder'),
    ('a comparison config given to main', ['--config', 'configs/compare_lowdata_v2.py'], None, 2,
     r'this is a comparison config, whose runs. fields are under base \(--config.base.dataset'
     r'.data_dir=...\); it is run with python -m msmgan_jax.compare'),
    ('workdir is a file', [], 'afile', 2, 'afile is a file; pick a directory'),
    ('workdir under a file', [], 'afile/run', 2, 'afile/run cannot be written'),
    ('foreign workdir', [], 'foreign', 2, 'is not empty and holds no config.json'),
    ('foreign workdir, --overwrite', ['--overwrite'], 'foreign', 2,
     'is not empty and holds no config.json'),
    ('damaged config.json', [], 'damaged', 2,
     'damaged/config.json is not valid JSON .*damaged outside a run'),
    ('config.json not ours, --overwrite', ['--overwrite'], 'notours', 2,
     'is not the config of a msmgan_jax run'),
    ('run of another config', [], 'other_run', 2,
     'holds a run with another config .*or add --overwrite'),
    ('no seeds', ['--config.seeds=0'], None, 2, r'config field seeds: must be an integer >= 1'),
    ('unknown seed batching', ['--config.seed_batching=pmap'], None, 2,
     r"seed_batching: 'pmap' is not one of"),
    ('unknown pipeline', ['--config.dataset.pipeline=grain'], None, 2,
     r"dataset\.pipeline: 'grain' is not one of"),
    ('D sub-batch does not divide the batch', ['--config.disc.batch_size=7'], None, 2,
     r'disc\.batch_size: must be 0 \(the whole batch\) or an integer that divides batch_size'),
    ('unknown schedule', ['--config.student.schedule=step'], None, 2,
     r"student\.schedule: 'step' is not global or phase"),
    ('no KD after the hint', ['--config.method=fitnets', '--config.fitnets.hint_share=1.0'],
     None, 2, r'fitnets\.hint_share: must be in \(0, 1\)'),
    ('corrupt arrays file', ['--config.dataset.name={root}/bad.npz'], None, 2,
     'bad.npz cannot be read as a msmgan_jax arrays file .*write it again'),
    ('npz that is not ours', ['--config.dataset.name={root}/other.npz'], None, 2,
     r"other.npz is not a msmgan_jax arrays file \(missing \["),
    ('arrays file through tf.data', ['--config.dataset.name={root}/other.npz',
                                     '--config.dataset.pipeline=tfdata'], None, 2,
     'read only by the device pipeline; set dataset.pipeline to auto or device'),
    ('stage shares do not match the stages', ['--config.student.stage_shares=(0.2,0.3,0.5)'],
     None, 2, r'student\.stage_shares: \(0\.2, 0\.3, 0\.5\) must be empty .* or 2 positive'),
    ('dml.tau=0', ['--config.method=dml', '--config.dml.tau=0'], None, 2,
     r'config field dml\.tau: must be > 0'),
    ('missing config file', ['--config', 'configs/nope.py'], None, 2,
     'config file configs/nope.py not found'),
    ('unknown config argument', ['--config', 'configs/default.py:fast'], None, 2,
     "unknown config argument 'fast'"),
]


@pytest.mark.slow
@pytest.mark.parametrize('extra, workdir, code, message',
                         [pytest.param(*c[1:], id=c[0]) for c in CASES])
def test_bad_input_exits_with_a_message_and_changes_nothing(world, extra, workdir, code,
                                                            message, capsys, tmp_path,
                                                            monkeypatch):
  # Models registered by a user, whose blocks do not line up with the teacher's.
  monkeypatch.setitem(models.MODELS, 'cnn4', functools.partial(models.PlainCNN,
                                                               widths=(8, 16, 32, 64)))
  monkeypatch.setitem(models.MODELS, 'cnn_flat', FlatCNN)
  root = world['root']
  fill = {'root': root, 'fresh': tmp_path / 'fresh_tfds', 'given': given(world, world['anchors']),
          'given_missing': given(world, [world['anchors'][0], str(root / 'nope')]),
          'given_trunc': given(world, [str(root / 'trunc' / '1'), str(root / 'trunc' / '2')])}
  argv = base(world, root / workdir if workdir else None) + [a.format(**fill) for a in extra]
  if '--config' in extra:  # the case replaces the config file.
    i = argv.index('--config')
    del argv[i:i + 2]
  before = snapshot(root), snapshot(world['teacher'])
  capsys.readouterr()
  assert main.run(argv) == code
  err = capsys.readouterr().err
  assert err.startswith('error: ') and 'Traceback' not in err, err
  assert re.search(message, err), err
  assert (snapshot(root), snapshot(world['teacher'])) == before  # nothing added or changed.
  assert len(CASES) >= 20


@pytest.mark.slow
def test_busy_workdir_is_refused_and_a_killed_holder_leaves_no_stale_lock(world, capsys):
  argv = base(world, world['root'] / 'busy')
  cfg, workdir, _, _ = cli.parse(argv)
  os.makedirs(workdir)
  io.write_json(os.path.join(workdir, 'config.json'), json.loads(cfg.to_json()))
  holder = subprocess.Popen([sys.executable, '-c', textwrap.dedent(f'''
      import os, time, filelock
      lock = filelock.FileLock({os.path.join(workdir, '.lock')!r}, timeout=0)
      lock.acquire()
      open({os.path.join(workdir, '.owner')!r}, 'w').write(f'{{os.getpid()}} on testhost')
      print('held', flush=True)
      time.sleep(120)''')], stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == 'held'
    before = snapshot(workdir)
    capsys.readouterr()
    assert main.run(argv) == 2
    err = capsys.readouterr().err
    assert f'is in use by another run (process {holder.pid} on testhost)' in err, err
    assert snapshot(workdir) == before
  finally:
    holder.kill()
    holder.wait()
  wd = workdir_lib.Workdir(workdir)  # the kernel dropped the dead holder's lock.
  wd.claim(cfg)
  wd.release()


@pytest.mark.slow
def test_finished_run_is_kept_and_only_overwrite_redoes_it(world, tmp_path, capsys):
  argv = base(world, world['teacher'], 'configs/teacher_fmnist.py:smoke')
  before = snapshot(world['teacher'])
  capsys.readouterr()
  assert main.run(argv) == 0
  assert 'already holds this finished run' in capsys.readouterr().out
  assert snapshot(world['teacher']) == before  # not even a lock file was touched.

  copy = tmp_path / 'redo'
  shutil.copytree(world['teacher'], copy)
  (copy / 'stale.txt').write_text('from the old run\n')
  old = json.loads((copy / 'summary.json').read_text())
  assert main.run(base(world, copy, 'configs/teacher_fmnist.py:smoke') + ['--overwrite']) == 0
  new = json.loads((copy / 'summary.json').read_text())
  assert not (copy / 'stale.txt').exists()  # the old run is gone, not mixed in.
  assert new['wall_s'] != old['wall_s'] and new['environment']['jax'] == jax.__version__
  assert new['teacher']['test_accuracy'] == old['teacher']['test_accuracy']  # deterministic.


@pytest.mark.slow
def test_concurrent_preparation_prepares_once(tmp_path):
  """Several processes meeting an unprepared dataset: one prepares, the others wait."""
  idx = tmp_path / 'idx'
  idx.mkdir()
  rng = np.random.default_rng(0)
  for img, lab in (('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz'),
                   ('t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz')):
    write_idx(idx / img, rng.integers(0, 255, (50, 28, 28)))
    write_idx(idx / lab, rng.integers(0, 10, (50,)))
  script = textwrap.dedent(f'''
      from msmgan_jax import config
      from msmgan_jax.data import datasets as data
      c = config.defaults().dataset
      c.data_dir, c.manual_dir, c.source = {str(tmp_path / 'tfds')!r}, {str(idx)!r}, 'local'
      print(data.builder_for(c).info.splits['train'].num_examples)''')
  procs = [subprocess.Popen([sys.executable, '-c', script], cwd=REPO_ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
  outs = [p.communicate(timeout=240) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
    assert out.strip().splitlines()[-1] == '50'
  versions = os.listdir(tmp_path / 'tfds' / 'fashion_mnist_local')
  assert versions == ['3.0.1']  # no incomplete.* left behind.


def patch_steps(monkeypatch, around):
  """Every student update goes through `around(phase, n, run)`: n counts updates from 1 and
  `run()` makes the real one, returning (states, metrics); returns the real step_fn."""
  real = student.Distiller.step_fn
  calls = {'n': 0}

  def patched(self, phase, anchor):
    step = real(self, phase, anchor)

    def wrapped(states, batch):
      calls['n'] += 1
      return around(phase, calls['n'], lambda: step(states, batch))
    return wrapped
  monkeypatch.setattr(student.Distiller, 'step_fn', patched)
  return real


@pytest.mark.slow
def test_nan_loss_stops_naming_where_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
  cfg = tiny_cfg(**{'checkpoint_every_steps': 1})

  def poisoned(phase, n, run):
    states, metrics = run()
    if n == 5:  # stage 1, head phase, its 2nd step: the update diverged.
      g = states['g'].replace(params=jax.tree.map(lambda x: x * jnp.nan, states['g'].params))
      states, metrics = {**states, 'g': g}, {**metrics, 'loss': metrics['loss'] * jnp.nan}
    return states, metrics
  patch_steps(monkeypatch, poisoned)
  d = make_distiller(cfg, tmp_path)
  with pytest.raises(faults.NumericalError,
                     match=r'non-finite training loss in stage 1 phase head at step 2: loss=nan'):
    d.run()
  ckpt = checkpoints.Checkpoints(str(tmp_path / 'checkpoints' / 'student'))
  meta = ckpt.meta(ckpt.latest_step())
  assert meta['position'] == [0, 3, 1]  # head phase after its 1st step, before the NaN.
  states, _ = ckpt.restore(ckpt.latest_step(), d.build_states(0, 3, d.init_carry()))
  assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(states['g'].params))


def test_checkpoints_refuse_non_finite_states(tmp_path):
  ckpt = checkpoints.Checkpoints(str(tmp_path / 'c'))
  ckpt.save(1, {'w': jnp.ones(3)}, {})
  with pytest.raises(faults.NumericalError, match=r"training diverged in the teacher by step 7: "
                     r"non-finite values in 1 arrays of the state \(\['w'\]\), so checkpoint 2 .* "
                     r"not written .*Lower the learning rate"):
    ckpt.save(2, {'w': jnp.array([1.0, jnp.inf, 0.0])}, {}, where='in the teacher by step 7')
  assert ckpt.steps() == [1]


@pytest.mark.slow
def test_a_state_that_diverges_before_its_loss_does_is_named_by_phase_and_step(tmp_path,
                                                                               monkeypatch):
  """BatchNorm statistics gone NaN at a phase's last step (1 step here), while its logged
  loss is still finite: the phase-end checkpoint names the stage, phase and training step
  and says what to do."""
  cfg = tiny_cfg()

  def poisoned(phase, n, run):
    states, metrics = run()
    if phase.name == 'block_2':  # the update diverged; its loss was computed before.
      g = states['g'].replace(batch_stats=jax.tree.map(lambda x: x * jnp.nan,
                                                       states['g'].batch_stats))
      states = {**states, 'g': g}
    return states, metrics
  patch_steps(monkeypatch, poisoned)
  d = make_distiller(cfg, tmp_path)
  n = d.num_steps(d.phases[0][1], 0)
  with pytest.raises(faults.NumericalError,
                     match=rf'training diverged in stage 1 phase block_2 by its last training '
                           rf'step \({n}\): non-finite values in \d+ arrays .*Lower the learning'):
    d.run()


def test_validate_checks_numbers_for_every_method():
  cfg = config.defaults()
  cfg.method, cfg.kd.tau = 'ce', 0.0
  with pytest.raises(config.ConfigError, match=r'kd\.tau: must be > 0'):
    config.validate(cfg)


@pytest.mark.slow
def test_stop_at_the_last_step_of_a_phase_resumes_to_the_same_student(tmp_path, monkeypatch):
  """A stop request during a phase's last step: the rerun evaluates and records that phase."""
  cfg = tiny_cfg(**{'stages.block_stages': -1})  # block phases in both stages.
  reference = make_distiller(cfg, tmp_path / 'ref').run()
  real_step_fn = student.Distiller.step_fn
  calls = {'n': 0}

  def stopping_step_fn(self, phase, anchor):
    step = real_step_fn(self, phase, anchor)

    def wrapped(states, batch):
      calls['n'] += 1
      if calls['n'] == 12:  # stage 2's head (3 steps after 3 block steps): its last step.
        faults._REQUESTED['signal'] = signal.SIGTERM  # pylint: disable=protected-access
      return step(states, batch)
    return wrapped
  monkeypatch.setattr(student.Distiller, 'step_fn', stopping_step_fn)
  try:
    with pytest.raises(faults.Interrupted, match='stage 2 phase head at step 3'):
      make_distiller(cfg, tmp_path / 'run').run()
  finally:
    faults._REQUESTED['signal'] = None  # pylint: disable=protected-access
  monkeypatch.setattr(student.Distiller, 'step_fn', real_step_fn)
  resumed = make_distiller(cfg, tmp_path / 'run').run()
  assert resumed['test_accuracy'] == reference['test_accuracy']
  assert [[p['name'], p['steps'], p.get('test_accuracy')] for s in resumed['stages']
          for p in s['phases']] == [[p['name'], p['steps'], p.get('test_accuracy')]
                                    for s in reference['stages'] for p in s['phases']]


def test_temp_files_of_a_killed_write_do_not_make_a_workdir_foreign(tmp_path):
  (tmp_path / 'run').mkdir()
  (tmp_path / 'run' / 'config.json.tmp4242').write_text('{"half": ')
  wd = workdir_lib.Workdir(str(tmp_path / 'run'))
  wd.claim(tiny_cfg())
  wd.release()
  assert sorted(os.listdir(tmp_path / 'run')) == ['.lock', '.owner', 'config.json']


def test_a_method_without_teacher_cannot_have_teacher_phases(monkeypatch):
  from msmgan_jax.methods import registry as phases  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(phases, 'METHODS', dict(phases.METHODS))
  from msmgan_jax.core.phase import ANCHOR, Phase  # pylint: disable=g-import-not-at-top
  from msmgan_jax.methods import kd  # pylint: disable=g-import-not-at-top
  phases.register_method('lonely_kd', lambda cfg, k: [Phase('head', 1.0, loss=kd.kd_loss, partner=ANCHOR)],
                         uses_teacher=False)
  cfg = config.defaults()
  cfg.method = 'lonely_kd'
  with pytest.raises(config.ConfigError, match="'lonely_kd' is registered without a teacher"):
    config.validate(cfg)


COMMANDS = ('main', 'compare', 'export', 'predict', 'report', 'benchmark', 'arrays',
            'torch_check', 'config')


def _exit_code(fn) -> int:
  try:
    return fn()
  except SystemExit as e:  # argparse exits; a command line gets the same code.
    return e.code


@pytest.mark.parametrize('name', COMMANDS)
def test_every_command_prints_its_own_usage_and_refuses_a_wrong_argument(name, capsys):
  """`python -m msmgan_jax.X --help` prints X's usage (exit 0); a wrong argument exits 2
  with X's usage and no traceback."""
  import importlib  # pylint: disable=g-import-not-at-top
  module = importlib.import_module(f'msmgan_jax.{name}')
  whole_argv = name in ('main', 'compare')  # these take sys.argv with the program name.
  call = lambda args: _exit_code(lambda: (module.run if name == 'main' else module.main)(
      ([f'msmgan_jax.{name}'] if whole_argv else []) + args))
  assert call(['--help']) == 0
  out = capsys.readouterr().out
  assert f'usage: python -m msmgan_jax.{name}' in out, out[-500:]
  for other in COMMANDS:
    if other != name and not (name == 'main' and other == 'compare'):
      assert f'usage: python -m msmgan_jax.{other} ' not in out
  assert call(['--no-such-flag']) == 2
  err = capsys.readouterr().err
  assert 'Traceback' not in err and f'usage: python -m msmgan_jax.{name}' in err, err


def test_compare_refuses_a_run_config_in_plain_words(capsys):
  from msmgan_jax.lab import compare  # pylint: disable=g-import-not-at-top
  assert compare.main(['compare', '--config', 'configs/default.py']) == 2
  err = capsys.readouterr().err
  assert 'not a comparison config' in err and 'python -m msmgan_jax.main' in err
  assert 'Traceback' not in err and 'usage: python -m msmgan_jax.compare' in err


def test_every_config_loads_from_outside_the_repository(repo_root, tmp_path):
  """Config files that import their siblings (`from configs import ...`) load from any
  working directory; one fresh process, so no earlier import of `configs` helps."""
  import subprocess  # pylint: disable=g-import-not-at-top
  files = sorted(str(p) for p in (repo_root / 'configs').glob('*.py') if p.stem != '__init__')
  code = ('import sys\nfrom msmgan_jax import cli\nfor f in sys.argv[1:]:\n'
          '  cli.parse(["main", "--config", f])\n  print("ok", f)\n')
  only_package = tmp_path / 'site'  # msmgan_jax importable, the repository's configs not.
  only_package.mkdir()
  (only_package / 'msmgan_jax').symlink_to(repo_root / 'msmgan_jax')
  env = {**os.environ, 'PYTHONPATH': str(only_package)}
  work = tmp_path / 'elsewhere'
  work.mkdir()
  out = subprocess.run([sys.executable, '-c', code, *files], cwd=work, env=env,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.count('ok ') == len(files) > 10


def test_tilde_in_workdir_and_config_is_the_home_folder(tmp_path, monkeypatch, repo_root):
  from msmgan_jax import cli  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv('HOME', str(tmp_path))
  (tmp_path / 'mine.py').write_text((repo_root / 'configs' / 'default.py').read_text())
  for argv in (['--workdir', '~/runs/x'], ['--workdir=~/runs/x']):
    _, workdir, _, _ = cli.parse(['main', '--config', str(repo_root / 'configs/default.py'), *argv])
    assert workdir == str(tmp_path / 'runs' / 'x')
  cfg, _, _, _ = cli.parse(['main', '--config=~/mine.py'])
  assert cfg.method == 'msmgan'


@pytest.mark.slow
def test_a_refused_resume_changes_no_file_tensorboard_included(tmp_path, monkeypatch):
  """A student interrupted mid-run whose latest checkpoint is damaged: the resume is
  refused (CheckpointError) and every file, the TensorBoard events included, is as it was."""
  from msmgan_jax import errors  # pylint: disable=g-import-not-at-top
  cfg = tiny_cfg(**{'checkpoint_every_steps': 1})

  def crash(phase, n, run):
    if n == 6:
      raise KeyboardInterrupt
    return run()
  real = patch_steps(monkeypatch, crash)
  first = make_distiller(cfg, tmp_path)
  with pytest.raises(KeyboardInterrupt):
    first.run()
  first.wd.metrics.close()  # the interrupted process ends: its event writer is flushed.
  monkeypatch.setattr(student.Distiller, 'step_fn', real)
  ckpt = checkpoints.Checkpoints(str(tmp_path / 'checkpoints' / 'student'))
  latest = tmp_path / 'checkpoints' / 'student' / str(ckpt.latest_step()) / 'state'
  for p in latest.rglob('*'):
    if p.is_file() and p.stat().st_size > 1000:
      p.write_bytes(b'\0' * p.stat().st_size)
  assert list((tmp_path / 'tensorboard').iterdir())
  before = {str(p): p.read_bytes() for p in tmp_path.rglob('*') if p.is_file()}
  with pytest.raises(errors.CheckpointError, match='could not be restored'):
    make_distiller(cfg, tmp_path).run()
  assert {str(p): p.read_bytes() for p in tmp_path.rglob('*') if p.is_file()} == before


@pytest.mark.slow
def test_ctrl_c_before_training_says_nothing_was_trained(world, monkeypatch, capsys):
  """One Ctrl-C while the data is prepared (before the stop handler is in place) is not
  "interrupted twice": it says nothing was trained, exits 130, and leaves no workdir."""
  from msmgan_jax.data import datasets  # pylint: disable=g-import-not-at-top

  def interrupted(*args, **kwargs):
    raise KeyboardInterrupt
  monkeypatch.setattr(datasets, 'load', interrupted)
  workdir = world['root'] / 'interrupted_early'
  assert main.run(base(world, workdir)) == 130
  err = capsys.readouterr().err
  assert 'interrupted before training began' in err and 'twice' not in err
  assert 'Traceback' not in err and not workdir.exists()


def test_a_teacher_saved_before_the_data_record_is_checked_by_its_shapes(tmp_path):
  """Anchors without a `data` record: the class count and channels come from the arrays'
  shapes, and a mismatch is refused in the same words."""
  from msmgan_jax.data import datasets  # pylint: disable=g-import-not-at-top
  from msmgan_jax.training import teacher  # pylint: disable=g-import-not-at-top
  from msmgan_jax.core import optim  # pylint: disable=g-import-not-at-top
  model = models.create_model('resnet8', 10)
  variables = optim.init_variables(model, jax.random.key(0), (28, 28, 1))
  ckpt = checkpoints.Checkpoints(str(tmp_path / 'anchors'))
  ckpt.save(3, variables, {'epoch': 3, 'test_accuracy': 0.5, 'model': 'resnet8'})
  rec = teacher.trained_on(ckpt, 3, ckpt.meta(3))
  assert rec == {'num_classes': 10, 'channels': 1}
  same = datasets.DatasetInfo('mine', 10, (28, 28, 1), 100, 10)
  teacher.check_agrees('a', rec, same)  # nothing to say.
  other = datasets.DatasetInfo('mine', 3, (32, 32, 3), 100, 10, ('x', 'y', 'z'))
  from msmgan_jax import errors  # pylint: disable=g-import-not-at-top
  with pytest.raises(errors.CheckpointError,
                     match=r'\(classes, channels differ\): the teacher was trained on 10 classes, '
                           r'1 channel; the data here is mine: 3 classes, 3 channels, 32x32'):
    teacher.check_agrees('a', rec, other)
  renamed = datasets.DatasetInfo('mine', 10, (28, 28, 1), 100, 10, tuple('abcdefghij'))
  rec = {'name': 'fmnist', 'num_classes': 10, 'image_shape': [28, 28, 1],
         'class_names': list('abcdefghji')}  # two classes swapped.
  with pytest.raises(errors.CheckpointError, match=r'\(class names differ\).*named \[.a., .b.'):
    teacher.check_agrees('a', rec, renamed)
