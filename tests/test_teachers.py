"""Teachers from outside the library (core.teachers): Flax modules, Keras 3, SavedModel.

Every teacher here is the 2-epoch resnet8 of the `teacher_run` fixture, brought in another
form (a Flax module that is not a Classifier, its Keras 3 twin, a SavedModel exported with
jax2tf), so each source can be checked against the native teacher: same logits, same
block features, same anchor test accuracy, and a student that trains through it on real
Fashion-MNIST.
"""
import json
import textwrap

import jax
import numpy as np
import pytest

from support import load_config, shrink, teacher_config_file
from msmgan_jax import main, teachers
from msmgan_jax.core import models, sharding
from msmgan_jax.training import teacher as teacher_lib
from msmgan_jax.training import train

pytestmark = pytest.mark.slow  # every test here reads the trained `teacher_run`.

WRAPPED = textwrap.dedent('''
    """A Flax teacher that is not a msmgan_jax Classifier: it returns logits only."""
    import flax.linen as nn
    from msmgan_jax.core import models


    class Wrapped(nn.Module):
      num_classes: int = 10

      @nn.compact
      def __call__(self, x, train: bool = False):
        return models.ResNet(self.num_classes, depth=8, name='net')(x, train)[0]
    ''')


@pytest.fixture(scope='module')
def native(teacher_run):
  """(anchor paths, their variables, their recorded test accuracies) of the fixture's
  resnet8 teacher, and a batch of real test images."""
  _, _, summary = teacher_run
  model = models.create_model('resnet8', 10)
  target = sharding.abstract_variables(model, (28, 28, 1), sharding.mesh())
  anchors = [teacher_lib.load_anchor(a['path'], target, 'resnet8')
             for a in summary['teacher']['anchors']]
  return anchors


def run_cfg(repo_root, data_dir, method='kd', **teacher):
  cfg = shrink(load_config(repo_root, 'default'), data_dir)
  cfg.method, cfg.anchors.num = method, 1
  cfg.student.model = 'cnn'  # 3 blocks downsampled as resnet8's; compiles fastest.
  cfg.student.epochs, cfg.student.eval_every_phase = 1, False
  for k, v in teacher.items():
    cfg.teacher[k] = v
  return cfg


def final_accuracy(summary) -> float:
  return summary['student']['test_accuracy']


def test_a_flax_classifier_from_python_trains_msmgan_with_its_anchors(
    repo_root, tfds_data_dir, native, tmp_path):
  cfg = run_cfg(repo_root, tfds_data_dir, 'msmgan')
  cfg.anchors.num = len(native)
  given = teachers.flax_teacher(models.create_model('resnet8', 10),
                                [a.variables for a in native])
  summary = train.train_and_evaluate(cfg, str(tmp_path / 'run'), teacher=given)
  t = summary['teacher']
  assert t['source'] == 'flax' and len(t['anchors']) == len(native)
  # Scored here on the same test slice: the accuracies the native run recorded.
  assert [a['test_accuracy'] for a in t['anchors']] == pytest.approx(
      [a.test_accuracy for a in native], abs=1e-6)
  assert final_accuracy(summary) > 0.3


def test_a_flax_module_from_a_config_serves_kd_and_fitnets(
    repo_root, tfds_data_dir, native, tmp_path, monkeypatch):
  from flax import serialization
  (tmp_path / 'mynets.py').write_text(WRAPPED)
  monkeypatch.syspath_prepend(str(tmp_path))
  v = native[-1].variables
  wrapped = {'params': {'net': v['params']}, 'batch_stats': {'net': v['batch_stats']}}
  ckpt = tmp_path / 'teacher.msgpack'
  ckpt.write_bytes(serialization.to_bytes(jax.device_get(wrapped)))
  cfg = run_cfg(repo_root, tfds_data_dir, 'fitnets', source='flax', module='mynets:Wrapped',
                checkpoints=(str(ckpt),),
                feature_layers=('net/block1', 'net/block2', 'net/block3'))
  summary = train.train_and_evaluate(cfg, str(tmp_path / 'fitnets'))
  assert summary['teacher']['source'] == 'flax'
  assert summary['teacher']['test_accuracy'] == pytest.approx(native[-1].test_accuracy, abs=1e-6)
  assert final_accuracy(summary) > 0.3
  # The same module without feature layers gives logits: kd trains, fitnets exits 2.
  cfg.teacher.feature_layers = ()
  cfg.method = 'kd'
  assert final_accuracy(train.train_and_evaluate(cfg, str(tmp_path / 'kd'))) > 0.3
  cfg.method = 'fitnets'
  from msmgan_jax.errors import ConfigError
  with pytest.raises(ConfigError, match='name 3 of its layers in teacher.feature_layers'):
    train.train_and_evaluate(cfg, str(tmp_path / 'refused'))
  assert not (tmp_path / 'refused').exists()


def test_the_keras_twin_gives_the_native_logits_and_features(native, tfds_data_dir):
  from msmgan_jax.lab import keras_resnet
  from msmgan_jax.data.datasets import DatasetInfo
  v = native[-1].variables
  net = keras_resnet.keras_resnet('resnet8', v, (28, 28, 1), 10)
  given = teachers.keras_teacher(net, ('block1', 'block2', 'block3'))
  info = DatasetInfo('x', 10, (28, 28, 1), 1, 1, mean=(0.3,), std=(0.35,))
  ext = given.build(info)
  assert ext.block_channels == (16, 32, 64) and ext.block_strides == (1, 2, 4)
  x = np.random.RandomState(0).randn(4, 28, 28, 1).astype(np.float32)
  logits, feats = jax.jit(ext.apply)(given.variables[0], x)
  ref_logits, ref_feats = models.create_model('resnet8', 10).apply(v, x, train=False)
  np.testing.assert_allclose(logits, ref_logits, atol=1e-4)
  for f, r in zip(feats, ref_feats):
    np.testing.assert_allclose(f, r, atol=1e-4)


def test_a_keras_file_and_a_saved_model_teach_kd_through_main(
    tfds_data_dir, native, tmp_path, capsys):
  """`python -m msmgan_jax.main` with teacher.source keras / saved_model; methods the
  teacher cannot serve and a teacher of other classes exit 2 with the reason."""
  import tensorflow as tf
  from jax.experimental import jax2tf
  from msmgan_jax.lab import keras_resnet
  v = jax.device_get(native[-1].variables)
  keras_path = tmp_path / 'teacher.keras'
  keras_resnet.keras_resnet('resnet8', v, (28, 28, 1), 10).save(keras_path)
  model = models.create_model('resnet8', 10)
  module = tf.Module()
  module.f = tf.function(jax2tf.convert(lambda x: model.apply(v, x, train=False)[0],
                                        polymorphic_shapes=['(b, 28, 28, 1)']),
                         input_signature=[tf.TensorSpec([None, 28, 28, 1], tf.float32)],
                         autograph=False)
  saved = tmp_path / 'saved'
  tf.saved_model.save(module, str(saved), signatures=module.f)
  config = teacher_config_file(tmp_path, tfds_data_dir)
  for source, path in (('keras', keras_path), ('saved_model', saved)):
    wd = tmp_path / source
    assert main.run(['main', '--config', f'{config}:{source},{path}', '--workdir', str(wd)]) == 0
    summary = json.loads((wd / 'summary.json').read_text())
    assert summary['teacher']['source'] == source
    assert summary['teacher']['test_accuracy'] == pytest.approx(native[-1].test_accuracy,
                                                                abs=1e-6)
    assert final_accuracy(summary) > 0.3
  capsys.readouterr()
  refused = [
      (f'{config}:saved_model,{saved}', ['--config.method=fitnets'],
       'gives logits only: name 3 of its layers in teacher.feature_layers'),
      (f'{config}:keras,{keras_path}', ['--config.method=msmgan'],
       'needs the teacher as a network of blocks'),
  ]
  for spec, extra, words in refused:
    wd = tmp_path / 'refused'
    assert main.run(['main', '--config', spec, '--workdir', str(wd), *extra]) == 2
    assert words in capsys.readouterr().err and not wd.exists()


def test_a_teacher_of_other_classes_exits_2(repo_root, tfds_data_dir, native, tmp_path):
  from msmgan_jax.errors import CheckpointError
  from msmgan_jax.lab import keras_resnet
  three = models.create_model('resnet8', 3)
  v3 = three.init(jax.random.key(0), np.zeros((1, 28, 28, 1), np.float32))
  given = teachers.keras_teacher(keras_resnet.keras_resnet('resnet8', v3, (28, 28, 1), 3))
  cfg = run_cfg(repo_root, tfds_data_dir)
  with pytest.raises(CheckpointError, match='gives 3 logits but the data here'):
    train.train_and_evaluate(cfg, str(tmp_path / 'run'), teacher=given)
  assert not (tmp_path / 'run').exists()


def test_student_init_is_judged_on_the_teacher_given_from_python(repo_root, tfds_data_dir,
                                                                 native, tmp_path):
  """Weight selection from a Python-given teacher is checked on that teacher's own variables,
  not on teacher.model, before the workdir exists: resnet8 nests in teacher.model resnet20,
  but a given wrn_16_1 shares only its stem and head with it by name (1%)."""
  from msmgan_jax import errors  # pylint: disable=g-import-not-at-top
  from msmgan_jax.data import datasets as data  # pylint: disable=g-import-not-at-top
  wrn = models.create_model('wrn_16_1', 10)
  v = wrn.init(jax.random.key(0), np.zeros((1, 28, 28, 1), np.float32))
  cfg = run_cfg(repo_root, tfds_data_dir, 'kd')
  cfg.anchors.num, cfg.student.init = len(native), 'first_anchor'
  cfg.student.model, cfg.teacher.model = 'resnet8', 'resnet20'
  cfg.teacher.allow_weak = True  # the untrained wrn is at chance: its load check would stop first.
  with pytest.raises(errors.ConfigError, match=r"only \d\.\d\d% of the student resnet8's "
                     r'parameters and statistics from the teacher WideResNet'):
    train.train_and_evaluate(cfg, str(tmp_path / 'run'), teacher=teachers.flax_teacher(
        wrn, [v] * len(native)))
  assert not (tmp_path / 'run').exists()
  mesh = sharding.mesh()  # the fixture's resnet8, given from Python: all of it selectable.
  info, _, eval_batches = data.load(cfg.dataset, batch_size=cfg.batch_size,
                                    eval_batch_size=cfg.eval_batch_size, mesh=mesh)
  given = teachers.flax_teacher(models.create_model('resnet8', 10), [a.variables for a in native])
  teacher_lib.check_student_init(cfg, info, teacher_lib.load_given(cfg, info, mesh,
                                                                   eval_batches, given=given))
