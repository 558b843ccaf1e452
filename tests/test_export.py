"""Shipping the student: msmgan_jax.export (SavedModel, TFLite) and msmgan_jax.predict.

One tiny `ce` run on real Fashion-MNIST slices is exported once, by the command line in a
fresh process. TensorFlow's and TFLite's logits on raw uint8 test images are compared with
the JAX student's under training's eval preprocessing; predict runs from a fresh shell on
PNG files (without JAX importable); bad input exits with 2 and changes no file.
"""
import json
import os
import re
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from support import load_config, shrink, snapshot
from msmgan_jax.data import datasets as data
from msmgan_jax import export as export_command
from msmgan_jax import predict as predict_command
from msmgan_jax.core import models
from msmgan_jax.training import train
from msmgan_jax.files import checkpoints
from msmgan_jax.core import sharding

pytestmark = pytest.mark.slow  # every test here reads the `run` fixture's trained student.

PARITY = 1e-4  # max abs difference of logits, float32 on CPU through XLA in both paths.


@pytest.fixture(scope='module')
def run(repo_root, tfds_data_dir, tmp_path_factory):
  """A finished 1-epoch `ce` run of the resnet8 student: (config, workdir, summary)."""
  cfg = shrink(load_config(repo_root, 'ce_fmnist_full'), tfds_data_dir)
  cfg.student.epochs = 1
  workdir = str(tmp_path_factory.mktemp('run'))
  return cfg, workdir, train.train_and_evaluate(cfg, workdir)


@pytest.fixture(scope='module')
def test_set(run):
  """The run's test split: raw uint8 images, labels, class names, and the JAX student's
  logits on the images preprocessed as training's evaluation does (`data._preprocess`)."""
  cfg, workdir, _ = run
  builder = data.builder_for(cfg.dataset)
  n = data.num_examples(builder, cfg.dataset.test_split)
  ds = builder.as_dataset(split=cfg.dataset.test_split, shuffle_files=False)
  raw = next(iter(tfds.as_numpy(ds.batch(n))))
  stats = data.normalisation(cfg.dataset, builder)
  prep = ds.enumerate().map(data._preprocess(  # pylint: disable=protected-access
      cfg.dataset, stats, train=False))
  inputs = next(iter(tfds.as_numpy(prep.batch(n))))['image']
  names = builder.info.features['label'].names
  model = models.create_model(cfg.student.model, len(names))
  ckpt = checkpoints.Checkpoints(os.path.join(workdir, 'checkpoints', 'student_final'), read_only=True)
  variables, _ = ckpt.restore(0, sharding.abstract_variables(model, raw['image'].shape[1:],
                                                          sharding.mesh()))
  logits = jax.jit(lambda v, x: model.apply(v, x, train=False)[0])(variables, inputs)
  return raw['image'], raw['label'], names, np.asarray(logits)


def _cli(module, *args, env=None):
  """`python -m msmgan_jax.<module> args` in a fresh process, TensorFlow's log settings left
  to the module (so a flooded console shows)."""
  env = {k: v for k, v in (env or os.environ).items()
         if k not in ('TF_CPP_MIN_LOG_LEVEL', 'TF_ENABLE_ONEDNN_OPTS')}
  return subprocess.run([sys.executable, '-m', f'msmgan_jax.{module}', *map(str, args)],
                        capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope='module')
def exported(run, tmp_path_factory):
  """The run's student exported with --tflite from a fresh shell: (folder, process)."""
  out = tmp_path_factory.mktemp('export') / 'student'
  return out, _cli('export', '--workdir', run[1], '--out', out, '--tflite')


def test_jax_reference_is_the_runs_evaluation(run, test_set):
  _, _, summary = run
  _, labels, _, logits = test_set
  # The reference path reproduces the run's own test accuracy (eval batches of 500 there).
  assert abs(np.mean(logits.argmax(-1) == labels) - summary['student']['test_accuracy']) <= 1e-3


def test_export_writes_a_savedmodel_and_its_metadata(exported, test_set):
  out, proc = exported
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.startswith(f'exported resnet8 (fashion_mnist, uint8 28x28x1 images, '
                                f'10 classes) to {out}')
  assert proc.stderr == ''  # no TensorFlow, XLA or absl chatter.
  assert sorted(os.listdir(out)) == ['assets', 'fingerprint.pb', 'model.json', 'model.tflite',
                                     'saved_model.pb', 'variables']
  assert os.listdir(out.parent) == ['student']  # the temporary folder was renamed.
  meta = json.loads((out / 'model.json').read_text())
  assert meta['labels'] == list(test_set[2]) and meta['input_shape'] == [28, 28, 1]
  assert meta['model'] == 'resnet8' and meta['tflite'] == 'model.tflite'
  serve = tf.saved_model.load(str(out)).signatures['serving_default']
  spec = serve.structured_input_signature[1]['images']
  assert spec.dtype == tf.uint8 and spec.shape.as_list() == [None, 28, 28, 1]


def test_savedmodel_logits_equal_the_jax_students(exported, test_set):
  out, _ = exported
  images, _, _, ref = test_set
  serve = tf.saved_model.load(str(out)).signatures['serving_default']
  got = {k: v.numpy() for k, v in serve(images=tf.constant(images)).items()}
  assert got['logits'].shape == ref.shape == (1000, 10)
  assert np.abs(got['logits'] - ref).max() < PARITY
  np.testing.assert_allclose(got['probabilities'], jax.nn.softmax(ref), atol=1e-6)
  one = serve(images=tf.constant(images[:1]))['logits'].numpy()  # any batch size.
  assert np.abs(one - ref[:1]).max() < PARITY


@pytest.mark.filterwarnings('ignore:.*tf.lite.Interpreter is deprecated:UserWarning')
def test_tflite_logits_equal_the_jax_students(exported, test_set):
  out, _ = exported
  images, _, _, ref = test_set
  interpreter = tf.lite.Interpreter(model_path=str(out / 'model.tflite'))
  got = interpreter.get_signature_runner('serving_default')(images=images)
  assert np.abs(got['logits'] - ref).max() < PARITY


def test_predict_from_a_fresh_shell_names_the_jax_students_classes(exported, test_set,
                                                                   tmp_path):
  out, _ = exported
  images, _, names, ref = test_set
  paths = []
  for i in range(6):
    paths.append(tmp_path / f'gray{i}.png')
    paths[-1].write_bytes(tf.io.encode_png(images[i]).numpy())
  paths.append(tmp_path / 'rgb.png')  # converted back to the model's one channel exactly.
  paths[-1].write_bytes(tf.io.encode_png(np.repeat(images[6], 3, -1)).numpy())
  big = np.repeat(np.repeat(np.repeat(images[7], 3, -1), 2, 0), 2, 1)
  paths.append(tmp_path / 'big.jpg')  # resized from 56x56 and converted: name not compared.
  paths[-1].write_bytes(tf.io.encode_jpeg(big, quality=95).numpy())
  stub = tmp_path / 'nojax' / 'jax'
  stub.mkdir(parents=True)
  (stub / '__init__.py').write_text("raise ImportError('predict must not need JAX')\n")
  env = {**os.environ, 'PYTHONPATH': os.pathsep.join(
      [str(stub.parent)] + [p for p in [os.environ.get('PYTHONPATH')] if p])}
  proc = _cli('predict', '--model', out, '--top-k', 3, *paths, env=env)
  assert proc.returncode == 0, proc.stderr
  assert proc.stderr == ''
  lines = proc.stdout.splitlines()
  assert len(lines) == len(paths)
  top1 = []
  for path, line in zip(paths, lines):
    assert line.startswith(f'{path}: ')
    classes = [c.rsplit(' ', 1) for c in line[len(f'{path}: '):].split(', ')]
    assert len(classes) == 3 and all(name in names for name, _ in classes)
    shares = [float(p.rstrip('%')) for _, p in classes]
    assert shares == sorted(shares, reverse=True) and sum(shares) <= 100.1
    top1.append(classes[0][0])
  assert top1[:7] == [names[i] for i in ref[:7].argmax(-1)]


def test_overwrite_replaces_an_export_whole(run, exported, tmp_path):
  out = tmp_path / 'student'
  shutil.copytree(exported[0], out)
  assert export_command.main(['--workdir', run[1], '--out', str(out), '--overwrite']) == 0
  assert 'model.tflite' not in os.listdir(out)  # replaced, not merged.
  assert json.loads((out / 'model.json').read_text())['tflite'] is None
  assert os.listdir(tmp_path) == ['student']


def _bad_export_cases(workdir, root):
  """{case: (argv, message pattern)}, each on its own folder under `root`."""
  def run_copy(name, method='ce', **student):
    cfg = json.loads(open(os.path.join(workdir, 'config.json')).read())
    cfg['method'] = method
    cfg['student'].update(student)
    os.makedirs(root / name)
    (root / name / 'config.json').write_text(json.dumps(cfg))
    return root / name

  unfinished, teacher = run_copy('unfinished'), run_copy('teacher', method='teacher')
  other = run_copy('other_model', model='resnet14')
  final = os.path.join('checkpoints', 'student_final')
  shutil.copytree(os.path.join(workdir, final), other / final)
  (root / 'afile').write_text('a file, not a folder\n')
  (root / 'used').mkdir()
  (root / 'used' / 'notes.txt').write_text('not an export\n')
  new = ['--out', root / 'new']
  return {
      'missing workdir': (['--workdir', root / 'nope', *new], r'workdir .*nope not found'),
      'no finished student': (['--workdir', unfinished, *new],
                              r'holds no finished student \(checkpoints/student_final/0\)'),
      'teacher-only run': (['--workdir', teacher, *new], r'teacher-only run .* has no student'),
      'out is a file': (['--workdir', workdir, '--out', root / 'afile'], r'afile is a file'),
      'out not empty': (['--workdir', workdir, '--out', root / 'used'],
                        r'used is not empty; .* or add --overwrite'),
      'overwrite what is not an export': (
          ['--workdir', workdir, '--out', root / 'used', '--overwrite'],
          r'used is not empty and holds no export \(model.json\); --overwrite only'),
      'checkpoint of another model': (
          ['--workdir', other, *new],
          r"holds a 'resnet8' but the config's student.model is 'resnet14'"),
  }


def test_bad_export_input_exits_2_and_writes_nothing(run, tmp_path, capsys):
  workdir = run[1]
  cases = _bad_export_cases(workdir, tmp_path)
  for case, (argv, pattern) in cases.items():
    before = (snapshot(tmp_path), snapshot(workdir))
    code = export_command.main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert code == 2, case
    assert captured.out == '' and len(captured.err.splitlines()) == 1, case
    assert re.match(f'error: .*{pattern}', captured.err), (case, captured.err)
    assert (snapshot(tmp_path), snapshot(workdir)) == before, case


def test_bad_predict_input_exits_2_and_prints_no_prediction(exported, test_set, tmp_path,
                                                            capsys):
  out, _ = exported
  good = tmp_path / 'good.png'
  good.write_bytes(tf.io.encode_png(test_set[0][0]).numpy())
  (tmp_path / 'text.png').write_text('not an image\n')
  (tmp_path / 'empty').mkdir()
  cases = {
      'missing model': ([tmp_path / 'nope', good], r'--model .*nope not found'),
      'model is a file': ([good, good], r'--model .*good.png is not a folder'),
      'not an export': ([tmp_path / 'empty', good], r'empty holds no model.json: it is not'),
      'missing image': ([out, good, tmp_path / 'gone.png'], r'image .*gone.png not found'),
      'unreadable image': ([out, good, tmp_path / 'text.png'],
                           r'image .*text.png cannot be read as an image \(Unknown image'),
  }
  before = snapshot(tmp_path), snapshot(out)
  for case, ((model, *images), pattern) in cases.items():
    code = predict_command.main(['--model', str(model), *map(str, images)])
    captured = capsys.readouterr()
    assert code == 2, case
    assert captured.out == '' and len(captured.err.splitlines()) == 1, case
    assert re.match(f'error: .*{pattern}', captured.err), (case, captured.err)
  assert (snapshot(tmp_path), snapshot(out)) == before


def test_export_reads_only_what_the_run_recorded(run, exported, tmp_path):
  """The data a run trained on is gone or moved (an arrays file, a folder, another
  machine): the export comes from summary.json's record, the same as from the data."""
  cfg, workdir, summary = run
  recorded = summary['data']
  assert recorded['class_names'] == list(tfds.builder('fashion_mnist').info.features['label'].names)
  assert recorded['image_shape'] == [28, 28, 1] and len(recorded['mean']) == 1
  moved = tmp_path / 'moved_run'
  shutil.copytree(workdir, moved)
  config = json.loads((moved / 'config.json').read_text())
  config['dataset']['name'] = str(tmp_path / 'gone' / 'my_arrays.npz')
  config['dataset']['data_dir'] = str(tmp_path / 'no_tfds_here')
  (moved / 'config.json').write_text(json.dumps(config))
  assert export_command.main(['--workdir', str(moved), '--out', str(tmp_path / 'student')]) == 0
  meta = json.loads((tmp_path / 'student' / 'model.json').read_text())
  original = json.loads(open(os.path.join(exported[0], 'model.json')).read())
  for key in ('labels', 'input_shape', 'preprocessing'):
    assert meta[key] == original[key], key
  assert not (tmp_path / 'no_tfds_here').exists()
