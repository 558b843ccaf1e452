"""Input pipelines: mocked TFDS datasets, real offline Fashion-MNIST, IDX reading, missing data."""
import gzip
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from support import dataset_cfg, write_idx
from msmgan_jax.data import datasets as data
from msmgan_jax.data.sources import fashion_mnist_local, tfds_source

MOCK_TRAIN, MOCK_TEST = 40, 13  # 13 test examples: not a multiple of the eval batch (5).
MOCK_BATCH, MOCK_EVAL_BATCH = 4, 5
NUM_CLASSES = {'fashion_mnist': 10, 'mnist': 10, 'cifar10': 10, 'cifar100': 100}
IMAGE_SHAPE = {'fashion_mnist': (28, 28, 1), 'mnist': (28, 28, 1),
               'cifar10': (32, 32, 3), 'cifar100': (32, 32, 3)}


def assert_eval_batches(batches, size, shape):
  """Each batch is `size` examples; the mask is 1..1 0..0 and padded rows are zeros."""
  for b in batches:
    assert set(b) == {'image', 'label', 'mask'}
    assert b['image'].shape == (size,) + shape and b['image'].dtype == np.float32
    assert b['label'].shape == (size,) and b['label'].dtype == np.int32
    assert b['mask'].shape == (size,) and b['mask'].dtype == np.float32
    n = int(b['mask'].sum())
    np.testing.assert_array_equal(b['mask'], (np.arange(size) < n).astype(np.float32))
    assert not b['image'][n:].any() and not b['label'][n:].any()


# --------------------------------------------------------------------------- mocked TFDS


@pytest.fixture(scope='module')
def mock_metadata_dir(tmp_path_factory):
  """TFDS metadata (features from TFDS's code, split sizes MOCK_TRAIN/MOCK_TEST) per dataset.

  With it `mock_data` runs in USE_FILES mode, so `info.splits` has sizes that agree with
  the number of mocked examples (without metadata `info.splits` is empty).
  """
  root = str(tmp_path_factory.mktemp('tfds_metadata'))
  for name in data.STATS:
    builder = tfds.builder(name, data_dir=root)
    builder.info.set_splits(tfds.core.SplitDict([
        tfds.core.SplitInfo(name='train', shard_lengths=[MOCK_TRAIN], num_bytes=0),
        tfds.core.SplitInfo(name='test', shard_lengths=[MOCK_TEST], num_bytes=0)]))
    os.makedirs(builder.data_dir, exist_ok=True)
    builder.info.write_to_directory(builder.data_dir)
  return root


@pytest.mark.parametrize('name', list(data.STATS))
def test_mocked_load_shapes_and_eval_coverage(name, mock_metadata_dir):
  cfg = dataset_cfg(name=name, source='tfds', shuffle_buffer=64, pipeline='tfdata')
  with tfds.testing.mock_data(num_examples=MOCK_TEST, data_dir=mock_metadata_dir,
                              policy=tfds.testing.MockPolicy.USE_FILES):
    info, train_batches, eval_fn = data.load(cfg, batch_size=MOCK_BATCH,
                                             eval_batch_size=MOCK_EVAL_BATCH)
    assert info == data.DatasetInfo(name, NUM_CLASSES[name], IMAGE_SHAPE[name],
                                    MOCK_TRAIN, MOCK_TEST)
    batches = train_batches(0)
    for _ in range(5):  # more batches than one pass over the mocked split: it repeats.
      b = next(batches)
      assert set(b) == {'image', 'label'}
      assert b['image'].shape == (MOCK_BATCH,) + IMAGE_SHAPE[name]
      assert b['image'].dtype == np.float32 and np.isfinite(b['image']).all()
      assert b['label'].shape == (MOCK_BATCH,) and b['label'].dtype == np.int32
      assert ((b['label'] >= 0) & (b['label'] < NUM_CLASSES[name])).all()

    evals = list(eval_fn())
    # A direct count of what the (mocked) builder yields for the test split.
    direct = list(data.builder_for(cfg).as_dataset(split='test', shuffle_files=False)
                  .as_numpy_iterator())
  assert len(direct) == MOCK_TEST
  assert len(evals) == -(-MOCK_TEST // MOCK_EVAL_BATCH) == 3
  assert_eval_batches(evals, MOCK_EVAL_BATCH, IMAGE_SHAPE[name])
  assert [int(b['mask'].sum()) for b in evals] == [5, 5, 3]
  assert sum(b['mask'].sum() for b in evals) == MOCK_TEST == info.num_test
  # Each example exactly once, in order: the masked-in labels are the split's labels.
  labels = np.concatenate([b['label'][b['mask'] > 0] for b in evals])
  np.testing.assert_array_equal(labels, [ex['label'] for ex in direct])


# --------------------------------------------------------------- real offline Fashion-MNIST


@pytest.fixture(scope='module')
def fmnist_small(tfds_data_dir):
  cfg = dataset_cfg(data_dir=tfds_data_dir, train_split='train[:1%]', test_split='test[:5%]',
                    shuffle_buffer=600, pipeline='tfdata')
  info, train_batches, eval_fn = data.load(cfg, batch_size=128, eval_batch_size=128)
  return cfg, info, train_batches, eval_fn


def test_fmnist_slices_info(fmnist_small):
  _, info, _, _ = fmnist_small
  assert info == data.DatasetInfo('fashion_mnist', 10, (28, 28, 1), 600, 500)
  # What a run records of its data (summary.json's `data`, an anchor's meta).
  record = info.record()
  assert record['class_names'] == list(data.FASHION_MNIST_LABELS)
  assert record['image_shape'] == [28, 28, 1] and len(record['mean']) == len(record['std']) == 1


def test_fmnist_train_batches_normalised(fmnist_small):
  _, _, train_batches, _ = fmnist_small
  it = train_batches(0)
  images, labels = [], []
  for _ in range(4):
    b = next(it)
    assert b['image'].shape == (128, 28, 28, 1) and b['image'].dtype == np.float32
    assert b['label'].shape == (128,) and b['label'].dtype == np.int32
    images.append(b['image'])
    labels.append(b['label'])
  images, labels = np.stack(images), np.concatenate(labels)
  assert labels.min() >= 0 and labels.max() <= 9
  assert len(np.unique(labels)) == 10  # 512 shuffled examples hit every class.
  for batch in images:  # normalised with the training-set mean/std: about N(0, 1).
    assert abs(float(batch.mean())) < 0.25
    assert 0.75 < float(batch.std()) < 1.25
  # Pixels are (x / 255 - 0.2860) / 0.3530 for x in 0..255.
  lo, hi = (0 - 0.2860) / 0.3530, (1 - 0.2860) / 0.3530
  assert images.min() >= lo - 1e-4 and images.max() <= hi + 1e-4
  assert images.min() < lo + 1e-3 and images.max() > hi - 0.05


def test_fmnist_train_batches_deterministic_per_seed(fmnist_small):
  _, _, train_batches, _ = fmnist_small
  a, b = train_batches(0), train_batches(0)
  first = [next(a) for _ in range(3)]
  for want in first:
    got = next(b)
    np.testing.assert_array_equal(got['label'], want['label'])
    np.testing.assert_array_equal(got['image'], want['image'])
  # Resuming: skip=2 starts at the third batch of the same sequence.
  resumed = next(train_batches(0, skip=2))
  np.testing.assert_array_equal(resumed['label'], first[2]['label'])
  np.testing.assert_array_equal(resumed['image'], first[2]['image'])
  # Another seed gives another order.
  other = next(train_batches(1))
  assert not np.array_equal(other['label'], first[0]['label'])


def test_fmnist_eval_covers_split_once(fmnist_small):
  cfg, info, _, eval_fn = fmnist_small
  evals = list(eval_fn())
  assert_eval_batches(evals, 128, (28, 28, 1))
  assert [int(b['mask'].sum()) for b in evals] == [128, 128, 128, 116]
  assert sum(b['mask'].sum() for b in evals) == 500 == info.num_test
  labels = np.concatenate([b['label'][b['mask'] > 0] for b in evals])
  direct = [ex['label'] for ex in data.builder_for(cfg).as_dataset(
      split='test[:5%]', shuffle_files=False).as_numpy_iterator()]
  np.testing.assert_array_equal(labels, direct)
  # Eval images are not augmented: a second pass is identical.
  again = list(eval_fn())
  for a, b in zip(evals, again):
    np.testing.assert_array_equal(a['image'], b['image'])
  masked = np.concatenate([b['image'][b['mask'] > 0] for b in evals])
  assert abs(float(masked.mean())) < 0.1 and 0.9 < float(masked.std()) < 1.1


def test_local_builder_matches_tfds_fashion_mnist(tfds_data_dir):
  local = data.FashionMnistLocal(data_dir=tfds_data_dir)
  ref = tfds.builder('fashion_mnist', data_dir=tfds_data_dir).info  # from TFDS's code only.
  assert local.info.features.to_json() == ref.features.to_json()
  assert repr(local.info.features) == repr(ref.features)
  assert local.info.features['label'].names == ref.features['label'].names
  assert tuple(ref.features['label'].names) == data.FASHION_MNIST_LABELS
  assert local.info.supervised_keys == ref.supervised_keys == ('image', 'label')
  assert str(local.info.version) == str(ref.version)
  assert local.is_prepared()
  splits = local.info.splits
  assert sorted(splits.keys()) == ['test', 'train']
  assert splits['train'].num_examples == 60000 and splits['test'].num_examples == 10000


def test_local_builder_prepares_from_manual_dir(tmp_path):
  """A tiny IDX set in manual_dir becomes a TFDS dataset with exactly those examples."""
  idx_dir, data_dir = tmp_path / 'idx', tmp_path / 'tfds'
  idx_dir.mkdir()
  rng = np.random.default_rng(0)
  arrays = {'train': (rng.integers(0, 256, (7, 28, 28)), np.arange(7)),
            'test': (rng.integers(0, 256, (3, 28, 28)), np.array([9, 0, 4]))}
  for split, (img_file, lab_file) in data.IDX_FILES.items():
    write_idx(idx_dir / img_file, arrays[split][0])
    write_idx(idx_dir / lab_file, arrays[split][1])
  builder = data.builder_for(dataset_cfg(data_dir=str(data_dir), manual_dir=str(idx_dir),
                                         source='local'))
  assert isinstance(builder, data.FashionMnistLocal)
  assert builder.info.splits['train'].num_examples == 7
  assert builder.info.splits['test'].num_examples == 3
  got = sorted(((int(ex['label']), ex['image'].tobytes()) for ex in
                builder.as_dataset(split='test').as_numpy_iterator()))
  want = sorted((int(lab), img.astype(np.uint8)[..., None].tobytes())
                for img, lab in zip(*arrays['test']))
  assert got == want


# ------------------------------------------------------------------------------ IDX files


def test_read_idx_roundtrip_and_real_labels(tmp_path):
  arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
  write_idx(tmp_path / 'x.gz', arr)
  out = data.read_idx(str(tmp_path / 'x.gz'))
  assert out.dtype == np.uint8
  np.testing.assert_array_equal(out, arr)
  real = os.path.join(data.DEBIAN_FASHION_MNIST, 't10k-labels-idx1-ubyte.gz')
  if os.path.exists(real):
    labels = data.read_idx(real)
    assert labels.shape == (10000,)
    np.testing.assert_array_equal(np.bincount(labels), [1000] * 10)


def _gz(payload: bytes) -> bytes:
  return gzip.compress(payload)


VALID = bytes([0, 0, 8, 1]) + (100).to_bytes(4, 'big') + bytes(range(100))
BAD_IDX = {
    'payload_truncated': (_gz(VALID[:60]), 'truncated'),
    'not_idx': (_gz(b'garbage bytes, no IDX header'), 'not an unsigned-byte IDX'),
    'empty': (_gz(b''), 'not an unsigned-byte IDX'),
    'float_idx': (_gz(bytes([0, 0, 0x0D, 1]) + (1).to_bytes(4, 'big') + bytes(4)),
                  'not an unsigned-byte IDX'),
}
# BUG (data.read_idx): gzip-level corruption escapes as EOFError / gzip.BadGzipFile instead of
# DataError, so builder_for / main.py report a traceback (exit 1) rather than exit 2.
BAD_GZIP = {
    'gzip_stream_truncated': _gz(VALID)[:20],
    'not_gzip': b'this is not a gzip file at all',
}


@pytest.mark.parametrize('case', sorted(BAD_IDX))
def test_read_idx_rejects_bad_content(case, tmp_path):
  raw, message = BAD_IDX[case]
  path = tmp_path / 'bad.gz'
  path.write_bytes(raw)
  with pytest.raises(data.DataError, match=message):
    data.read_idx(str(path))


@pytest.mark.parametrize('case', sorted(BAD_GZIP))
def test_read_idx_rejects_corrupt_gzip(case, tmp_path):
  path = tmp_path / 'bad.gz'
  path.write_bytes(BAD_GZIP[case])
  with pytest.raises(data.DataError):
    data.read_idx(str(path))


def test_find_idx_dir(tmp_path, monkeypatch):
  empty = tmp_path / 'empty'
  empty.mkdir()
  monkeypatch.setattr(fashion_mnist_local, 'DEBIAN_FASHION_MNIST', str(empty))
  assert data.find_idx_dir(None) is None
  assert data.find_idx_dir(str(tmp_path / 'missing')) is None
  files = [f for pair in data.IDX_FILES.values() for f in pair]
  assert len(files) == 4
  manual = tmp_path / 'manual'
  manual.mkdir()
  for f in files[:3]:
    (manual / f).write_bytes(b'')
  assert data.find_idx_dir(str(manual)) is None  # three of four files are not enough.
  (manual / files[3]).symlink_to(manual / files[0])
  assert data.find_idx_dir(str(manual)) == str(manual)
  # Falls back to Debian's install path when manual_dir lacks the files.
  monkeypatch.setattr(fashion_mnist_local, 'DEBIAN_FASHION_MNIST', str(manual))
  assert data.find_idx_dir(str(empty)) == str(manual)
  assert data.find_idx_dir('') == str(manual)


# ---------------------------------------------------------------------------- no data at all


@pytest.fixture
def no_download(monkeypatch):
  """TFDS downloads fail at once, as without network (real attempts retry for minutes)."""
  calls = []

  def fail(self, *args, **kwargs):
    calls.append(self.name)
    raise ConnectionError('network is unreachable (test)')
  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare', fail)
  return calls


def _assert_how_to_get(message):
  assert '`dataset.data_dir`' in message and 'apt-get install dataset-fashion-mnist' in message
  assert 'manual_dir' in message


@pytest.mark.parametrize('online', [False, True])
def test_missing_mnist_says_how_to_get_it(online, tmp_path, no_download, monkeypatch):
  # Offline (no download host resolves) fails at once, without TFDS's minutes of retries;
  # online, a failed download is reported with its cause.
  monkeypatch.setattr(tfds_source, 'download_hosts_resolve', lambda builder: online)
  with pytest.raises(data.DataError) as e:
    data.builder_for(dataset_cfg(name='mnist', data_dir=str(tmp_path)))
  message = str(e.value)
  assert "'mnist'" in message and str(tmp_path) in message
  _assert_how_to_get(message)
  if online:
    assert no_download == ['mnist'] and 'ConnectionError' in message
    assert isinstance(e.value.__cause__, ConnectionError)
  else:
    assert no_download == [] and 'cannot be reached' in message


def test_download_hosts_resolve_reads_builder_urls(monkeypatch):
  class FakeBuilder:
    url_infos = {'https://unresolvable.invalid/a.gz': None}
  assert not tfds_source.download_hosts_resolve(FakeBuilder())
  FakeBuilder.url_infos = {}
  assert tfds_source.download_hosts_resolve(FakeBuilder())


@pytest.mark.parametrize('source', ['local', 'auto'])
def test_missing_fashion_mnist_says_how_to_get_it(source, tmp_path, monkeypatch, no_download):
  empty = tmp_path / 'no_idx'
  empty.mkdir()
  monkeypatch.setattr(fashion_mnist_local, 'DEBIAN_FASHION_MNIST', str(empty))
  monkeypatch.setattr(tfds_source, 'download_hosts_resolve', lambda builder: True)
  cfg = dataset_cfg(source=source, data_dir=str(tmp_path / 'tfds'), manual_dir=str(empty))
  with pytest.raises(data.DataError) as e:
    data.builder_for(cfg)
  _assert_how_to_get(str(e.value))
  if source == 'local':  # never falls back to a download.
    assert no_download == [] and 'IDX files not found' in str(e.value)
  else:  # auto: no IDX files, nothing prepared, so TFDS's own fashion_mnist is tried.
    assert no_download == ['fashion_mnist']


def test_unknown_dataset_name():
  with pytest.raises(data.DataError, match="dataset.name 'svhn' is not one of the registered TFDS "
                     "datasets nor an existing folder \\(did you mean 'svhn_cropped'\\?\\)"):
    data.builder_for(dataset_cfg(name='svhn'))


@pytest.mark.parametrize('name', ['Fashion_MNIST', 'FashionMNIST'])
def test_a_dataset_name_tfds_reads_is_the_same_dataset(name, tfds_data_dir):
  """TFDS reads 'Fashion_MNIST' and 'FashionMNIST' as fashion_mnist: so do we (the local
  files included), not an uninstalled-package error."""
  assert data.canonical_name(name).startswith('fashion_mnist')
  builder = data.builder_for(dataset_cfg(name=name, data_dir=tfds_data_dir))
  assert builder.info.splits['train'].num_examples == 60000
  assert data.canonical_name('/some/folder') == '/some/folder'


def test_corrupt_manual_dir_is_a_data_error(tmp_path):
  idx_dir = tmp_path / 'idx'
  idx_dir.mkdir()
  for img_file, lab_file in data.IDX_FILES.values():
    write_idx(idx_dir / img_file, np.zeros((2, 28, 28)))
    write_idx(idx_dir / lab_file, np.zeros((2,)))
  raw = (idx_dir / data.IDX_FILES['train'][0]).read_bytes()
  (idx_dir / data.IDX_FILES['train'][0]).write_bytes(raw[:len(raw) // 2])
  with pytest.raises(data.DataError):
    data.builder_for(dataset_cfg(data_dir=str(tmp_path / 'tfds'), manual_dir=str(idx_dir),
                                 source='local'))


def test_pad_batch():
  batch = {'image': np.ones((3, 2, 2, 1), np.float32), 'label': np.array([1, 2, 3], np.int32)}
  out = data.pad_batch(batch, 5)
  np.testing.assert_array_equal(out['mask'], [1, 1, 1, 0, 0])
  np.testing.assert_array_equal(out['label'], [1, 2, 3, 0, 0])
  assert out['image'].shape == (5, 2, 2, 1) and out['image'][3:].sum() == 0
  assert out['label'].dtype == np.int32 and out['mask'].dtype == np.float32
