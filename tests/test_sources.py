"""Data sources and teacher sources behind registries; example indices in training batches.

- the data-source registry: which source claims which `dataset.name`, what the error lists,
  a registered source asked first and checked by `config.validate`;
- the teacher-source registry: a source registered from outside the package;
- `load(..., with_index=True)` on both pipelines: `index` picks out exactly the examples of
  the batch, covers every example once per epoch, and is the same after a resume;
- docs/extending.md's examples (and README.md's under "## Extending it") run as written.
"""
import contextlib
import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from support import REPO_ROOT, dataset_cfg, make_unsplit, own_cfg
from msmgan_jax import config
from msmgan_jax.core import sharding
from msmgan_jax.core import teachers
from msmgan_jax.data import arrays
from msmgan_jax.data import datasets as data
from msmgan_jax.data import sources
from msmgan_jax.errors import ConfigError, DataError


@pytest.fixture
def registries(monkeypatch):
  """The data and teacher registries as they are, restored after the test."""
  monkeypatch.setattr(sources, 'SOURCES', dict(sources.SOURCES))
  monkeypatch.setattr(teachers, 'LOADERS', dict(teachers.LOADERS))
  monkeypatch.setattr(teachers, 'CHECKS', dict(teachers.CHECKS))
  monkeypatch.setattr(teachers, 'SOURCES', teachers.SOURCES)

# ------------------------------------------------------------------------- data registry


def test_each_kind_of_name_is_claimed_by_its_source(tmp_path):
  npz = tmp_path / 'a.npz'
  npz.write_bytes(b'')
  prepared = tmp_path / 'prepared'
  prepared.mkdir()
  (prepared / 'dataset_info.json').write_text('{}')
  folder = make_unsplit(tmp_path / 'images', per_class=2)
  found = {name: sources.find(name).name for name in (
      str(npz), str(prepared), str(folder), 'mnist', 'Fashion_MNIST')}
  assert found == {str(npz): 'arrays_file', str(prepared): 'tfds_dir',
                   str(folder): 'image_folder', 'mnist': 'tfds',
                   'Fashion_MNIST': 'fashion_mnist_local'}
  assert [s.name for s in sources.claiming('fashion_mnist')] == ['fashion_mnist_local', 'tfds']
  assert sources.find(str(tmp_path / 'missing')) is None and sources.find(3) is None


def test_the_list_of_what_a_name_may_be_is_the_sources_in_order():
  assert data.OWN_DATA == (
      'give a registered TFDS name, a prepared TFDS dataset directory (holding '
      'dataset_info.json), an image folder holding train/ and test/, each with one '
      'sub-folder of images per class (or only the class sub-folders: then it is split), '
      'or an .npz file written by python -m msmgan_jax.arrays')
  assert data.check_name('mnsit') == (
      "'mnsit' is not one of the registered TFDS datasets nor an existing folder (did you "
      f"mean 'mnist'?); {data.OWN_DATA}")


def _marker_source(read, **fields):
  """A source claiming folders holding a file `MARKER`, read by `read`."""
  claims = lambda name: os.path.isfile(os.path.join(name, 'MARKER'))
  return sources.DataSource('marked', claims, says='a folder holding MARKER', **fields,
                            arrays=read)


def test_a_registered_source_is_asked_first_listed_first_and_checked(registries, tmp_path):
  folder = make_unsplit(tmp_path / 'images', per_class=2)
  (folder / 'MARKER').write_text('')
  assert sources.find(str(folder)).name == 'image_folder'

  def check(dataset):
    sources.require(dataset.shuffle_buffer < 100, 'dataset.shuffle_buffer', 'below 100, please')
  source = sources.register(_marker_source(lambda cfg: {}, check=check))
  assert sources.find(str(folder)) is source  # ahead of image_folder, which takes any folder.
  assert data.OWN_DATA.startswith('give a folder holding MARKER, a registered TFDS name, ')
  cfg = config.defaults()
  cfg.dataset.name = str(folder)
  with pytest.raises(ConfigError, match=r'^config field dataset\.shuffle_buffer: below 100'):
    config.validate(cfg)
  cfg.dataset.shuffle_buffer = 10
  config.validate(cfg)
  again = sources.register(_marker_source(lambda cfg: {'again': True}))  # replaces it.
  assert list(sources.SOURCES).count('marked') == 1 and sources.find(str(folder)) is again
  with pytest.raises(TypeError):
    sources.register('marked')
  with pytest.raises(ValueError, match='exactly one of build'):
    sources.DataSource('neither', lambda name: False)


def test_an_arrays_source_has_no_builder_and_no_tfdata(registries, tmp_path):
  (tmp_path / 'MARKER').write_text('')
  sources.register(_marker_source(lambda cfg: {}, noun='a marked folder'))
  cfg = dataset_cfg(name=str(tmp_path), pipeline='tfdata')
  with pytest.raises(DataError, match='is a marked folder, read only by the device pipeline'):
    data.load(cfg, batch_size=8, eval_batch_size=8)
  with pytest.raises(DataError, match='is a marked folder, read without TensorFlow'):
    data.builder_for(cfg)

# ---------------------------------------------------------------------- teacher registry


def test_a_teacher_source_registered_from_outside_is_checked_and_loaded(registries):
  def check(t):
    if t.output:
      raise ConfigError('config field teacher.output: mine has one output')
  loaded = ('model', ['variables'], 'mine')
  teachers.register('mine', lambda t, info: loaded, check)
  assert teachers.SOURCES[-1] == 'mine' and teachers.LOADERS['mine'](None, None) == loaded
  cfg = config.defaults()
  cfg.method, cfg.anchors.num = 'kd', 1
  cfg.teacher.source, cfg.teacher.checkpoints = 'mine', ('a.pkl',)
  config.validate(cfg)
  cfg.teacher.output = 'probs'
  with pytest.raises(ConfigError, match='teacher.output: mine has one output'):
    config.validate(cfg)
  with pytest.raises(ValueError, match='other than msmgan_jax'):
    teachers.register('msmgan_jax', lambda t, info: loaded)


@pytest.mark.parametrize('source,field,message', [
    ('flax', 'module', "teacher.module: teacher.source flax needs the module"),
    ('keras', 'train_kwarg', "teacher.train_kwarg: 'x': only a flax teacher takes it"),
    ('saved_model', 'feature_layers', 'teacher.feature_layers: a SavedModel teacher gives'),
])
def test_built_in_teacher_sources_keep_their_checks(source, field, message):
  cfg = config.defaults()
  cfg.method, cfg.anchors.num = 'kd', 1
  cfg.teacher.source, cfg.teacher.checkpoints, cfg.teacher.module = source, ('t',), 'a:B'
  cfg.teacher[field] = {'module': '', 'train_kwarg': 'x', 'feature_layers': ('f',)}[field]
  with pytest.raises(ConfigError, match=f'^config field {re.escape(message)}'):
    config.validate(cfg)

# ------------------------------------------------------------ indices: the device pipeline


def _toy_arrays(n_train=100, n_test=10, seed=0):
  rng = np.random.default_rng(seed)
  return {'train_images': rng.integers(0, 256, (n_train, 6, 6, 1), dtype=np.uint8),
          'train_labels': rng.integers(0, 3, n_train).astype(np.int32),
          'test_images': rng.integers(0, 256, (n_test, 6, 6, 1), dtype=np.uint8),
          'test_labels': rng.integers(0, 3, n_test).astype(np.int32),
          'mean': np.float32([0.5]), 'std': np.float32([0.25]), 'num_classes': 3,
          'name': 'toy'}


def _plain(batch):
  """A batch as NumPy arrays."""
  return {k: np.asarray(v) for k, v in batch.items()}


def _expected_images(images, index, mean, std):
  return (images[index] / 255.0 - np.asarray(mean)) / np.asarray(std)


@pytest.mark.parametrize('split,batch_size', [('train', 20), ('train[10:90]', 16),
                                              ('train[:70]', 32)])
def test_device_index_picks_the_examples_covers_each_epoch_and_resumes(split, batch_size):
  toy = _toy_arrays()
  cfg = dataset_cfg(crop_padding=0, flip=False)
  make = lambda with_index: arrays.DevicePipeline(
      toy, cfg, batch_size=batch_size, eval_batch_size=10, mesh=sharding.mesh(),
      train_split=split, with_index=with_index)
  pipe, plain = make(True), make(False)
  part = arrays.slice_split(100, split)
  images, labels = toy['train_images'][part], toy['train_labels'][part]
  n = len(labels)
  got = [_plain(b) for b, _ in zip(pipe.train_batches(7), range(3 * n // batch_size + 1))]
  without = [_plain(b) for b, _ in zip(plain.train_batches(7), range(len(got)))]
  for b, b0 in zip(got, without):
    assert b['index'].dtype == np.int32 and b['index'].shape == (batch_size,)
    assert set(b0) == {'image', 'label'}  # without it: the batches of before.
    np.testing.assert_array_equal(b['image'], b0['image'])
    np.testing.assert_array_equal(b['label'], labels[b['index']])
    np.testing.assert_allclose(b['image'], _expected_images(images, b['index'], 0.5, 0.25),
                               atol=1e-5)
  stream = np.concatenate([b['index'] for b in got])
  for epoch in range(3):  # the epoch-exact stream: each epoch a permutation of the split.
    assert sorted(stream[epoch * n:(epoch + 1) * n]) == list(range(n))
  resumed = pipe.train_batches(7, skip=4)
  for b in got[4:7]:
    np.testing.assert_array_equal(_plain(next(resumed))['index'], b['index'])

# -------------------------------------------------------- indices: the tf.data pipeline


class Tiny(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """100 random 8x8 grey images of 4 classes: 80 train, 20 test."""
  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        'image': tfds.features.Image(shape=(8, 8, 1)),
        'label': tfds.features.ClassLabel(num_classes=4)}))

  def _split_generators(self, dl_manager):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (100, 8, 8, 1), dtype=np.uint8)
    return {'train': self._generate_examples(images[:80]),
            'test': self._generate_examples(images[80:])}

  def _generate_examples(self, images):
    for i, image in enumerate(images):
      yield i, {'image': image, 'label': i % 4}


@pytest.fixture(scope='module')
def tiny_dir(tmp_path_factory):
  """A prepared TFDS dataset directory whose splits are 4 files each (a `tfds_dir`)."""
  root = tmp_path_factory.mktemp('tiny')
  builder = Tiny(data_dir=str(root))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(num_shards=4))
  assert builder.info.splits['train'].num_shards == 4
  return builder.data_dir, str(root)


def _tfdata_check(cfg, batch_size, epochs=2):
  """Runs the tf.data pipeline of `cfg` with and without indices; returns the indices."""
  want = data.to_arrays(cfg)  # the split in the order positions count.
  n = len(want['train_labels'])
  info, batches, _ = data.load(cfg, batch_size=batch_size, eval_batch_size=8, with_index=True)
  _, plain, _ = data.load(cfg, batch_size=batch_size, eval_batch_size=8)
  assert info.num_train == n
  count = epochs * n // batch_size
  got = [b for b, _ in zip(batches(3), range(count))]
  for b, b0 in zip(got, plain(3)):
    assert set(b0) == {'image', 'label'} and b['index'].dtype == np.int32
    np.testing.assert_array_equal(b['image'], b0['image'])
    np.testing.assert_array_equal(b['label'], want['train_labels'][b['index']])
    np.testing.assert_allclose(
        b['image'], _expected_images(want['train_images'], b['index'], want['mean'],
                                     want['std']), atol=1e-5)
  resumed = batches(3, skip=2)
  for b in got[2:4]:
    np.testing.assert_array_equal(next(resumed)['index'], b['index'])
  return n, np.concatenate([b['index'] for b in got])


@pytest.mark.slow  # seconds: two tf.data pipelines per case, or a model built.
@pytest.mark.parametrize('split', ['train', 'train[8:72]'])
def test_tfdata_index_over_files_picks_the_examples_and_resumes(tiny_dir, split):
  folder, data_dir = tiny_dir
  cfg = dataset_cfg(name=folder, data_dir=data_dir, train_split=split, pipeline='tfdata',
                    crop_padding=0, flip=False, shuffle_buffer=1)
  n, stream = _tfdata_check(cfg, batch_size=16)
  for epoch in range(2):  # no shuffle buffer: each epoch the files' order, every example once.
    assert sorted(stream[epoch * n:(epoch + 1) * n]) == list(range(n))
  cfg.shuffle_buffer = 64
  _, shuffled = _tfdata_check(cfg, batch_size=16)
  assert not np.array_equal(shuffled, stream) and set(shuffled) <= set(range(n))


def test_tfdata_index_of_host_parts(tiny_dir):
  """Each host's part of a split over 4 files: the positions of its examples in the split
  as one host reads it; the parts together hold every position once."""
  folder, data_dir = tiny_dir
  cfg = dataset_cfg(name=folder, data_dir=data_dir, train_split='train[8:72]')
  want = data.to_arrays(cfg)
  builder = data.builder_for(cfg)
  seen = []
  for shard in ((0, 2), (1, 2)):
    read = data._read(  # pylint: disable=protected-access
        builder, cfg.train_split, shard, positions=True)
    part = list(tfds.as_numpy(read))
    positions = [int(ex['position']) for ex in part]
    np.testing.assert_array_equal(np.stack([ex['image'] for ex in part]),
                                  want['train_images'][positions])
    seen += positions
  assert sorted(seen) == list(range(64))


def test_tfdata_index_of_an_image_folder(tmp_path):
  folder = make_unsplit(tmp_path / 'images', per_class=8)
  cfg = own_cfg(folder, tmp_path / 'tfds', pipeline='tfdata', crop_padding=0, flip=False,
                split_fractions=(0.75, 0.0, 0.25))
  n, stream = _tfdata_check(cfg, batch_size=6, epochs=3)
  assert n == 18 and set(stream) == set(range(n))
  builder = data.builder_for(cfg)
  read = data._read(builder, 'train', (1, 2), positions=True)  # pylint: disable=protected-access
  part = list(tfds.as_numpy(read))
  assert [int(ex['position']) for ex in part] == list(range(9, 18))

# ------------------------------------------------------------------------ the examples


def _python_blocks(text: str) -> list:
  return re.findall(r'^```python\n(.*?)^```', text, re.M | re.S)


def _section(text: str, heading: str) -> str:
  """The part of Markdown `text` under `heading` up to the next heading of its level."""
  level = heading.split(' ')[0]
  start = text.index(heading + '\n')
  end = re.search(rf'^{level} ', text[start + len(heading):], re.M)
  return text[start:start + len(heading) + end.start()] if end else text[start:]


@contextlib.contextmanager
def _in_folder(folder: pathlib.Path):
  """Runs in `folder`, importable; the modules written there are forgotten after."""
  before, cwd = set(sys.modules), os.getcwd()
  os.chdir(folder)
  sys.path.insert(0, str(folder))
  try:
    yield
  finally:
    os.chdir(cwd)
    sys.path.remove(str(folder))
    for name in set(sys.modules) - before:
      if getattr(sys.modules[name], '__file__', '') and str(folder) in sys.modules[name].__file__:
        del sys.modules[name]


def _run_blocks(blocks: list, folder: pathlib.Path) -> dict:
  """Runs Markdown code blocks in `folder`: a block opening with `# NAME.py` is written to
  that file (a module the next blocks import), the others run in one namespace."""
  namespace = {'__name__': '__example__'}
  with _in_folder(folder):
    for block in blocks:
      first = block.split('\n', 1)[0]
      if re.fullmatch(r'# \w+\.py', first):
        (folder / first[2:]).write_text(block)
      else:
        code = compile(block, f'<example in {folder}>', 'exec')
        exec(code, namespace)  # pylint: disable=exec-used
  return namespace


@pytest.mark.slow  # seconds: the examples build a model and its teacher.
def test_the_extending_page_examples_run(registries, tmp_path):
  text = (REPO_ROOT / 'docs' / 'extending.md').read_text()
  data_blocks = _python_blocks(_section(text, '## A data source'))
  teacher_blocks = _python_blocks(_section(text, '## A teacher source'))
  assert len(data_blocks) == 2 and len(teacher_blocks) == 2
  (tmp_path / 'data').mkdir()
  ran = _run_blocks(data_blocks, tmp_path / 'data')
  assert sorted(ran['seen']) == list(range(96))  # the example's epoch, as it says.
  assert 'npy_folder' in sources.SOURCES
  (tmp_path / 'teacher').mkdir()
  ran = _run_blocks(teacher_blocks, tmp_path / 'teacher')
  assert ran['logits'].shape == (5, 4) and 'pickle' in teachers.SOURCES


@pytest.mark.slow  # seconds: the examples build a model and its teacher.
def test_the_readme_extending_examples_run(registries, tmp_path):
  text = (REPO_ROOT / 'README.md').read_text()
  if '\n## Extending it\n' not in text:
    pytest.skip('README.md has no "## Extending it" section')
  blocks = _python_blocks(_section(text, '## Extending it'))
  if not blocks:
    pytest.skip('README.md\'s "## Extending it" holds no Python example yet')
  for i, block in enumerate(blocks):
    (tmp_path / str(i)).mkdir()
    _run_blocks([block], tmp_path / str(i))


# --------------------------------------------------------------- the config field imports


_NPY_SOURCE = '''
import os
import numpy as np
from msmgan_jax.data import sources

def read(cfg):
  x, y = np.load(os.path.join(cfg.name, 'x.npy')), np.load(os.path.join(cfg.name, 'y.npy'))
  return dict(name='npy', num_classes=4, train_images=x, train_labels=y, test_images=x,
              test_labels=y, mean=(0.5,), std=(0.25,))

sources.register(sources.DataSource(
    'imported_npy', lambda name: os.path.isfile(os.path.join(str(name), 'x.npy')), arrays=read))
'''


@pytest.mark.parametrize('how', ['module', 'file'])
def test_imports_registers_a_source_before_the_config_is_checked(registries, tmp_path,
                                                                 monkeypatch, how):
  (tmp_path / 'imported_npy_source.py').write_text(_NPY_SOURCE)
  (tmp_path / 'mine').mkdir()
  np.save(tmp_path / 'mine' / 'x.npy', np.zeros((8, 4, 4, 1), np.uint8))
  np.save(tmp_path / 'mine' / 'y.npy', np.arange(8, dtype=np.int32) % 4)
  monkeypatch.chdir(tmp_path)
  monkeypatch.delitem(sys.modules, 'imported_npy_source', raising=False)
  cfg = config.defaults()
  cfg.dataset.name = 'mine'
  assert sources.find('mine').name == 'image_folder'  # which would refuse it when it reads.
  cfg.imports = ('imported_npy_source',) if how == 'module' else ('./imported_npy_source.py',)
  config.validate(cfg)
  assert sources.find('mine').name == 'imported_npy'
  sys.modules.pop('imported_npy_source', None)


@pytest.mark.parametrize('imports, message', [
    (('no_such_module_here',), "cannot import 'no_such_module_here'"),
    (('missing_file.py',), "'missing_file.py': no such file"),
    (('raises.py',), "importing 'raises.py' raised ZeroDivisionError"),
    (('',), 'must be a tuple of module names'),
])
def test_imports_that_fail_name_the_module(tmp_path, monkeypatch, imports, message):
  (tmp_path / 'raises.py').write_text('1 / 0\n')
  monkeypatch.chdir(tmp_path)
  cfg = config.defaults()
  cfg.imports = imports
  with pytest.raises(ConfigError, match=re.escape(message)):
    config.validate(cfg)
  assert not any(k.endswith('.raises') for k in sys.modules if k.startswith('msmgan_jax_imports'))


@pytest.mark.slow  # about a minute: two command-line runs (TensorFlow and JAX start-up).
def test_the_command_line_example_trains_with_an_imported_source(registries, tmp_path):
  text = (REPO_ROOT / 'docs' / 'extending.md').read_text()
  _run_blocks(_python_blocks(_section(text, '## A data source')), tmp_path)  # npy_source.py, mine/
  command = re.findall(r'^```bash\n(.*?)^```', _section(text, '## From the command line'),
                       re.M | re.S)
  assert len(command) == 1 and '--config.imports=' in command[0]
  env = dict(os.environ, REPO=str(REPO_ROOT), JAX_PLATFORMS='cpu')
  run = lambda: subprocess.run(['bash', '-c', command[0]], cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=600)
  first = run()
  assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
  recorded = json.loads((tmp_path / 'runs' / 'mine' / 'config.json').read_text())
  assert recorded['imports'] == ['npy_source'] and recorded['dataset']['name'] == 'mine'
  assert json.loads((tmp_path / 'runs' / 'mine' / 'summary.json').read_text())
  again = run()  # the rerun imports the module again and finds the run finished.
  assert again.returncode == 0 and 'already holds this finished run' in again.stdout + again.stderr
  without = subprocess.run(['bash', '-c', command[0].replace(
      '--config.imports="(\'npy_source\',)"', '').replace('runs/mine', 'runs/other')],
      cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
  assert without.returncode == 2 and 'mine' in without.stderr
  assert not (tmp_path / 'runs' / 'other' / 'config.json').exists()
