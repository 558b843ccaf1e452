"""Your own data: image folders, prepared TFDS directories, computed and cached stats, bad input."""
import json
import os
import re
import shutil
import unicodedata

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from msmgan_jax import config
from msmgan_jax.data import datasets as data
from msmgan_jax.data.sources import image_folder
from msmgan_jax import main
from msmgan_jax.training import train
from support import CLASSES, dataset_cfg, make_unsplit, own_cfg, snapshot, write_idx

PER_CLASS = {'train': 8, 'test': 3}


def make_folder(root, size=(20, 20), mode='RGB', classes=CLASSES, splits=('train', 'test')):
  """root/<split>/<class>/<i>.png, random images whose brightness depends on the class."""
  rng = np.random.default_rng(0)
  for split in splits:
    for label, name in enumerate(classes):
      (root / split / name).mkdir(parents=True)
      for i in range(PER_CLASS[split]):
        shape = size + ((3,) if mode == 'RGB' else ())
        pixels = rng.integers(0, 128, shape) + 60 * label
        Image.fromarray(pixels.astype(np.uint8), mode).save(root / split / name / f'{i}.png')
  return root


def pixels_of(root, split):
  """Every image of `split` as float64 on [0, 1], HxWxC."""
  out = []
  for path in sorted((root / split).glob('*/*.png')):
    image = np.asarray(Image.open(path), np.float64) / 255
    out.append(image if image.ndim == 3 else image[..., None])
  return np.stack(out)


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  return make_folder(tmp_path_factory.mktemp('own') / 'images')


# --------------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_image_folder_trains_end_to_end(folder, tmp_path):
  cfg = config.finalize(config.defaults(), 'smoke')
  cfg.teacher.model, cfg.student.model = 'resnet8', 'cnn'
  cfg.batch_size, cfg.eval_batch_size = 8, 8
  cfg.dataset = own_cfg(folder, tmp_path / 'tfds', train_split='train')
  before = snapshot(folder)
  summary = train.train_and_evaluate(cfg, str(tmp_path / 'run'))
  assert snapshot(folder) == before  # the user's folder is only read.
  assert summary['method'] == 'msmgan' and summary['dataset'] == str(folder)
  assert 'split' not in summary['data']  # a folder with train/ and test/ is not split.
  assert 0 <= summary['teacher']['test_accuracy'] <= 1
  student = summary['student']
  assert student['model'] == 'cnn' and 0 <= student['test_accuracy'] <= 1
  assert student['compression'] == pytest.approx(summary['teacher']['params'] / student['params'],
                                                abs=1e-3)
  assert len(student['stages']) == cfg.anchors.num == 2
  assert [len(s['phases']) for s in student['stages']] == [4, 1]  # block phases in stage 1.
  with open(tmp_path / 'run' / 'metrics.jsonl') as f:
    tests = [e for e in map(json.loads, f) if e['split'] == 'test']
  assert tests and all(0 <= e['accuracy'] <= 1 and np.isfinite(e['loss']) for e in tests)


# ---------------------------------------------------------------------------------- pipelines


@pytest.mark.parametrize('mode, image_size, shape', [
    ('RGB', 0, (20, 20, 3)), ('RGB', 12, (12, 12, 3)), ('L', 0, (20, 20, 1)),
    ('L', 32, (32, 32, 1))])
def test_image_folder_shapes(mode, image_size, shape, tmp_path):
  root = make_folder(tmp_path / 'images', mode=mode)
  cfg = own_cfg(root, tmp_path / 'tfds', image_size=image_size)
  info, train_batches, eval_fn = data.load(cfg, batch_size=8, eval_batch_size=4)
  assert info == data.DatasetInfo(str(root), 3, shape, 24, 9)
  batch = next(train_batches(0))
  assert batch['image'].shape == (8,) + shape and np.isfinite(batch['image']).all()
  assert set(np.asarray(batch['label']).tolist()) <= {0, 1, 2}
  evals = list(eval_fn())
  assert all(b['image'].shape == (4,) + shape for b in evals)
  assert sum(b['mask'].sum() for b in evals) == 9


def test_image_folder_slices_and_host_shares(folder, tmp_path):
  builder = data.builder_for(own_cfg(folder, tmp_path))
  labels = lambda ds: [int(ex['label']) for ex in ds.as_numpy_iterator()]
  read = data._read  # pylint: disable=protected-access
  whole = labels(read(builder, 'train'))
  assert len(whole) == 24 and sorted(whole) == [0] * 8 + [1] * 8 + [2] * 8
  assert labels(read(builder, 'train[:25%]')) == whole[:6]
  shares = [labels(read(builder, 'train[4:]', (i, 3))) for i in range(3)]
  assert sum(shares, []) == whole[4:] and [len(s) for s in shares] == [6, 7, 7]


def test_stats_are_computed_once_cached_and_used_for_eval(tmp_path, monkeypatch):
  folder = make_folder(tmp_path / 'images')
  calls = []
  compute = data._compute_stats  # pylint: disable=protected-access
  monkeypatch.setattr(data, '_compute_stats', lambda *a: calls.append(1) or compute(*a))
  cfg = own_cfg(folder, tmp_path / 'tfds', crop_padding=0, flip=False)
  _, _, eval_fn = data.load(cfg, batch_size=8, eval_batch_size=4)
  raw = pixels_of(folder, 'train')
  mean, std = raw.mean((0, 1, 2)), raw.std((0, 1, 2))
  cached = [json.loads(p.read_text()) for p in (tmp_path / 'tfds' / data.CACHE_DIR).glob('stats-*')]
  assert len(calls) == 1 and len(cached) == 1
  np.testing.assert_allclose(cached[0]['value']['mean'], mean, rtol=1e-6)
  np.testing.assert_allclose(cached[0]['value']['std'], std, rtol=1e-6)
  # The eval pipeline normalises with the same numbers: undone, they give the test pixels.
  evals = [jax.device_get(b) for b in eval_fn()]  # device arrays on the device pipeline.
  images = np.concatenate([b['image'][b['mask'] > 0] for b in evals])
  got = np.sort((images * std + mean).reshape(9, -1).sum(1))
  np.testing.assert_allclose(got, np.sort(pixels_of(folder, 'test').reshape(9, -1).sum(1)),
                             rtol=1e-4)
  data.load(cfg, batch_size=8, eval_batch_size=4)  # a second run reads the cache.
  assert len(calls) == 1
  assert data.normalisation(cfg, data.builder_for(cfg)) == (tuple(cached[0]['value']['mean']),
                                                           tuple(cached[0]['value']['std']))
  (folder / 'train' / 'ant' / '0.png').touch()  # changed files: computed again.
  data.load(cfg, batch_size=8, eval_batch_size=4)
  assert len(calls) == 2


def test_prepared_tfds_directory_by_name(tmp_path):
  idx = tmp_path / 'idx'
  idx.mkdir()
  rng = np.random.default_rng(0)
  for split, (img, lab) in data.IDX_FILES.items():
    n = 12 if split == 'train' else 5
    write_idx(idx / img, rng.integers(0, 256, (n, 28, 28)))
    write_idx(idx / lab, np.arange(n) % 10)
  data.builder_for(dataset_cfg(data_dir=str(tmp_path / 'prepared'), manual_dir=str(idx),
                               source='local'))
  prepared = tmp_path / 'prepared' / 'fashion_mnist_local' / '3.0.1'
  before = snapshot(prepared)
  cfg = dataset_cfg(name=str(prepared), data_dir=str(tmp_path / 'tfds'), shuffle_buffer=64)
  config.validate(_full(cfg))
  info, train_batches, eval_fn = data.load(cfg, batch_size=4, eval_batch_size=4)
  assert info == data.DatasetInfo(str(prepared), 10, (28, 28, 1), 12, 5)
  assert next(train_batches(0))['image'].shape == (4, 28, 28, 1)
  assert sum(b['mask'].sum() for b in eval_fn()) == 5
  assert snapshot(prepared) == before  # stats are cached in the data dir, not here.
  assert len(list((tmp_path / 'tfds' / data.CACHE_DIR).glob('stats-*'))) == 1


def test_registered_tfds_name_without_known_stats(tmp_path):
  builder = tfds.builder('kmnist', data_dir=str(tmp_path))
  builder.info.set_splits(tfds.core.SplitDict([
      tfds.core.SplitInfo(name=s, shard_lengths=[n], num_bytes=0)
      for s, n in (('train', 20), ('test', 6))]))
  os.makedirs(builder.data_dir)
  builder.info.write_to_directory(builder.data_dir)
  cfg = dataset_cfg(name='kmnist', data_dir=str(tmp_path), shuffle_buffer=64, image_size=16,
                    pipeline='tfdata')  # the mock yields 6 examples where the metadata says 20.
  with tfds.testing.mock_data(num_examples=6, data_dir=str(tmp_path),
                              policy=tfds.testing.MockPolicy.USE_FILES):
    info, train_batches, _ = data.load(cfg, batch_size=4, eval_batch_size=4)
    batch = next(train_batches(0))
  assert info == data.DatasetInfo('kmnist', 10, (16, 16, 1), 20, 6)
  assert batch['image'].shape == (4, 16, 16, 1)
  stats = list((tmp_path / data.CACHE_DIR).glob('stats-*'))
  assert len(stats) == 1 and 'kmnist' in json.loads(stats[0].read_text())['key']['dataset']


# ---------------------------------------------------------------------------------- bad input


def _full(dataset):
  cfg = config.defaults()
  cfg.dataset = dataset
  return cfg


def test_validate_dataset_name_and_image_size(folder, tmp_path):
  config.validate(_full(dataset_cfg(name=str(folder))))
  config.validate(_full(dataset_cfg(name='svhn_cropped', image_size=32)))
  for name in ('svhn', str(tmp_path / 'nope')):
    with pytest.raises(config.ConfigError, match=rf"^config field dataset\.name: '{name}' is "
                       'not one of the registered TFDS datasets nor an existing folder'):
      config.validate(_full(dataset_cfg(name=name)))
  with pytest.raises(config.ConfigError, match="did you mean 'svhn_cropped'"):
    config.validate(_full(dataset_cfg(name='svhn')))
  with pytest.raises(config.ConfigError, match=r'^config field dataset\.image_size: must be an '
                     'integer >= 0'):
    config.validate(_full(dataset_cfg(image_size=-1)))


def _only_train(root):
  make_folder(root, splits=('train',))


def _one_class(root):
  make_folder(root, classes=('ant',))


def _corrupt(root):
  make_folder(root)
  (root / 'test' / 'bee' / '1.png').write_bytes(b'not a png')
  raw = (root / 'train' / 'cat' / '2.png').read_bytes()
  (root / 'train' / 'cat' / '2.png').write_bytes(raw[:len(raw) // 2])


def _unsplit_one_class(root):
  make_unsplit(root, classes=('ant',))


def _unsplit_too_few(root):
  make_unsplit(root, per_class=2)


def _mismatch(root):
  make_folder(root)
  (root / 'test' / 'cat').rename(root / 'test' / 'cow')


def _sizes(root):
  make_folder(root)
  Image.new('RGB', (24, 24)).save(root / 'test' / 'ant' / 'big.png')


def _versions(root):
  for version in ('1.0.0', '1.0.1'):
    (root / version).mkdir(parents=True)
    (root / version / 'dataset_info.json').write_text('{}')


def _damaged(root):
  root.mkdir()
  (root / 'dataset_info.json').write_text('{"name": "mine", "splits": [')


BAD = {
    'missing folder': (None, r"'{root}' is not one of the registered TFDS datasets nor an "
                             'existing folder; give a registered TFDS name'),
    'no test split': (_only_train, r'{root} is neither a prepared TFDS dataset directory \(it '
                                   r'holds no dataset_info.json\) nor an image folder \(it has '
                                   r'no test/ sub-folder\). An image folder holds train/ and '
                                   'test/, each with one sub-folder of images'),
    'dataset dir above the prepared one': (
        _versions, r'{root} is neither a prepared TFDS dataset directory \(it holds no '
                   r'dataset_info.json; did you mean {root}/1.0.1\?\) nor an image folder'),
    'damaged dataset_info.json': (_damaged, r'{root} holds a dataset_info.json that TFDS cannot '
                                            r'read \(.*\); prepare the dataset again'),
    'one class': (_one_class, r"{root}/train holds 1 class folder\(s\) \['ant'\]; a classifier "
                              'needs at least 2'),
    'corrupt images': (_corrupt, r'2 image file\(s\) cannot be decoded: {root}/train/cat/2.png, '
                                 '{root}/test/bee/1.png; replace or remove them'),
    'classes differ': (_mismatch, r"the class folders of train/ and test/ in {root} differ "
                                  r"\(only in train/: \['cat'\], only in test/: \['cow'\]\)"),
    'unsplit, one class': (_unsplit_one_class, r"{root} holds 1 class folder\(s\) \['ant'\]; a "
                                               'classifier needs at least 2'),
    'unsplit, too few images': (_unsplit_too_few, r"{root} has no train/ and test/ folders, so "
                                                  r"every class is split into .* needs at least 3 "
                                                  r"images in every class, but class 'ant' has 2, "
                                                  r"'bee' has 2, 'cat' has 2: add images to them"),
    'sizes differ': (_sizes, r'the images in {root} have different sizes \(20x20: .*, 24x24: '
                             r'{root}/test/ant/big.png\); set dataset.image_size'),
}


@pytest.mark.parametrize('case', sorted(BAD))
def test_bad_folder_exits_2_naming_the_fix_and_writes_nothing(case, tmp_path, capsys):
  make, message = BAD[case]
  root = tmp_path / 'images'
  if make:
    make(root)
  before = snapshot(tmp_path)
  capsys.readouterr()
  code = main.run(['msmgan_jax.main', '--config', 'configs/default.py:smoke',
                   f'--config.dataset.name={root}', f'--config.dataset.data_dir={tmp_path}/tfds',
                   '--workdir', str(tmp_path / 'run')])
  err = capsys.readouterr().err
  assert code == 2 and err.startswith('error: ') and 'Traceback' not in err, err
  assert len(err.strip().splitlines()) == 1, err
  assert re.search(message.format(root=root), err), err
  assert snapshot(tmp_path) == before  # no cache, no workdir, nothing in the folder.


def test_sizes_differ_is_fine_with_image_size(tmp_path):
  root = tmp_path / 'images'
  _sizes(root)
  info, _, eval_fn = data.load(own_cfg(root, tmp_path / 'tfds', image_size=16), batch_size=8,
                               eval_batch_size=5)
  assert info.image_shape == (16, 16, 3) and info.num_test == 10
  assert sum(b['mask'].sum() for b in eval_fn()) == 10


def test_hidden_and_system_entries_are_neither_classes_nor_images(tmp_path, capsys):
  """Jupyter's .ipynb_checkpoints, macOS's __MACOSX, .DS_Store and ._x.png files: skipped,
  and said so; the classes are the visible folders."""
  root = make_folder(tmp_path / 'images')
  for split in ('train', 'test'):
    (root / split / '.ipynb_checkpoints').mkdir()
    Image.new('RGB', (20, 20)).save(root / split / '.ipynb_checkpoints' / 'x.png')
    (root / split / '__MACOSX').mkdir()
    (root / split / 'ant' / '.DS_Store').write_bytes(b'\0\0')
    (root / split / 'ant' / '._0.png').write_bytes(b'AppleDouble, not a png')
  builder = data.builder_for(own_cfg(root, tmp_path / 'tfds'))
  assert builder.info.features['label'].names == list(CLASSES)
  assert builder.info.splits['train'].num_examples == 3 * PER_CLASS['train']
  err = capsys.readouterr().err
  assert "skipped the hidden or system folder(s) ['.ipynb_checkpoints', '__MACOSX']" in err
  assert 'train/ant/: skipped 2 hidden or system file(s)' in err


def test_what_is_not_read_and_test_images_that_are_training_images_are_said(tmp_path, capsys):
  """Where a user's own folder would give other numbers than the tools it came from, a note
  says so: images in a folder inside a class folder (torchvision's ImageFolder and Keras
  read them), files of other kinds, and test images byte-identical to training images
  (they inflate every test accuracy); a folder without any of them gets none of these."""
  root = make_folder(tmp_path / 'images')
  builder = data.builder_for(own_cfg(root, tmp_path / 'tfds'))
  assert 'note:' not in capsys.readouterr().err
  (root / 'train' / 'ant' / 'more').mkdir()
  Image.new('RGB', (20, 20)).save(root / 'train' / 'ant' / 'more' / 'x.png')
  (root / 'train' / 'bee' / 'b.webp').write_bytes(b'RIFF')
  (root / 'train' / 'bee' / 'notes.txt').write_text('labels')
  shutil.copyfile(root / 'train' / 'cat' / '1.png', root / 'test' / 'cat' / 'leak.png')
  builder = data.builder_for(own_cfg(root, tmp_path / 'tfds'))
  assert builder.info.splits['train'].num_examples == 3 * PER_CLASS['train']
  err = capsys.readouterr().err
  assert 'train/ant/: skipped 1 sub-folder(s) (more): images in folders inside a class ' \
         'folder are not read' in err, err
  assert "train/bee/: skipped 2 file(s) that are not .png, .jpg or .jpeg (b.webp, notes.txt)" \
      in err, err
  assert ('1 image(s) of test/ are byte-identical copies of images in train/ (e.g. '
          'test/cat/leak.png = train/cat/1.png): test scores pictures the students train on, '
          'so its accuracy is inflated') in err, err
  data.builder_for(own_cfg(root, tmp_path / 'tfds'))  # from the cache: said again.
  assert 'byte-identical copies of images in train/' in capsys.readouterr().err
  data.load(own_cfg(root, tmp_path / 'tfds'), batch_size=2, eval_batch_size=2)  # device pipeline.
  err = capsys.readouterr().err
  for note in ('byte-identical copies of images in train/', 'skipped 1 sub-folder(s)',
               'skipped 2 file(s) that are not'):
    assert err.count(note) == 1, err  # once per load, not once per read of the folder.


def test_class_names_in_nfd_that_sort_otherwise_say_the_order_used(tmp_path, capsys):
  """A folder copied from macOS (NFD names) whose classes sort otherwise as written: the
  classes are numbered by their NFC names, and a note gives both orders, since a teacher
  trained by a tool sorting the raw names has them in the other one."""
  classes = ('éa', 'f', 'g')
  root = make_folder(tmp_path / 'images',
                     classes=tuple(unicodedata.normalize('NFD', c) for c in classes))
  builder = data.builder_for(own_cfg(root, tmp_path / 'tfds'))
  assert builder.info.features['label'].names == ['f', 'g', 'éa']
  err = capsys.readouterr().err
  assert ('numbered in the order of their NFC names: 0 f, 1 g, 2 éa; a tool that sorts the '
          'names as written (Keras, torchvision) numbers them éa, f, g') in err, err
  assert err.count('numbered in the order of their NFC names') == 1, err  # once, not per split.


def test_any_file_name_the_os_accepts_is_read(tmp_path):
  """A Latin-1 byte in a name (not UTF-8): read like any other image, also by the loader."""
  root = make_folder(tmp_path / 'images')
  src = root / 'train' / 'bee' / '0.png'
  os.rename(bytes(src), bytes(src.parent) + b'/photo_caf\xe9.png')
  cfg = own_cfg(root, tmp_path / 'tfds')
  builder = data.builder_for(cfg)
  assert builder.info.splits['train'].num_examples == 3 * PER_CLASS['train']
  info, batches, _ = data.load(cfg, batch_size=4, eval_batch_size=4)
  assert info.num_train == 3 * PER_CLASS['train']
  assert next(batches(0, 0))['image'].shape == (4, 20, 20, 3)


def test_a_test_class_without_images_is_said_and_a_training_one_refused(tmp_path, capsys):
  root = make_folder(tmp_path / 'images')
  for p in (root / 'test' / 'cat').iterdir():
    p.unlink()
  builder = data.builder_for(own_cfg(root, tmp_path / 'tfds'))
  assert builder.info.features['label'].names == list(CLASSES)  # the label keeps its place.
  assert builder.info.splits['test'].num_examples == 2 * PER_CLASS['test']
  assert "test/: the class folder(s) ['cat'] hold no image" in capsys.readouterr().err
  for p in (root / 'train' / 'cat').iterdir():
    p.unlink()
  with pytest.raises(data.DataError, match=r"the class folder\(s\) \['cat'\] of .*train hold no "
                                           'image .*a class needs training images'):
    data.builder_for(own_cfg(root, tmp_path / 'tfds'))


# --------------------------------------------------------------------------- unsplit folders


def parts_of(cfg):
  """{part: sorted 'class/file' names} of the split `_split_folder` makes of cfg.name."""
  files, _ = image_folder._split_folder(cfg, cfg.name)  # pylint: disable=protected-access
  return {p: sorted(f'{c}/{os.path.basename(x)}' for c, xs in classes.items() for x in xs)
          for p, classes in files.items()}


# The split of make_unsplit's folder with split_seed 0, as it is on every machine (by hand:
# each class's names ordered by sha256(b'0/ant/3.png'), the last two to validation, test; the
# same under rule stratified-v2 as under stratified: no copies, ASCII names); a change here
# moves users' files between train and test.
PINNED = {'validation': ['ant/0.png', 'bee/4.png', 'cat/5.png'],
          'test': ['ant/3.png', 'bee/1.png', 'cat/4.png']}


def test_unsplit_folder_split_is_pinned_stratified_and_seeded(tmp_path):
  a = own_cfg(make_unsplit(tmp_path / 'a'), tmp_path / 'tfds')
  b = own_cfg(make_unsplit(tmp_path / 'b', reverse=True), tmp_path / 'tfds')
  split = parts_of(a)
  assert split == parts_of(a) == parts_of(b)  # any call, any creation or listing order.
  assert {p: split[p] for p in PINNED} == PINNED
  assert sorted(sum(split.values(), [])) == sorted(f'{c}/{i}.png' for c in CLASSES
                                                   for i in range(10))
  for part, want in (('train', 8), ('validation', 1), ('test', 1)):  # 0.8, 0.1, 0.1 of 10.
    assert [sum(n.startswith(f'{c}/') for n in split[part]) for c in CLASSES] == [want] * 3
  a.split_seed = 1
  assert parts_of(a) != split and sorted(map(len, parts_of(a).values())) == [3, 3, 24]
  # Fractions within rounding (largest remainder), every non-zero part holding every class.
  for n, fractions, sizes in ((10, (0.5, 0.25, 0.25), [5, 3, 2]), (20, (0.8, 0.1, 0.1), [16, 2, 2]),
                              (7, (0.7, 0.2, 0.1), [5, 1, 1]), (3, (0.8, 0.1, 0.1), [1, 1, 1]),
                              (9, (0.9, 0, 0.1), [8, 0, 1]), (4, (0.98, 0.01, 0.01), [2, 1, 1])):
    got = image_folder._part_sizes(n, fractions)  # pylint: disable=protected-access
    assert got == sizes and sum(got) == n, (n, fractions, got)
  for n in range(3, 60):
    got = image_folder._part_sizes(n, (0.7, 0.15, 0.15))  # pylint: disable=protected-access
    assert sum(got) == n and min(got) >= 1 and all(abs(g - n * f) < 1.5 for g, f in zip(
        got, (0.7, 0.15, 0.15))), (n, got)
  # The parts are TFDS splits of the folder: sliced, read, checked as a validation split.
  builder = data.builder_for(own_cfg(tmp_path / 'a', tmp_path / 'tfds'))
  record = data.split_record(builder)
  assert record == {'rule': 'stratified-v2', 'names': 'NFC', 'copies': 'together, across classes',
                    'seed': 0, 'fractions': [0.8, 0.1, 0.1],
                    'counts': {'train': 24, 'validation': 3, 'test': 3}, 'grouped': 0,
                    'pinned': 0, 'digest': record['digest']} and len(record['digest']) == 64
  assert data.split_record(data.builder_for(own_cfg(tmp_path / 'b', tmp_path / 'tfds'))) == record
  assert builder.info.features['label'].names == list(CLASSES)
  assert {s: data.num_examples(builder, s) for s in ('train', 'validation', 'test', 'train[:25%]')
          } == {'train': 24, 'validation': 3, 'test': 3, 'train[:25%]': 6}
  names = lambda s: sorted('/'.join(os.fsdecode(ex['image/filename']).split(os.sep)[-2:])
                           for ex in builder.as_dataset(split=s).as_numpy_iterator())
  assert names('validation') == split['validation'] and names('test') == split['test']
  from msmgan_jax.lab import compare  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  compare.check_validation_split(ml_collections.ConfigDict({
      'base': {'dataset': own_cfg(tmp_path / 'a', tmp_path / 'tfds').to_dict()},
      'validation_split': 'validation', 'min_validation_images': 3}))
  # A zero fraction leaves its split out, and a split naming it is refused.
  cfg = own_cfg(tmp_path / 'a', tmp_path / 'tfds', split_fractions=(0.9, 0.0, 0.1))
  assert sorted(data.builder_for(cfg).info.splits) == ['test', 'train']
  cfg.test_split = 'validation'
  with pytest.raises(data.DataError, match=r"dataset.test_split 'validation': .* has no train/ "
                     r"and test/ folders, so it is split into train, test .*'validation' is none"):
    data.builder_for(cfg)


@pytest.mark.slow
def test_unsplit_folder_trains_evaluates_exports_and_records_its_split(tmp_path):
  from msmgan_jax.serving import export  # pylint: disable=g-import-not-at-top
  folder = make_unsplit(tmp_path / 'images')
  cfg = config.finalize(config.defaults(), 'smoke')
  cfg.method, cfg.teacher.model, cfg.student.model = 'ce', 'resnet8', 'cnn'
  cfg.batch_size, cfg.eval_batch_size = 8, 8
  cfg.dataset = own_cfg(folder, tmp_path / 'tfds', train_split='train', test_split='validation',
                        split_fractions=(0.6, 0.3, 0.1))
  before = snapshot(folder)
  summary = train.train_and_evaluate(cfg, str(tmp_path / 'run'))
  assert snapshot(folder) == before  # the user's folder is only read.
  split = summary['data']['split']
  assert split['rule'] == 'stratified-v2' and split['seed'] == 0
  assert split['fractions'] == [0.6, 0.3, 0.1]
  assert split['counts'] == {'train': 18, 'validation': 9, 'test': 3}  # 6, 3, 1 of 10 each.
  assert 0 <= summary['student']['test_accuracy'] <= 1
  with open(tmp_path / 'run' / 'metrics.jsonl') as f:
    evals = [e for e in map(json.loads, f) if e['split'] == 'test']
  assert evals and all(e['count'] == 9 for e in evals)  # evaluated on the validation split.
  meta = export.export(str(tmp_path / 'run'), str(tmp_path / 'student'))
  assert meta['labels'] == list(CLASSES) and meta['input_shape'] == [12, 12, 3]
  assert json.loads((tmp_path / 'student' / 'model.json').read_text())['source']['split'] == split


def test_unsplit_folder_split_travels_through_an_arrays_file(tmp_path):
  from msmgan_jax.data import arrays  # pylint: disable=g-import-not-at-top
  cfg = own_cfg(make_unsplit(tmp_path / 'images'), tmp_path / 'tfds')
  saved = data.to_arrays(cfg)
  assert saved['split']['counts'] == {'train': 24, 'validation': 3, 'test': 3}
  arrays.save(str(tmp_path / 'own.npz'), saved)
  info, _, _ = data.load(own_cfg(tmp_path / 'own.npz', tmp_path / 'tfds'), batch_size=8,
                         eval_batch_size=4)
  assert info.record()['split'] == saved['split'] and (info.num_train, info.num_test) == (24, 3)


def test_unsplit_folder_skips_hidden_entries_and_reads_any_name(tmp_path, capsys):
  root = make_unsplit(tmp_path / 'images', per_class=4)
  (root / '.ipynb_checkpoints').mkdir()
  Image.new('RGB', (12, 12)).save(root / '.ipynb_checkpoints' / 'x.png')
  (root / '__MACOSX').mkdir()
  (root / 'ant' / '.DS_Store').write_bytes(b'\0\0')
  (root / 'ant' / '._0.png').write_bytes(b'AppleDouble, not a png')
  os.rename(bytes(root / 'bee' / '0.png'), bytes(root / 'bee') + b'/photo_caf\xe9.png')
  builder = data.builder_for(own_cfg(root, tmp_path / 'tfds'))
  assert builder.info.features['label'].names == list(CLASSES)
  assert {s: i.num_examples for s, i in builder.info.splits.items()} == {
      'train': 6, 'validation': 3, 'test': 3}  # 2, 1, 1 of 4 per class.
  err = capsys.readouterr().err
  assert f"note: {root}: skipped the hidden or system folder(s) ['.ipynb_checkpoints', " \
         "'__MACOSX'], not classes" in err
  assert f'note: {root}: ant/: skipped 2 hidden or system file(s)' in err


def test_unsplit_folder_class_with_too_few_images_is_named(tmp_path):
  root = make_unsplit(tmp_path / 'images', per_class=5)
  for i in (2, 3, 4):
    (root / 'cat' / f'{i}.png').unlink()
  with pytest.raises(data.DataError, match=(
      rf"^{root} has no train/ and test/ folders, so every class is split into train, "
      r"validation, test \(dataset.split_fractions \(0.8, 0.1, 0.1\)\), which needs at least 3 "
      r"images in every class, but class 'cat' has 2: add images to it or remove its folder")):
    data.builder_for(own_cfg(root, tmp_path / 'tfds'))
  # Two non-zero parts need two images per class.
  data.builder_for(own_cfg(root, tmp_path / 'tfds', split_fractions=(0.8, 0, 0.2)))


def test_validate_split_fields():
  config.validate(_full(dataset_cfg(split_fractions=(0.9, 0.0, 0.1), split_seed=7)))
  for fractions in ((0.8, 0.1), (0.5, 0.1, 0.1), (0.0, 0.5, 0.5), (1.2, -0.1, -0.1),
                    (0.8, float('nan'), 0.1), (0.8, True, 0.1)):
    with pytest.raises(config.ConfigError, match=r'^config field dataset\.split_fractions: .* '
                       r'must be 3 numbers in \[0, 1\] summing to 1'):
      config.validate(_full(dataset_cfg(split_fractions=fractions)))
  with pytest.raises(config.ConfigError, match=r'^config field dataset\.split_seed: must be an '
                     'integer >= 0, got -1'):
    config.validate(_full(dataset_cfg(split_seed=-1)))
