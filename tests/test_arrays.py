"""The in-memory device pipeline: arrays files, epoch-exact order, jitted augmentation, no TF."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from support import dataset_cfg
from msmgan_jax.data import arrays
from msmgan_jax.data import datasets as data
from msmgan_jax.core import sharding

N, H = 50, 6  # examples, image side


def index_arrays(n=N, test=7):
  """Images whose every pixel is the example's index (so a batch shows which examples it holds)."""
  img = lambda m: np.broadcast_to(np.arange(m, dtype=np.uint8)[:, None, None, None],
                                  (m, H, H, 1)).copy()
  return {'train_images': img(n), 'train_labels': np.arange(n, dtype=np.int32) % 10,
          'test_images': img(test), 'test_labels': np.arange(test, dtype=np.int32) % 10,
          'mean': np.zeros(1, np.float32), 'std': np.full(1, 1 / 255, np.float32),
          'num_classes': 10, 'name': 'index'}


def pipeline(batch_size=8, eval_batch_size=4, **fields):
  cfg = dataset_cfg(**{'crop_padding': 0, 'flip': False, **fields})
  return arrays.DevicePipeline(index_arrays(), cfg, batch_size=batch_size,
                               eval_batch_size=eval_batch_size, mesh=sharding.mesh())


def example_ids(batch):
  return np.asarray(batch['image'])[:, 0, 0, 0].round().astype(int)


def test_every_epoch_visits_every_example_once_in_a_fresh_seeded_order():
  pipe = pipeline()
  it = pipe.train_batches(seed=3)
  stream = np.concatenate([example_ids(next(it)) for _ in range(4 * N // 8 + 1)])
  epochs = [stream[e * N:(e + 1) * N] for e in range(4)]
  for order in epochs:
    assert sorted(order) == list(range(N))  # exactly once each, batches straddling epochs.
  assert len({tuple(o) for o in epochs}) == 4  # a fresh order every epoch.
  again = np.concatenate([example_ids(b) for b, _ in zip(pipe.train_batches(seed=3), range(7))])
  np.testing.assert_array_equal(again, stream[:56])
  other = np.concatenate([example_ids(b) for b, _ in zip(pipe.train_batches(seed=4), range(7))])
  assert not np.array_equal(other, stream[:56])
  skipped = next(pipe.train_batches(seed=3, skip=13))  # a resumed run starts mid-stream.
  np.testing.assert_array_equal(example_ids(skipped), stream[13 * 8:14 * 8])
  labels = np.asarray(next(pipe.train_batches(seed=3))['label'])
  np.testing.assert_array_equal(labels, stream[:8] % 10)


def test_crop_and_flip_move_pixels_as_tf_data_does():
  """A one-hot pixel lands where a zero-padded random crop and a left-right flip put it."""
  a = index_arrays()
  a['train_images'] = np.zeros((N, H, H, 1), np.uint8)
  a['train_images'][:, 2, 3, 0] = 255
  a['mean'], a['std'] = np.zeros(1, np.float32), np.ones(1, np.float32)
  cfg = dataset_cfg(crop_padding=2, flip=True)
  pipe = arrays.DevicePipeline(a, cfg, batch_size=N, eval_batch_size=5, mesh=sharding.mesh())
  x = np.asarray(next(pipe.train_batches(seed=0))['image'])[..., 0]
  seen = set()
  for im in x:
    ys, xs = np.nonzero(im)
    assert len(ys) <= 1 and set(np.unique(im)) <= {0.0, 1.0}
    if len(ys):  # shifts of -2..2 rows; columns shifted, then maybe mirrored.
      dy, col = ys[0] - 2, xs[0]
      assert -2 <= dy <= 2
      assert -2 <= col - 3 <= 2 or -2 <= (H - 1 - col) - 3 <= 2
      seen.add((dy, col))
  assert len(seen) > 10  # the offsets differ from example to example.


def test_eval_batches_cover_the_test_split_once_with_a_mask():
  pipe = pipeline(eval_batch_size=4)
  batches = list(pipe.eval_batches())
  assert len(batches) == 2
  ids = np.concatenate([example_ids(b)[np.asarray(b['mask']) > 0] for b in batches])
  np.testing.assert_array_equal(ids, np.arange(7))
  last = batches[-1]
  np.testing.assert_array_equal(np.asarray(last['mask']), [1, 1, 1, 0])
  assert not np.asarray(last['image'])[3:].any() and not np.asarray(last['label'])[3:].any()


@pytest.mark.parametrize('spec', ['train', 'train[:10%]', 'train[25%:75%]', 'train[3:17]',
                                  'train[-9:]', 'train[:33%]'])
def test_split_slices_match_tfds(spec):
  n = 601
  splits = tfds.core.SplitDict([tfds.core.SplitInfo(name='train', shard_lengths=[n],
                                                    num_bytes=0)])
  (inst,) = tfds.core.ReadInstruction.from_spec(spec).to_absolute(splits)
  got = arrays.slice_split(n, spec)
  assert range(n)[got] == range(n)[inst.from_ or 0:n if inst.to is None else inst.to]


def test_saved_arrays_equal_the_tfds_splits_and_bad_files_are_refused(tfds_data_dir, tmp_path):
  cfg = dataset_cfg(data_dir=tfds_data_dir, train_split='train[:64]', test_split='test[:10]')
  got = data.to_arrays(cfg)
  ref = tfds.as_numpy(data.builder_for(cfg).as_dataset(split='train[:64]', batch_size=64))
  ref = next(iter(ref))
  np.testing.assert_array_equal(got['train_images'], ref['image'])
  np.testing.assert_array_equal(got['train_labels'], ref['label'])
  path = str(tmp_path / 'f.npz')
  arrays.save(path, got)
  back = arrays.read(path)
  np.testing.assert_array_equal(back['test_images'], got['test_images'])
  assert str(back['name']) == 'fashion_mnist' and int(back['num_classes']) == 10
  (tmp_path / 'bad.npz').write_bytes(b'not a zip')
  with pytest.raises(arrays.ArrayError, match='cannot be read'):
    arrays.read(str(tmp_path / 'bad.npz'))
  np.savez(tmp_path / 'other.npz', x=np.zeros(3))
  with pytest.raises(arrays.ArrayError, match='not a msmgan_jax arrays file'):
    arrays.read(str(tmp_path / 'other.npz'))


@pytest.mark.parametrize('change,words', [
    (lambda a: {'train_labels': np.eye(10, dtype=np.int32)[a['train_labels']]}, 'look one-hot'),
    (lambda a: {'train_labels': a['train_labels'] % 10 + 1}, 'look 1-based: subtract 1'),
    (lambda a: {'test_labels': a['test_labels'] - 1}, r'run from -1 to 5, outside 0\.\.9'),
    (lambda a: {'train_images': a['train_images'].transpose(0, 3, 1, 2)},
     'look channels-first, NCHW'),
    (lambda a: {'train_images': a['train_images'].astype(np.float32)},
     r'divide by 255, or store uint8'),
    (lambda a: {'mean': np.zeros(3, np.float32)}, r'as many as mean \(3,\)'),
    (lambda a: {'std': np.zeros(1, np.float32)}, 'must be above 0'),
])
def test_arrays_files_in_another_convention_are_refused_naming_it(tmp_path, change, words):
  """An arrays file made by hand (one-hot or 1-based labels, NCHW images, float pixels in
  0..255, stats for other channels) is refused on reading, naming the convention and the
  fix: each would train wrong silently, or fail later naming none of it."""
  good = index_arrays()
  arrays.save(str(tmp_path / 'good.npz'), good)
  assert arrays.read(str(tmp_path / 'good.npz'))['train_images'].shape == (N, H, H, 1)
  floats = {**good, 'train_images': good['train_images'].astype(np.float32) / 255}
  arrays.save(str(tmp_path / 'floats.npz'), floats)  # floats in [0, 1]: fine.
  assert arrays.read(str(tmp_path / 'floats.npz'))['train_images'].dtype == np.float32
  path = str(tmp_path / 'bad.npz')
  arrays.save(path, {**good, **change(good)})
  with pytest.raises(arrays.ArrayError, match=words):
    arrays.read(path)


def test_device_and_tfdata_pipelines_normalise_alike(tfds_data_dir):
  """Without augmentation, a batch of the device pipeline holds the same normalised images
  as tf.data's for the same examples."""
  cfg = dataset_cfg(data_dir=tfds_data_dir, train_split='train[:64]', test_split='test[:10]',
                    crop_padding=0, flip=False)
  _, _, tf_eval = data.load(dataset_cfg(**{**cfg.to_dict(), 'pipeline': 'tfdata'}), batch_size=16,
                            eval_batch_size=10)
  _, _, dev_eval = data.load(dataset_cfg(**{**cfg.to_dict(), 'pipeline': 'device'}), batch_size=16,
                             eval_batch_size=10)
  a, b = next(tf_eval()), next(dev_eval())
  np.testing.assert_allclose(np.asarray(b['image']), a['image'], atol=1e-6)
  np.testing.assert_array_equal(np.asarray(b['label']), a['label'])


@pytest.mark.slow
def test_a_run_from_an_arrays_file_needs_no_tensorflow(tfds_data_dir, tmp_path):
  """What a machine without TensorFlow (the lent GPU box) does: train from a saved .npz."""
  cfg = dataset_cfg(data_dir=tfds_data_dir, train_split='train[:256]', test_split='test[:100]')
  path = str(tmp_path / 'fmnist.npz')
  arrays.save(path, data.to_arrays(cfg))
  script = ("import sys\n"
            "for m in ('tensorflow', 'tensorflow_datasets'):\n"
            "  sys.modules[m] = None  # as if not installed\n"
            "from msmgan_jax import main\n"
            "rc = main.run(sys.argv)\n"
            "assert 'tensorflow' not in [k for k, v in sys.modules.items() if v is not None]\n"
            "sys.exit(rc)\n")
  workdir = str(tmp_path / 'run')
  proc = subprocess.run(
      [sys.executable, '-c', script, '--config', 'configs/default.py', '--workdir', workdir,
       f'--config.dataset.name={path}', '--config.method=ce', '--config.student.model=cnn',
       '--config.student.epochs=1', '--config.batch_size=32', '--config.eval_batch_size=50'],
      capture_output=True, text=True, timeout=300,
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = json.load(open(os.path.join(workdir, 'summary.json')))
  assert summary['student']['test_accuracy'] > 0.1
