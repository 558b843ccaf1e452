"""Teachers as users really have them (issue 34's field cases): each is the 2-epoch resnet8
of the `teacher_run` fixture brought in the shape users give it (a softmax at the end, pixel
scaling inside, a Sequential wrapper, two outputs, a subclassed model, Keras's own
`model.export()`, a uint8 signature, a Flax switch named `is_train`), so the right reading
must give the native teacher's test accuracy, and the wrong one must stop the run (exit 2,
nothing written) naming the field that fixes it.
"""
import json
import textwrap

import jax
import numpy as np
import pytest

from support import load_config, shrink, teacher_config_file
from msmgan_jax import main, teachers
from msmgan_jax.core import models, sharding
from msmgan_jax.core.teachers import diagnosis
from msmgan_jax.data import datasets as data
from msmgan_jax.errors import CheckpointError, ConfigError
from msmgan_jax.training import teacher as teacher_lib

FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530  # close to the data's; only pixel scales matter here.


@pytest.fixture(scope='module')
def native(teacher_run):
  """The fixture teacher's last anchor: (variables, recorded test accuracy)."""
  _, _, summary = teacher_run
  model = models.create_model('resnet8', 10)
  target = sharding.abstract_variables(model, (28, 28, 1), sharding.mesh())
  a = summary['teacher']['anchors'][-1]
  anchor = teacher_lib.load_anchor(a['path'], target, 'resnet8')
  return jax.device_get(anchor.variables), anchor.test_accuracy


@pytest.fixture(scope='module')
def twin(native):
  from msmgan_jax.lab import keras_resnet
  return keras_resnet.keras_resnet('resnet8', native[0], (28, 28, 1), 10)


@pytest.fixture(scope='module')
def loaded(repo_root, tfds_data_dir):
  """load(**teacher fields) -> the Teacher `load_given` makes of them on the test slice."""
  cfg0 = cfg_for(repo_root, tfds_data_dir)
  mesh = sharding.mesh()
  info, _, eval_batches = data.load(cfg0.dataset, batch_size=cfg0.batch_size,
                                    eval_batch_size=cfg0.eval_batch_size, mesh=mesh)

  def load(method='kd', given=None, **fields):
    cfg = cfg_for(repo_root, tfds_data_dir, method, **fields)
    return teacher_lib.load_given(cfg, info, mesh, eval_batches, given=given)
  return load


def cfg_for(repo_root, data_dir, method='kd', **teacher):
  cfg = shrink(load_config(repo_root, 'default'), data_dir)
  cfg.method, cfg.anchors.num = method, 1
  cfg.student.model = 'cnn'  # 3 blocks downsampled by (1, 2, 4), as resnet8's.
  cfg.student.epochs, cfg.student.eval_every_phase = 1, False
  for k, v in teacher.items():
    cfg.teacher[k] = v
  return cfg


def keras_file(model, path) -> str:
  model.save(path)
  return str(path)


def wrapped(twin, before=(), after=(), name='wrapped'):
  """A Functional model: `before` layers, the twin, `after` layers."""
  import keras
  x = inputs = keras.Input((28, 28, 1))
  for layer in before:
    x = layer(x)
  x = twin(x)
  for layer in after:
    x = layer(x)
  return keras.Model(inputs, x, name=name)


# The outputs and the inputs are checked, not taken on trust --------------------------------
@pytest.mark.slow
def test_a_softmax_read_as_logits_and_logits_read_as_probabilities_are_refused(
    loaded, twin, native, tmp_path):
  import keras
  soft = keras_file(wrapped(twin, after=[keras.layers.Softmax()]), tmp_path / 'soft.keras')
  plain = keras_file(twin, tmp_path / 'plain.keras')
  with pytest.raises(CheckpointError, match=r'look like probabilities.*row sums 1.*Set '
                     r'teacher.outputs=probabilities'):
    loaded(source='keras', checkpoints=(soft,))
  with pytest.raises(CheckpointError, match=r'not probabilities.*Set teacher.outputs=logits'):
    loaded(source='keras', checkpoints=(plain,), outputs='probabilities')
  for path, outputs in ((soft, 'probabilities'), (plain, 'logits')):
    t = loaded(source='keras', checkpoints=(path,), outputs=outputs)
    assert t.test_accuracy == pytest.approx(native[1], abs=1e-6)
    assert t.checks['warnings'] == []


@pytest.mark.slow
@pytest.mark.parametrize('scale,inputs', [(255.0, 'raw'), (1.0, 'unit')])
def test_a_teacher_scaling_pixels_inside_is_refused_at_the_wrong_scale_and_told_the_right_one(
    loaded, twin, native, tmp_path, scale, inputs):
  """Rescaling + Normalization inside the model (trained on 0..255 or 0..1 pixels), left at
  the default teacher.inputs=normalised: the scale that scores is found (exit 2 naming it);
  with it, the native accuracy."""
  import keras
  layers = [keras.layers.Rescaling(1.0 / scale),
            keras.layers.Normalization(mean=FMNIST_MEAN, variance=FMNIST_STD ** 2)]
  path = keras_file(wrapped(twin, before=layers), tmp_path / f'{inputs}.keras')
  with pytest.raises(CheckpointError, match='reads its pixels in another scale') as e:
    loaded(source='keras', checkpoints=(path,))
  assert f'teacher.inputs={inputs} scores' in str(e.value)
  assert f'set teacher.inputs={inputs}' in str(e.value)
  t = loaded(source='keras', checkpoints=(path,), inputs=inputs)
  assert t.test_accuracy == pytest.approx(native[1], abs=2e-3)  # the stats differ slightly.


@pytest.mark.slow
def test_a_teacher_at_chance_stops_the_run_or_goes_on_recorded_with_allow_weak(
    tfds_data_dir, tmp_path, capsys):
  """Through `main`: an untrained Keras CNN (a new user's first try) exits 2 with nothing
  written; with teacher.allow_weak=True it trains, warns and records the warning."""
  import keras
  net = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(4, 3),
                          keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)])
  path = keras_file(net, tmp_path / 'untrained.keras')
  config = teacher_config_file(tmp_path, tfds_data_dir)
  wd = tmp_path / 'run'
  args = ['main', '--config', f'{config}:keras,{path}', '--workdir', str(wd)]
  assert main.run(args) == 2
  err = capsys.readouterr().err
  assert 'error:' in err and 'near chance' in err and 'allow_weak' in err
  assert not wd.exists()
  assert main.run(args + ['--config.teacher.allow_weak=True']) == 0
  assert 'warning:' in capsys.readouterr().err
  checks = json.loads((wd / 'summary.json').read_text())['teacher']['checks']
  assert checks['warnings'] and 'near chance' in checks['warnings'][0]
  assert checks['accuracy'] < checks['chance'] + diagnosis.MIN_LIFT


@pytest.mark.parametrize('seen,outputs,words', [
    ({'min': 0.0, 'max': 1.0, 'sum_min': 1.0, 'sum_max': 1.0, 'sum_dev': 0.0}, 'logits',
     'look like probabilities'),
    ({'min': 1e-9, 'max': 0.9, 'sum_min': 0.9995, 'sum_max': 1.0004, 'sum_dev': 5e-4}, 'logits',
     'look like probabilities'),
    ({'min': -3.0, 'max': 5.0, 'sum_min': -1.0, 'sum_max': 4.0, 'sum_dev': 3.0}, 'probabilities',
     'not probabilities'),
    ({'min': 0.0, 'max': 3.0, 'sum_min': 2.0, 'sum_max': 6.0, 'sum_dev': 5.0}, 'probabilities',
     'not probabilities'),  # non-negative scores (a ReLU head) are not probabilities either.
    ({'min': 0.0, 'max': 3.0, 'sum_min': 2.0, 'sum_max': 6.0, 'sum_dev': 5.0}, 'logits', None),
    ({'min': -3.0, 'max': 5.0, 'sum_min': -1.0, 'sum_max': 4.0, 'sum_dev': 3.0}, 'logits', None),
    ({'min': 0.0, 'max': 1.0, 'sum_min': 1.0, 'sum_max': 1.0, 'sum_dev': 0.0}, 'probabilities',
     None),
    # A bfloat16 softmax (Keras mixed_bfloat16): rows sum to 1 only within its precision.
    ({'min': 0.0, 'max': 0.99, 'sum_min': 0.9947, 'sum_max': 1.004, 'sum_dev': 5.3e-3,
      'eps': 2 ** -7}, 'logits', 'look like probabilities'),
    ({'min': 0.0, 'max': 0.99, 'sum_min': 0.9947, 'sum_max': 1.004, 'sum_dev': 5.3e-3,
      'eps': 2 ** -7}, 'probabilities', None),
    # A final sigmoid: every output in [0, 1], rows summing anywhere.
    ({'min': 0.01, 'max': 0.99, 'sum_min': 0.5, 'sum_max': 3.2, 'sum_dev': 2.2}, 'logits',
     'final sigmoid'),
    ({'min': 0.0, 'max': 0.99, 'sum_min': 0.9947, 'sum_max': 1.004, 'sum_dev': 5.3e-3,
      'eps': 2 ** -23}, 'logits', 'final sigmoid'),  # not rows of a float32 softmax.
    ({'min': -0.01, 'max': 0.99, 'sum_min': 0.5, 'sum_max': 3.2, 'sum_dev': 2.2}, 'logits',
     None),
])
def test_output_findings(seen, outputs, words):
  found = diagnosis.output_findings({**seen, 'count': 100}, outputs)
  assert (words in found[0]) if words else found == []


@pytest.mark.parametrize('accuracy,predicted,labels,words', [
    (0.1172, [100] * 10, [100] * 10, ['near chance']),
    (0.3333, [0, 300, 0], [100] * 3, ['near chance', 'predicts class 1 for 100%']),
    (0.90, [90, 10], [90, 10], ['near chance']),  # the majority guess on imbalanced labels.
    (0.95, [86, 14], [90, 10], []),
    (0.62, [10] * 10, [10] * 10, []),
    (0.5, [97, 1, 1, 1], [25] * 4, ['predicts class 0 for 97%']),
])
def test_score_findings(accuracy, predicted, labels, words):
  found = diagnosis.score_findings(accuracy, predicted, labels)
  assert len(found) == len(words) and all(w in f for w, f in zip(words, found))


def _confusion(accuracy, classes, moves=(), per_class=100):
  """A (C, C) confusion of a teacher right on `accuracy` of every class's images (the rest
  spread over the others), then for each (a, b) in `moves` class a's rows sent to b."""
  conf = np.full((classes, classes), per_class * (1 - accuracy) / (classes - 1))
  np.fill_diagonal(conf, per_class * accuracy)
  out = conf.copy()
  for a, b in moves:
    out[:, b] = conf[:, a]  # the teacher's output b is the data's class a.
  return out


def test_order_findings_name_a_swapped_or_cycled_class_order_and_not_mere_confusion():
  names = [f'c{k}' for k in range(10)]
  # Two classes swapped: found, both named with their shares and the data's order.
  found = diagnosis.order_findings(_confusion(0.95, 10, [(1, 9), (9, 1)]), names)
  assert len(found) == 1 and 'another order' in found[0]
  assert 'class 1 (c1) as 9 (c9) (95%)' in found[0] and 'class 9 (c9) as 1 (c1)' in found[0]
  assert 'in order: 0 (c0), 1 (c1), 2 (c2)' in found[0]
  # A longer cycle, as folders '1', '10', '2' sorted one way and numbers the other.
  found = diagnosis.order_findings(_confusion(0.9, 10, [(0, 5), (5, 7), (7, 0)]))
  assert 'class 0 as 5' in found[0] and 'class 5 as 7' in found[0] and 'class 7 as 0' in found[0]
  # A weak teacher confusing one class with another, one way only: not an order.
  conf = _confusion(0.8, 10)
  conf[2, 2], conf[2, 4] = 20, 60 + conf[2, 4]
  assert diagnosis.order_findings(conf, names) == []
  # Both ways but neither a majority (45% each): confusion, not an order.
  conf = _confusion(0.5, 3, per_class=20)
  conf[0] = [9, 9, 2]
  conf[1] = [9, 9, 2]
  assert diagnosis.order_findings(conf) == []
  # Too few images of a class to read its row (fewer than ORDER_MIN_IMAGES).
  conf = np.diag([50.0, 50.0, 1.0, 1.0])
  conf[2], conf[3] = [0, 0, 0, 1], [0, 0, 1, 0]
  assert diagnosis.order_findings(conf) == []
  conf = np.diag([50.0, 50.0, 3.0, 3.0])
  conf[2], conf[3] = [0, 0, 0, 3], [0, 0, 3, 0]
  assert 'class 2 as 3 (100%)' in diagnosis.order_findings(conf)[0]
  assert diagnosis.order_findings(np.diag([10.0] * 5)) == []


@pytest.mark.slow
def test_a_teacher_with_its_classes_in_another_order_is_refused(loaded, twin, native,
                                                                  tmp_path):
  """The native teacher with a last layer that sends its logits to other outputs (classes
  1 and 9 swapped, as a teacher trained with another folder order): its accuracy alone
  would pass; the order check stops the run naming the swapped classes."""
  import keras

  def saved(name, order):
    mix = keras.layers.Dense(10, use_bias=False, trainable=False, name='reorder')
    model = wrapped(twin, after=[mix])
    mix.set_weights([np.eye(10, dtype=np.float32)[:, order]])
    return keras_file(model, tmp_path / name)
  with pytest.raises(CheckpointError, match='another order') as e:
    loaded(source='keras', checkpoints=(saved('swapped.keras', [0, 9, 2, 3, 4, 5, 6, 7, 8, 1]),))
  assert 'class 1 (Trouser) as 9 (Ankle boot)' in str(e.value)
  assert 'class 9 (Ankle boot) as 1 (Trouser)' in str(e.value)
  t = loaded(source='keras', checkpoints=(saved('same.keras', list(range(10))),))
  assert t.test_accuracy == pytest.approx(native[1], abs=1e-6) and t.checks['warnings'] == []


class _Info:
  """The data fields a teacher's build reads, for images of `shape` (H, W, C)."""

  def __init__(self, shape):
    self.image_shape, self.mean, self.std = shape, (0.5,) * shape[2], (0.25,) * shape[2]


def _keras_cnn(shape, head=None, dtype=None):
  import keras
  x = inputs = keras.Input(shape)
  h = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, dtype=dtype)(x))
  out = keras.layers.Dense(10, activation=head, dtype=dtype,
                           kernel_initializer=keras.initializers.RandomNormal(stddev=1.0))(h)
  return keras.Model(inputs, out)


def test_a_keras_teacher_declaring_another_image_shape_is_refused_naming_the_fix():
  """A fully convolutional Keras teacher built with `Input((32, 32, 3))` runs on 28x28
  images without a word from Keras (no dimension is fixed inside): the declared shape is
  compared with the data's, and the fix named. A free size (`Input((None, None, 3))`) is
  taken as it is."""
  given = teachers.keras_teacher(_keras_cnn((32, 32, 3)))
  with pytest.raises(CheckpointError, match=r'declares images of shape \(32, 32, 3\).*Set '
                     r'dataset.image_size=32'):
    given.build(_Info((28, 28, 3)))
  with pytest.raises(CheckpointError, match='Give a teacher for 1-channel images'):
    given.build(_Info((32, 32, 1)))
  assert given.build(_Info((32, 32, 3))).num_classes == 10
  free = teachers.keras_teacher(_keras_cnn((None, None, 3)))
  assert free.build(_Info((28, 28, 3))).num_classes == 10


def test_a_bfloat16_softmax_is_read_as_probabilities_at_its_own_precision():
  """Keras's mixed_bfloat16 policy computes the softmax in bfloat16: its rows sum to 1
  only within about 0.005, five times float32's tolerance. The scorer reads the dtype the
  network computes in, so the softmax is still found; in float32 a sigmoid head is named."""
  from msmgan_jax.training import teacher as teacher_lib
  x = np.random.default_rng(0).normal(size=(64, 8, 8, 3)).astype(np.float32)
  batch = {'image': x, 'label': np.arange(64) % 10, 'mask': np.ones(64, np.float32)}
  found = {}
  for name, head, dtype in (('bf16', 'softmax', 'mixed_bfloat16'), ('sigmoid', 'sigmoid', None)):
    model = teachers.keras_teacher(_keras_cnn((8, 8, 3), head, dtype)).build(_Info((8, 8, 3)))
    seen = teacher_lib.score(model, model._sample, lambda: iter([batch]), sharding.mesh())  # pylint: disable=protected-access
    assert seen['eps'] == (2 ** -7 if name == 'bf16' else 2 ** -23), seen['eps']
    found[name] = diagnosis.output_findings(seen, 'logits')
  assert 'look like probabilities' in found['bf16'][0], found
  assert 'final sigmoid' in found['sigmoid'][0], found


def test_a_classifier_teacher_refuses_pixel_scale_and_output_fields_it_would_ignore():
  """A msmgan_jax Classifier runs as the students do (normalised images, logits): the
  fields that convert another network's pixels or outputs are refused, not dropped."""
  net = models.create_model('cnn', 10)
  variables = net.init(jax.random.key(0), np.zeros((1, 8, 8, 3), np.float32), train=False)
  for fields in ({'inputs': 'unit'}, {'outputs': 'probabilities'}):
    with pytest.raises(ConfigError, match='would be ignored'):
      teachers.flax_teacher(net, variables, **fields).build(_Info((8, 8, 3)))
  assert teachers.flax_teacher(net, variables).build(_Info((8, 8, 3))) is net


@pytest.mark.parametrize('inputs,mode', [('signed', 'tf'), ('caffe', 'caffe'),
                                         ('torch', 'torch'), ('raw', None), ('unit', None)])
def test_imagenet_pixel_conventions_match_keras_preprocess_input(inputs, mode):
  """A teacher from keras.applications (or torchvision) takes its images as Keras's
  `preprocess_input` makes them: `teacher.inputs` gives it the very same pixels from the
  students' normalised images (the three modes to 1e-4, raw and unit as 0..255 / 255)."""
  from keras.applications import imagenet_utils
  rng = np.random.default_rng(0)
  pixels = rng.integers(0, 256, (4, 8, 8, 3)).astype(np.float32)  # RGB 0..255.
  info = _Info((8, 8, 3))
  mean, std = np.asarray(info.mean, np.float32), np.asarray(info.std, np.float32)
  normalised = (pixels / 255.0 - mean) / std
  model = teachers.keras_teacher(_keras_cnn((8, 8, 3)), inputs=inputs).build(info)
  got = np.asarray(model.to_inputs(normalised))
  want = (imagenet_utils.preprocess_input(pixels.copy(), mode=mode) if mode
          else pixels if inputs == 'raw' else pixels / 255.0)
  np.testing.assert_allclose(got, np.asarray(want), atol=1e-3 if inputs in ('raw', 'caffe')
                             else 1e-5)
  if mode in ('caffe', 'torch'):
    with pytest.raises(ConfigError, match=f'{inputs} .*takes RGB images'):
      teachers.keras_teacher(_keras_cnn((8, 8, 1)), inputs=inputs).build(_Info((8, 8, 1)))


def test_a_flax_teacher_in_training_mode_or_with_bare_params_is_told_the_real_cause():
  """Flax modules as users write them: dropout and BatchNorm switched by a module field (not
  a __call__ keyword) fail in training mode, and params saved without their 'params'
  wrapper fail to fit; each message names that cause and its fix, not the image shape."""
  import flax.linen as nn

  class DropField(nn.Module):
    deterministic: bool = False

    @nn.compact
    def __call__(self, x):
      return nn.Dropout(0.5, deterministic=self.deterministic)(
          nn.Dense(10)(x.reshape(x.shape[0], -1)))

  class BNField(nn.Module):
    train: bool = True

    @nn.compact
    def __call__(self, x):
      return nn.Dense(10)(nn.BatchNorm(use_running_average=not self.train)(
          x.reshape(x.shape[0], -1)))
  x = np.zeros((1, 8, 8, 1), np.float32)
  info = _Info((8, 8, 1))
  drop = DropField(deterministic=True).init(jax.random.key(0), x)
  with pytest.raises(CheckpointError, match=r'asked for a random key.*ran in training mode.*'
                     r'give teacher.module as a function returning the module in inference'):
    teachers.flax_teacher(DropField(), drop).build(info)
  bn = BNField(train=False).init(jax.random.key(0), x)
  with pytest.raises(CheckpointError, match=r'tried to update its variables.*training mode'):
    teachers.flax_teacher(BNField(), bn).build(info)
  with pytest.raises(CheckpointError, match=r"do not fit the module.*They hold \['BatchNorm_0', "
                     r"'Dense_0'\].*not the params alone"):
    teachers.flax_teacher(BNField(train=False), dict(bn['params'])).build(info)
  assert teachers.flax_teacher(BNField(train=False), bn).build(info).num_classes == 10


# Models as users build them ----------------------------------------------------------------
@pytest.mark.slow
def test_keras_sequential_nested_and_subclassed_models_give_block_features(
    loaded, twin, native, tmp_path):
  """Feature layers by path in a Sequential around the twin (nested: 'keras_resnet8/block1'),
  in a subclassed model, and a listing of the layers that fit when they are wrong."""
  import keras
  seq = keras.Sequential([keras.Input((28, 28, 1)), twin], name='seq')
  path = keras_file(seq, tmp_path / 'seq.keras')
  blocks = tuple(f'{twin.name}/block{k}' for k in (1, 2, 3))
  t = loaded('fitnets', source='keras', checkpoints=(path,), feature_layers=blocks)
  assert t.model.block_strides == (1, 2, 4) and t.model.block_channels == (16, 32, 64)
  assert t.test_accuracy == pytest.approx(native[1], abs=1e-6)

  class Sub(keras.Model):
    def __init__(self, net, **kw):
      super().__init__(**kw)
      self.net = net

    def call(self, x, training=False):
      return self.net(x, training=training)
  sub = Sub(twin, name='sub')
  with pytest.raises(CheckpointError, match='is not built'):
    teachers.keras_teacher(sub, blocks)
  sub(np.zeros((1, 28, 28, 1), np.float32))  # as training it would.
  given = teachers.keras_teacher(sub, blocks)
  t = loaded('fitnets', given=given)
  assert t.model.block_strides == (1, 2, 4)
  x = np.random.RandomState(0).randn(2, 28, 28, 1).astype(np.float32)
  _, feats = jax.jit(t.model.apply)(given.variables[0], x)
  _, ref = models.create_model('resnet8', 10).apply(native[0], x, train=False)
  np.testing.assert_allclose(feats[2], ref[2], atol=1e-4)
  with pytest.raises(ConfigError, match='downsampled by') as e:
    loaded('fitnets', source='keras', checkpoints=(path,), feature_layers=blocks[:2])
  assert f"teacher.feature_layers=('{twin.name}/block1'" in str(e.value) or (
      "teacher.feature_layers=(" in str(e.value))
  with pytest.raises(CheckpointError, match='name no layer'):
    loaded('fitnets', source='keras', checkpoints=(path,), feature_layers=('nope',))


@pytest.mark.slow
def test_a_keras_model_with_two_outputs_takes_teacher_output(loaded, twin, native, tmp_path):
  import keras
  x = inputs = keras.Input((28, 28, 1))
  aux = keras.layers.Dense(10, name='aux')(keras.layers.Flatten()(x))
  main_out = keras.layers.Identity(name='main')(twin(x))
  path = keras_file(keras.Model(inputs, [aux, main_out], name='two'), tmp_path / 'two.keras')
  with pytest.raises(CheckpointError, match=r"2 outputs \(0: 'aux' \(1, 10\), 1: 'main'"):
    loaded(source='keras', checkpoints=(path,))
  for pick in ('main', '1', '-1'):
    t = loaded(source='keras', checkpoints=(path,), output=pick)
    assert t.test_accuracy == pytest.approx(native[1], abs=1e-6)
  with pytest.raises(ConfigError, match='teacher.output'):
    loaded(source='keras', checkpoints=(path,), output='logitz')


def _saved(tmp_path, name, fn, dtype='float32'):
  import tensorflow as tf
  module = tf.Module()
  module.f = tf.function(fn, input_signature=[tf.TensorSpec([None, 28, 28, 1], dtype)],
                         autograph=False)
  path = tmp_path / name
  tf.saved_model.save(module, str(path), signatures=module.f)
  return str(path)


@pytest.mark.slow
def test_saved_model_signatures_with_several_outputs(loaded, native, tmp_path):
  import tensorflow as tf
  from jax.experimental import jax2tf
  model = models.create_model('resnet8', 10)
  logits_of = jax2tf.convert(lambda x: model.apply(native[0], x, train=False)[0],
                             polymorphic_shapes=['(b, 28, 28, 1)'])
  two = _saved(tmp_path, 'two', lambda x: {'output_0': tf.nn.softmax(logits_of(x)),
                                           'output_1': logits_of(x)})
  with pytest.raises(CheckpointError, match=r"2 outputs \(0: 'output_0'.*1: 'output_1'"):
    loaded(source='saved_model', checkpoints=(two,))
  t = loaded(source='saved_model', checkpoints=(two,), output='output_1')
  assert t.test_accuracy == pytest.approx(native[1], abs=1e-6)
  with pytest.raises(CheckpointError, match='look like probabilities'):
    loaded(source='saved_model', checkpoints=(two,), output='output_0')
  estimator = _saved(tmp_path, 'estimator', lambda x: {
      'all_class_ids': tf.tile(tf.range(10)[None], [tf.shape(x)[0], 1]),
      'class_ids': tf.argmax(logits_of(x), -1), 'logits': logits_of(x),
      'probabilities': tf.nn.softmax(logits_of(x))})
  t = loaded(source='saved_model', checkpoints=(estimator,))  # the one named logits.
  assert t.test_accuracy == pytest.approx(native[1], abs=1e-6)
  with pytest.raises(CheckpointError, match='int32, not class scores'):
    loaded(source='saved_model', checkpoints=(estimator,), output='all_class_ids')


@pytest.mark.slow
def test_keras_export_and_a_uint8_signature_teach_through_main(
    tfds_data_dir, twin, native, tmp_path, capsys):
  """Keras 3's own `model.export()` (its function reads variables: call_tf cannot lower it
  under jit, so it runs on the host) and the library's own export format (uint8 images in,
  {'logits', 'probabilities'} out) each teach kd through `main` at the native accuracy."""
  from msmgan_jax.serving import export
  exported = tmp_path / 'exported'
  twin.export(str(exported), format='tf_saved_model', verbose=False)
  ours = tmp_path / 'ours'
  model = models.create_model('resnet8', 10)
  export.save_model(str(ours), export.serving_fn(model, ((FMNIST_MEAN,), (FMNIST_STD,))),
                    native[0], (28, 28, 1))
  config = teacher_config_file(tmp_path, tfds_data_dir)
  for path, words in ((exported, 'runs on the host'), (ours, 'takes uint8 images')):
    wd = tmp_path / f'run_{path.name}'
    code = main.run(['main', '--config', f'{config}:saved_model,{path}', '--workdir', str(wd)])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert words in out.out
    summary = json.loads((wd / 'summary.json').read_text())
    assert summary['teacher']['test_accuracy'] == pytest.approx(native[1], abs=3e-3)
    assert summary['student']['test_accuracy'] > 0.3
  wd = tmp_path / 'unit'
  assert main.run(['main', '--config', f'{config}:saved_model,{ours}', '--workdir', str(wd),
                   '--config.teacher.inputs=unit']) == 2
  assert 'takes uint8 images' in capsys.readouterr().err and not wd.exists()


SWITCHED = textwrap.dedent('''
    import flax.linen as nn
    from msmgan_jax.core import models


    class IsTrain(nn.Module):
      """A teacher whose inference switch is named is_train (found by name)."""
      @nn.compact
      def __call__(self, x, is_train: bool = True):
        return models.ResNet(10, depth=8, name='net')(x, is_train)[0]


    class Odd(nn.Module):
      """A switch no rule knows: only teacher.train_kwarg names it."""
      @nn.compact
      def __call__(self, x, bn_updates: bool = True):
        return models.ResNet(10, depth=8, name='net')(x, bn_updates)[0]
    ''')


@pytest.mark.slow
def test_a_flax_train_switch_under_any_name(loaded, native, tmp_path, monkeypatch):
  from flax import serialization
  (tmp_path / 'switched.py').write_text(SWITCHED)
  monkeypatch.syspath_prepend(str(tmp_path))
  v = native[0]
  ckpt = tmp_path / 'teacher.msgpack'
  ckpt.write_bytes(serialization.to_bytes(
      {'params': {'net': v['params']}, 'batch_stats': {'net': v['batch_stats']}}))
  t = loaded(source='flax', module='switched:IsTrain', checkpoints=(str(ckpt),))
  assert t.test_accuracy == pytest.approx(native[1], abs=1e-6)
  with pytest.raises(CheckpointError, match='ran in training mode.*teacher.train_kwarg'):
    loaded(source='flax', module='switched:Odd', checkpoints=(str(ckpt),))
  t = loaded(source='flax', module='switched:Odd', checkpoints=(str(ckpt),),
             train_kwarg='bn_updates')
  assert t.test_accuracy == pytest.approx(native[1], abs=1e-6)
  with pytest.raises(ConfigError, match="takes no 'is_training'"):
    loaded(source='flax', module='switched:Odd', checkpoints=(str(ckpt),),
           train_kwarg='is_training')


@pytest.mark.slow
def test_the_teachers_command_lists_layers_and_the_ones_that_fit(
    tfds_data_dir, twin, tmp_path, capsys):
  from msmgan_jax import teachers as command
  path = keras_file(twin, tmp_path / 'twin.keras')
  config = teacher_config_file(tmp_path, tfds_data_dir)
  assert command.main(['teachers', '--config', f'{config}:keras,{path}']) == 0
  out = capsys.readouterr().out
  assert 'block1  (1, 28, 28, 16)  /1' in out and 'block3  (1, 7, 7, 64)  /4' in out
  assert "teacher.feature_layers=('block1', 'block2', 'block3')" in out
  assert command.main(['teachers', '--config', f'{config}:keras,{tmp_path / "none.keras"}']) == 2


# Field cases that passed before and must keep passing ------------------------------------
def test_a_mixed_precision_keras_teacher_with_batchnorm_and_dropout_gives_its_inference_logits():
  """float16 compute, BatchNorm and Dropout: the logits are `model(x, training=False)`'s
  exactly (no dropout, running statistics), as float32."""
  import keras
  x = inputs = keras.Input((28, 28, 1))
  x = keras.layers.Conv2D(8, 3, padding='same', dtype='mixed_float16', name='conv')(x)
  x = keras.layers.BatchNormalization(dtype='mixed_float16')(x)
  x = keras.layers.Dropout(0.5)(keras.layers.ReLU(dtype='mixed_float16')(x))
  x = keras.layers.GlobalAveragePooling2D(dtype='mixed_float16')(x)
  net = keras.Model(inputs, keras.layers.Dense(10, dtype='float32')(x))
  net.layers[2].moving_mean.assign(np.full(8, 0.3, np.float32))  # not the initial statistics.
  given = teachers.keras_teacher(net, ('conv',))
  info = data.DatasetInfo('x', 10, (28, 28, 1), 1, 1, mean=(0.0,), std=(1.0,))
  ext = given.build(info)
  images = np.random.RandomState(0).randn(4, 28, 28, 1).astype(np.float32)
  logits, feats = jax.jit(ext.apply)(given.variables[0], images)
  assert logits.dtype == np.float32 and feats[0].shape == (4, 28, 28, 8)
  np.testing.assert_array_equal(logits, np.asarray(net(images, training=False), np.float32))


@pytest.mark.slow
def test_a_grayscale_teacher_on_rgb_data_exits_2_naming_the_shape(twin):
  info = data.DatasetInfo('rgb', 10, (28, 28, 3), 1, 1, mean=(0.5,) * 3, std=(0.25,) * 3)
  with pytest.raises(CheckpointError, match=r"declares images of shape \(28, 28, 1\).*this "
                     r"data's are \(28, 28, 3\).*Give a teacher for 3-channel images"):
    teachers.keras_teacher(twin).build(info)
