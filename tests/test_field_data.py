"""Image-folder field cases from issue 34 that already passed, kept so: slices that round to
nothing, a rare class under the split of an unsplit folder, and EXIF orientation (training
and `predict` decode the same pixels).
"""
import json
import os

import numpy as np
import pytest
from PIL import Image

from support import dataset_cfg
from msmgan_jax.data import datasets as data
from msmgan_jax.errors import DataError


def _folder(root, splits=('train', 'test'), per_class=5, classes=('a', 'b')):
  for split in splits:
    for k, c in enumerate(classes):
      os.makedirs(root / split / c if split else root / c, exist_ok=True)
      for i in range(per_class if not isinstance(per_class, dict) else per_class[c]):
        pixels = np.full((8, 8, 3), (i * 37 + k * 101) % 256, np.uint8)
        Image.fromarray(pixels).save((root / split / c if split else root / c) / f'{i}.png')
  return root


@pytest.mark.parametrize('train,test,empty', [
    ('train[:1%]', 'test', 'train[:1%]'), ('train', 'test[:1%]', 'test[:1%]'),
    ('train[:0]', 'test', 'train[:0]'), ('train[5:5]', 'test', 'train[5:5]')])
def test_a_slice_that_rounds_to_nothing_is_a_data_error_naming_it(tmp_path, train, test, empty):
  root = _folder(tmp_path / 'f')
  cfg = dataset_cfg(name=str(root), train_split=train, test_split=test,
                    data_dir=str(tmp_path / 'tfds'))
  with pytest.raises(DataError, match=rf"split '{empty.replace('[', '.').replace(']', '.')}' "
                     r'of image_folder holds no examples; fix the slice'):
    data.load(cfg, batch_size=2, eval_batch_size=2)


def test_a_rare_class_gets_an_image_in_every_part_of_the_split(tmp_path):
  """50 images of one class, 3 of another: each of train, validation and test holds the rare
  class once, and the common one in 80/10/10 proportion."""
  root = _folder(tmp_path / 'f', splits=('',), per_class={'common': 50, 'rare': 3},
                 classes=('common', 'rare'))
  cfg = dataset_cfg(name=str(root), data_dir=str(tmp_path / 'tfds'))
  builder = data.builder_for(cfg)
  counts = data.split_record(builder)['counts']
  assert counts == {'train': 41, 'validation': 6, 'test': 6}
  for part in ('train', 'validation', 'test'):
    labels = [int(ex['label']) for ex in builder.as_dataset(split=part).as_numpy_iterator()]
    assert labels.count(1) == 1, part


def test_exif_orientation_is_decoded_alike_by_training_and_predict(tmp_path):
  """A JPEG whose EXIF says 'rotate 90': TFDS's decoder (training) and `predict`'s read the
  stored pixels the same way (neither applies the tag), so a shipped model sees what the
  student trained on."""
  from msmgan_jax.serving import predict
  root = _folder(tmp_path / 'f')
  pixels = np.random.RandomState(0).randint(0, 255, (8, 12, 3), np.uint8)
  exif = Image.Exif()
  exif[0x0112] = 6  # Orientation: rotate 90 CW to display.
  path = root / 'test' / 'a' / 'rotated.jpg'
  Image.fromarray(pixels).save(path, exif=exif, quality=95)
  cfg = dataset_cfg(name=str(root), data_dir=str(tmp_path / 'tfds'), image_size=8)
  builder = data.builder_for(cfg)
  seen = {os.path.basename(ex['image/filename'].decode()): ex['image']
          for ex in builder.as_dataset(split='test').as_numpy_iterator()}
  assert seen['rotated.jpg'].shape[:2] == (8, 12)  # stored orientation, not the displayed one.
  np.testing.assert_array_equal(seen['rotated.jpg'], predict.read_image(str(path),
                                                                        (8, 12, 3)))


@pytest.mark.slow
def test_the_smoke_variant_on_a_240_image_folder_names_the_fix_and_then_runs(tmp_path, capsys):
  """`configs/default.py:smoke` on a small unsplit folder (issue 34): its 20% slice is 38
  images, under one batch: exit 2 naming the flag that gives the whole split; with it, the
  smoke runs and the teacher gets its 16-step epochs (192 images are 1 batch a pass)."""
  from msmgan_jax import main
  rng = np.random.RandomState(0)
  for c in ('ant', 'bee', 'cat'):
    os.makedirs(tmp_path / 'f' / c)
    for i in range(80):
      Image.fromarray(rng.randint(0, 255, (12, 12, 3), np.uint8)).save(
          tmp_path / 'f' / c / f'{i}.png')
  wd = tmp_path / 'run'
  args = ['main', '--config', 'configs/default.py:smoke', '--workdir', str(wd),
          f'--config.dataset.name={tmp_path / "f"}', f'--config.dataset.data_dir={tmp_path / "tfds"}',
          '--config.method=kd', '--config.student.model=cnn', '--config.teacher.model=resnet8']
  assert main.run(args) == 2
  assert '--config.dataset.train_split=train ' in capsys.readouterr().err and not wd.exists()
  code = main.run(args + ['--config.dataset.train_split=train'])
  out = capsys.readouterr()
  assert code == 0, out.err
  assert 'teacher.epochs=2 x 16 batches of 11 passes over 192 training images' in out.err
  summary = json.loads((wd / 'summary.json').read_text())
  assert summary['data']['split']['counts']['train'] == 192
