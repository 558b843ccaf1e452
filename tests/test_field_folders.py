"""Image folders as users have them (issue 34): the split of an unsplit folder is the same for
an NFC (Linux) and an NFD (macOS) copy and never separates byte-identical images; file-system
faults (names the view cannot hold, dangling links, entries that are no files, unreadable
files, a folder vanishing mid-scan, a view that cannot be written) exit 2 naming the path and
the fix, leaving no temporary folder; a small folder's teacher gets whole passes up to the
floor of steps per epoch."""
import errno
import os
import re
import shutil
import tempfile
import unicodedata

import numpy as np
import pytest
from PIL import Image

from support import dataset_cfg
from msmgan_jax import config
from msmgan_jax import main
from msmgan_jax.data import datasets as data
from msmgan_jax.data.sources import image_folder
from msmgan_jax.training import loop
from support import CLASSES, make_unsplit, own_cfg


def image(path, seed, size=(12, 12)):
  """A random RGB PNG at `path` (str or bytes), its pixels fixed by `seed`."""
  pixels = np.random.default_rng(seed).integers(0, 256, size + (3,)).astype(np.uint8)
  with open(path, 'wb') as f:
    Image.fromarray(pixels, 'RGB').save(f, format='PNG')


def make_named(root, names: dict, form: str):
  """root/<class>/<file> for {class: [file names]}, the names written in Unicode `form`
  (NFC or NFD); an image's pixels depend on its class and name only, so two copies made in
  two forms hold the same bytes under names that differ only in their form."""
  for label, (c, files) in enumerate(names.items()):
    (root / unicodedata.normalize(form, c)).mkdir(parents=True)
    for i, f in enumerate(files):
      image(root / unicodedata.normalize(form, c) / unicodedata.normalize(form, f), [label, i])
  return root


def parts(cfg):
  """{part: sorted 'class/file' names in NFC} of the split `_split_folder` makes of cfg.name."""
  files, _ = image_folder._split_folder(cfg, cfg.name)  # pylint: disable=protected-access
  return {p: sorted(unicodedata.normalize('NFC', f'{c}/{os.path.basename(x)}')
                    for c, xs in classes.items() for x in xs) for p, classes in files.items()}


# Names as users have them: French, German, Vietnamese and Korean (Hangul syllables decompose
# into their letters in NFD) file names, accented class names, and classes whose order
# changes with the form ('éa' sorts after 'f' in NFC, before it in NFD).
NAMED = {
    'accented files': {c: [f'photo_{w}_{i}.png' for w in ('café', 'Übung', 'tiếng')
                           for i in range(7)] for c in CLASSES},
    'accented classes': {c: [f'{i}.png' for i in range(20)]
                         for c in ('crème', 'résumé', 'naïve')},
    'hangul': {c: [f'사진_{i}.png' for i in range(20)] for c in ('고양이', '개')},
    'order changes with the form': {c: [f'é{i}.png' for i in range(12)] for c in ('éa', 'f')},
}


@pytest.mark.parametrize('case', sorted(NAMED))
def test_nfc_and_nfd_copies_split_identically(case, tmp_path):
  names = NAMED[case]
  nfc = make_named(tmp_path / 'nfc', names, 'NFC')
  nfd = make_named(tmp_path / 'nfd', names, 'NFD')
  listed = lambda root: sorted(os.path.relpath(os.path.join(d, f), root)
                               for d, _, fs in os.walk(root) for f in fs)
  assert listed(nfc) != listed(nfd)  # the names' bytes differ ...
  assert sorted(map(lambda n: unicodedata.normalize('NFC', n), listed(nfd))) == listed(nfc)
  for seed in range(3):
    a, b = (own_cfg(root, tmp_path / 'tfds', split_seed=seed) for root in (nfc, nfd))
    assert parts(a) == parts(b), seed  # image for image.
  builders = [data.builder_for(own_cfg(root, tmp_path / 'tfds')) for root in (nfc, nfd)]
  records = [data.split_record(b) for b in builders]
  assert records[0] == records[1] and records[0]['names'] == 'NFC'  # the digest too.
  labels = [b.info.features['label'].names for b in builders]
  assert labels[0] == labels[1] == sorted(unicodedata.normalize('NFC', c) for c in names)


def test_a_train_and_test_folder_in_two_forms_are_one_class(tmp_path):
  """A split folder copied in parts: train/ written on Linux (NFC), test/ on macOS (NFD)."""
  for split, form in (('train', 'NFC'), ('test', 'NFD')):
    make_named(tmp_path / 'images' / split, {c: ['0.png', '1.png'] for c in ('crème', 'thé')},
               form)
  builder = data.builder_for(own_cfg(tmp_path / 'images', tmp_path / 'tfds'))
  assert builder.info.features['label'].names == ['crème', 'thé']
  assert {s: builder.info.splits[s].num_examples for s in ('train', 'test')} == {
      'train': 4, 'test': 4}


def test_two_class_folders_one_in_each_form_are_refused(tmp_path):
  root = tmp_path / 'images'
  make_named(root, {'crème': ['0.png', '1.png', '2.png']}, 'NFC')
  make_named(root, {'crème': ['0.png', '1.png', '2.png']}, 'NFD')
  with pytest.raises(data.DataError, match=rf"^{root} holds two class folders named 'crème', "
                     'one in Unicode NFC and one in NFD .*merge them into one folder'):
    data.builder_for(own_cfg(root, tmp_path / 'tfds'))


# ------------------------------------------------------------------------------- copies


def with_copies(root, copies: dict, per_class=10):
  """make_unsplit's folder, plus for {class: [(i, n)]} n byte-identical copies of its
  image i, named as a download or a file manager names them ('3 (1).png', 'copy of 3.png')."""
  make_unsplit(root, per_class=per_class)
  for c, items in copies.items():
    for i, n in items:
      for k in range(n):
        name = f'{i} ({k + 1}).png' if k % 2 == 0 else f'copy {k} of {i}.png'
        shutil.copyfile(root / c / f'{i}.png', root / c / name)
  return root


def assert_copies_together(cfg, want_grouped):
  files, record = image_folder._split_folder(cfg, cfg.name)  # pylint: disable=protected-access
  where = {}  # content digest -> {(class, part)}.
  for part, classes in files.items():
    for c, paths in classes.items():
      assert paths, (part, c)  # every non-zero part holds every class.
      for p in paths:
        with open(p, 'rb') as f:
          where.setdefault((c, f.read()), set()).add(part)
  assert all(len(ps) == 1 for ps in where.values())  # no copy outside its image's part.
  assert record['grouped'] == want_grouped and record['copies'] == 'together, across classes'
  return files, record


COPIES = {
    'one copy each of two images': {'ant': [(0, 1), (3, 1)]},
    'many copies of one image': {'bee': [(4, 5)]},
    'copies in every class': {c: [(i, 1) for i in range(0, 10, 2)] for c in CLASSES},
    'the issue: 6 of 18 copies': {c: [(i, 1) for i in range(6)] for c in CLASSES},
}


@pytest.mark.parametrize('case', sorted(COPIES))
@pytest.mark.parametrize('fractions', [(0.8, 0.1, 0.1), (0.5, 0.25, 0.25), (0.7, 0, 0.3)])
def test_byte_identical_copies_land_in_one_part(case, fractions, tmp_path):
  root = with_copies(tmp_path / 'images', COPIES[case])
  grouped = sum(n for items in COPIES[case].values() for _, n in items)
  for seed in range(4):
    cfg = own_cfg(root, tmp_path / 'tfds', split_seed=seed, split_fractions=fractions)
    files, record = assert_copies_together(cfg, grouped)
    counts = {p: sum(map(len, classes.values())) for p, classes in files.items()}
    assert record['counts'] == counts and sum(counts.values()) == 30 + grouped


def test_copies_are_noted_and_recorded_end_to_end(tmp_path, capsys):
  root = with_copies(tmp_path / 'images', {'ant': [(1, 2)], 'cat': [(7, 1)]})
  builder = data.builder_for(own_cfg(root, tmp_path / 'tfds'))
  assert data.split_record(builder)['grouped'] == 3
  err = capsys.readouterr().err
  assert re.search(rf'note: {root}: 3 file\(s\) are byte-identical copies of another image of '
                   r'their class \(e\.g\. ant/.*\.png = ant/.*\.png\); each is kept in the split '
                   'of its image, so no test image is trained on', err), err
  data.builder_for(own_cfg(root, tmp_path / 'tfds'))  # read from the cache: said again.
  assert 'byte-identical copies' in capsys.readouterr().err


def test_without_copies_the_cut_is_the_part_sizes():
  """`_group_parts` of single images is the cut of `_part_sizes`; with groups, every
  non-zero part gets a group, and the parts are filled in order."""
  group_parts = image_folder._group_parts  # pylint: disable=protected-access
  for n in range(3, 40):
    for fractions in ((0.8, 0.1, 0.1), (0.5, 0.25, 0.25), (0.9, 0, 0.1), (0.98, 0.01, 0.01)):
      sizes = image_folder._part_sizes(n, fractions)  # pylint: disable=protected-access
      assert group_parts([1] * n, fractions) == sum(([i] * s for i, s in enumerate(sizes)), [])
  rng = np.random.default_rng(0)
  for _ in range(300):
    groups = list(rng.integers(1, 5, rng.integers(3, 15)))
    got = group_parts(groups, (0.6, 0.2, 0.2))
    assert got == sorted(got) and set(got) == {0, 1, 2}, (groups, got)


def test_copies_across_classes_are_noted_not_refused(tmp_path, capsys):
  root = make_unsplit(tmp_path / 'images', per_class=6)
  shutil.copyfile(root / 'ant' / '2.png', root / 'bee' / 'same_as_ant.png')
  shutil.copyfile(root / 'cat' / '5.png', root / 'ant' / 'cat_image.png')
  builder = data.builder_for(own_cfg(root, tmp_path / 'tfds'))
  assert sum(s.num_examples for s in builder.info.splits.values()) == 20
  err = capsys.readouterr().err
  assert re.search(rf'note: {root}: 2 image\(s\) are in more than one class folder \(e\.g\. '
                   r'\w+/[\w.]+ = \w+/[\w.]+\): the same picture under two labels; check the '
                   'labelling', err), err


def test_a_class_of_too_few_distinct_images_is_named(tmp_path):
  root = make_unsplit(tmp_path / 'images', per_class=4)
  for i in (1, 2):  # cat: 4 images, 2 distinct (0, 1, 2 the same).
    shutil.copyfile(root / 'cat' / '0.png', root / 'cat' / f'{i}.png')
  before = sorted(os.listdir(tmp_path))
  with pytest.raises(data.DataError, match=(
      rf"^{root} has no train/ and test/ folders, so every class is split into train, "
      r"validation, test .* needs at least 3 images in every class, but class 'cat' has 4 \(2 "
      r"distinct: byte-identical copies stay together\): add images to it")):
    data.builder_for(own_cfg(root, tmp_path / 'tfds'))
  assert sorted(os.listdir(tmp_path)) == before  # nothing cached.
  data.builder_for(own_cfg(root, tmp_path / 'tfds', split_fractions=(0.8, 0, 0.2)))  # 2 parts.


# -------------------------------------------------------------- copies across classes


def copy_across(root, copies: dict):
  """For {(class, i): [classes]}, a byte-identical copy of root/class/i.png in each of those
  classes, named '<class>_<i>.png' (the same picture under two labels)."""
  for (c, i), to in copies.items():
    for d in to:
      shutil.copyfile(root / c / f'{i}.png', root / d / f'{c}_{i}.png')
  return root


def assert_across_classes_together(files, fractions):
  """Every content's images (in any class) in one part; every non-zero part holding every
  class; each class's part sizes within 1 of `_part_sizes` of its image count. Returns the
  images kept in the part of a copy in a class before theirs (NFC name order)."""
  where, classes_of, counts = {}, {}, {}
  for part, classes in files.items():
    for c, paths in classes.items():
      assert paths, (part, c)
      counts.setdefault(c, {})[part] = len(paths)
      for p in paths:
        with open(p, 'rb') as f:
          content = f.read()
        where.setdefault(content, set()).add(part)
        classes_of.setdefault(content, []).append(unicodedata.normalize('NFC', c))
  split = {k: ps for k, ps in where.items() if len(ps) > 1}
  assert not split, [(sorted(classes_of[k]), sorted(ps)) for k, ps in split.items()]
  parts = [p for p, f in zip(data.SPLIT_PARTS, fractions) if f > 0]
  for c, got in counts.items():
    want = image_folder._part_sizes(sum(got.values()), fractions)  # pylint: disable=protected-access
    assert all(abs(got[p] - want[data.SPLIT_PARTS.index(p)]) <= 1 for p in parts), (c, got, want)
  return sum(len(cs) - cs.count(min(cs)) for cs in classes_of.values())


ACROSS = {  # (copies within a class as with_copies takes them, copies across classes).
    'a copy in 2 classes': ({}, {('ant', 2): ['bee']}),
    'a copy in 3 classes': ({}, {('bee', 5): ['ant', 'cat']}),
    'several copies': ({}, {('ant', 1): ['bee'], ('cat', 5): ['ant'], ('bee', 3): ['cat'],
                            ('bee', 7): ['ant']}),
    'copies within and across classes': ({'bee': [(4, 2)], 'cat': [(1, 1)]},
                                         {('bee', 4): ['cat'], ('cat', 1): ['ant'],
                                          ('ant', 6): ['bee', 'cat']}),
}


@pytest.mark.parametrize('case', sorted(ACROSS))
@pytest.mark.parametrize('fractions', [(0.8, 0.1, 0.1), (0.5, 0.25, 0.25), (0.7, 0, 0.3)])
def test_copies_across_classes_land_in_one_part(case, fractions, tmp_path):
  within, across = ACROSS[case]
  root = copy_across(with_copies(tmp_path / 'images', within), across)
  grouped = sum(n for items in within.values() for _, n in items)
  for seed in range(4):
    cfg = own_cfg(root, tmp_path / 'tfds', split_seed=seed, split_fractions=fractions)
    files, record = image_folder._split_folder(cfg, cfg.name)  # pylint: disable=protected-access
    pinned = assert_across_classes_together(files, fractions)
    assert record['pinned'] == pinned > 0 and record['grouped'] == grouped, (seed, record)
    assert record['copies'] == 'together, across classes'


# Two pictures under two labels each, as (class, file) pairs: the original, then its copy.
NAMED_ACROSS = ((('éa', 'é3.png'), ('f', 'copie_é3.png')),
                (('f', 'é5.png'), ('éa', 'côté.png')))


def test_nfc_and_nfd_copies_across_classes_split_identically(tmp_path):
  """'éa' sorts after 'f' in NFC, before it in NFD: the class that decides a shared
  picture's part is the first by NFC name whatever form the folder was written in."""
  names = {c: [f'é{i}.png' for i in range(8)] for c in ('éa', 'f')}
  roots = []
  for form in ('NFC', 'NFD'):
    root = make_named(tmp_path / form, names, form)
    nf = lambda c, f, root=root, form=form: root / unicodedata.normalize(form, c) / (
        unicodedata.normalize(form, f))
    for original, copy in NAMED_ACROSS:
      shutil.copyfile(nf(*original), nf(*copy))
    roots.append(root)
  for seed in range(4):
    for fractions in ((0.5, 0.25, 0.25), (0.6, 0, 0.4)):
      a, b = (own_cfg(r, tmp_path / 'tfds', split_seed=seed, split_fractions=fractions)
              for r in roots)
      assert parts(a) == parts(b), (seed, fractions)
      files, _ = image_folder._split_folder(a, a.name)  # pylint: disable=protected-access
      assert assert_across_classes_together(files, fractions) == 2
  records = [data.split_record(data.builder_for(own_cfg(r, tmp_path / 'tfds'))) for r in roots]
  assert records[0] == records[1] and records[0]['pinned'] == 2  # the digest too.


def test_copies_across_classes_name_their_part_in_the_note(tmp_path, capsys):
  root = copy_across(make_unsplit(tmp_path / 'images'), {('ant', 0): ['bee', 'cat'],
                                                          ('cat', 4): ['bee']})
  cfg = own_cfg(root, tmp_path / 'tfds')
  builder = data.builder_for(cfg)
  files, _ = image_folder._split_folder(cfg, str(root))  # pylint: disable=protected-access
  part_of = {f'{c}/{os.path.basename(p)}': part for part, classes in files.items()
             for c, ps in classes.items() for p in ps}
  assert {part_of[n] for n in ('ant/0.png', 'bee/ant_0.png', 'cat/ant_0.png')} == {
      'validation'}  # ant/0.png's part in PINNED: ant comes first.
  shared = part_of['bee/cat_4.png']  # bee comes before cat: bee's split places it.
  assert part_of['cat/4.png'] == shared and data.split_record(builder)['pinned'] == 3
  err = capsys.readouterr().err
  assert (f'note: {root}: 2 image(s) are in more than one class folder (e.g. ant/0.png = '
          'bee/ant_0.png = cat/ant_0.png): the same picture under two labels; check the '
          'labelling. Each stays in one part with all its copies (where the first of its '
          'classes by name put it), so no test image is trained on: ant/0.png = bee/ant_0.png '
          f'= cat/ant_0.png in validation; bee/cat_4.png = cat/4.png in {shared}\n') in err, err


def test_pinned_groups_keep_their_part_and_the_rest_fill_around_them():
  """`_group_parts` with pinned groups: they keep their part and count towards it; with no
  part pinned over its share, single images fill every part to `_part_sizes` exactly;
  every non-zero part gets a group wherever the free groups suffice."""
  group_parts = image_folder._group_parts  # pylint: disable=protected-access
  rng = np.random.default_rng(0)
  for _ in range(500):
    fractions = ((0.8, 0.1, 0.1), (0.5, 0.25, 0.25), (0.7, 0, 0.3))[rng.integers(3)]
    n = int(rng.integers(3, 30))
    nonzero = [i for i, f in enumerate(fractions) if f > 0]
    targets = image_folder._part_sizes(n, fractions)  # pylint: disable=protected-access
    pinned = [int(rng.choice(nonzero)) if rng.random() < 0.3 else None for _ in range(n)]
    got = group_parts([1] * n, fractions, pinned)
    assert all(p is None or g == p for g, p in zip(got, pinned)), (pinned, got)
    free = [g for g, p in zip(got, pinned) if p is None]
    assert free == sorted(free)  # the free groups fill the parts in order.
    sizes = [got.count(i) for i in range(3)]
    if all(pinned.count(i) <= targets[i] for i in range(3)):
      assert sizes == targets, (pinned, got)
    empty = [i for i in nonzero if i not in pinned]
    assert all(sizes[i] for i in nonzero) or len(free) < len(empty), (pinned, got)


def test_a_class_left_without_a_test_image_by_its_copies_is_noted(tmp_path, capsys):
  """zebra: two pictures of ant's training part (PINNED) and one of its own: its free image
  fills validation, and test holds no zebra; the copies stay together all the same."""
  root = make_unsplit(tmp_path / 'images')
  (root / 'zebra').mkdir()
  copy_across(root, {('ant', 1): ['zebra'], ('ant', 2): ['zebra']})
  image(root / 'zebra' / 'own.png', [9, 9])
  cfg = own_cfg(root, tmp_path / 'tfds')
  files, record = image_folder._split_folder(cfg, str(root))  # pylint: disable=protected-access
  got = {p: sorted(os.path.basename(x) for x in classes['zebra']) for p, classes in files.items()}
  assert got == {'train': ['ant_1.png', 'ant_2.png'], 'validation': ['own.png'], 'test': []}
  assert record['pinned'] == 2
  data.builder_for(cfg)
  assert (f"note: {root}: class 'zebra' has no image in test: 2 of its 3 distinct images are "
          'byte-identical to images of classes before it and kept in their part '
          '(zebra/ant_2.png = ant/2.png in train; zebra/ant_1.png = ant/1.png in train), so '
          'test measures the other classes only\n') in capsys.readouterr().err


def test_a_class_left_without_a_training_image_by_its_copies_is_refused(tmp_path):
  """zebra: only pictures of ant's and bee's validation and test images (PINNED): keeping
  them with their copies leaves zebra nothing to train on, a DataError naming them."""
  root = make_unsplit(tmp_path / 'images')
  (root / 'zebra').mkdir()
  copy_across(root, {('ant', 0): ['zebra'], ('ant', 3): ['zebra'], ('bee', 4): ['zebra']})
  before = sorted(os.listdir(tmp_path))
  with pytest.raises(data.DataError, match=re.escape(
      f"{root} has no train/ and test/ folders, so it is split per class, and byte-identical "
      "images stay in one part, across classes too: class 'zebra' has no image in train: 3 of "
      'its 3 distinct images are byte-identical to images of classes before it and kept in '
      'their part (zebra/ant_0.png = ant/0.png in validation; zebra/bee_4.png = bee/4.png in '
      'validation; zebra/ant_3.png = ant/3.png in test). A class needs training images: '
      'remove or relabel the copies (the same picture under two labels), or add images')):
    data.builder_for(own_cfg(root, tmp_path / 'tfds'))
  assert sorted(os.listdir(tmp_path)) == before  # nothing cached.
  image(root / 'zebra' / 'own.png', [9, 9])  # the fix the message names: zebra's own image.
  cfg = own_cfg(root, tmp_path / 'tfds')
  files, _ = image_folder._split_folder(cfg, str(root))  # pylint: disable=protected-access
  assert [os.path.basename(p) for p in files['train']['zebra']] == ['own.png']


# ----------------------------------------------------------------------- file-system faults


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
  """A TMPDIR of this test's own, where the views are made first."""
  tmp = tmp_path / 'tmpdir'
  tmp.mkdir()
  monkeypatch.setattr(tempfile, 'tempdir', str(tmp))
  return tmp


def views_made_in(tmp):
  """The temporary views (`msmgan_view_*`) left in the TMPDIR `tmp`. (TFDS leaves an empty
  `tmp*tfds` folder there for every builder it makes, whatever happens: not ours.)"""
  return [n for n in os.listdir(tmp) if n.startswith('msmgan_view_')]


LONG = b'a' * 244 + b'\xe9x.png'  # 250 bytes, a Latin-1 byte: its stand-in must be shortened.


def _long_file(root):
  make_unsplit(root, per_class=4)
  os.rename(bytes(root / 'ant' / '0.png'), bytes(root / 'ant') + b'/' + LONG)


def _long_class(root):
  make_unsplit(root, per_class=4)
  os.rename(bytes(root / 'bee'), bytes(root) + b'/' + b'b' * 250 + b'\xe9')


def _long_split(root):
  make_unsplit(root / 'train', per_class=3)
  make_unsplit(root / 'test', per_class=2)
  os.rename(bytes(root / 'test' / 'cat' / '1.png'), bytes(root / 'test' / 'cat') + b'/' + LONG)


@pytest.mark.parametrize('make', [_long_file, _long_class, _long_split])
def test_names_longer_than_the_view_can_hold_are_read(make, tmp_path, private_tmp):
  """A 250-byte non-UTF-8 name: its stand-in in the view keeps the tag and fits NAME_MAX."""
  root = tmp_path / 'images'
  make(root)
  builder = data.builder_for(own_cfg(root, tmp_path / 'tfds'))
  assert sum(s.num_examples for s in builder.info.splits.values()) == (
      15 if make is _long_split else 12)  # every image, the long-named one too.
  for _, dirnames, filenames in os.walk(builder.data_dir):
    assert all(len(os.fsencode(n)) <= data.NAME_MAX for n in dirnames + filenames)
  assert not views_made_in(private_tmp)
  link_name = image_folder._link_name  # pylint: disable=protected-access
  stand_in = link_name(os.fsdecode(LONG))
  assert len(stand_in.encode()) == data.NAME_MAX
  assert re.fullmatch(r'a+_[0-9a-f]{8}\.png', stand_in)  # the tag kept, the stem shortened ...
  assert stand_in != link_name(os.fsdecode(LONG[:-6] + b'\xe8x.png'))  # ... and distinct.


def _dangling(root):
  make_unsplit(root, per_class=4)
  os.symlink(root / 'elsewhere' / 'gone.png', root / 'ant' / 'gone.png')
  return root / 'ant' / 'gone.png', (rf'{{path}} is a symbolic link to {root}/elsewhere/gone.png, '
                                     'which does not exist; restore what it points to or remove '
                                     'the link')


def _dangling_in_split(root):
  make_unsplit(root / 'train', per_class=3)
  make_unsplit(root / 'test', per_class=2)
  os.symlink('/nonexistent.png', root / 'test' / 'bee' / 'x.png')
  return root / 'test' / 'bee' / 'x.png', '{path} is a symbolic link to /nonexistent.png'


def _folder_named_like_an_image(root):
  make_unsplit(root, per_class=4)
  (root / 'cat' / 'x.png').mkdir()
  return root / 'cat' / 'x.png', ('{path} is a folder named like an image; rename it or move it '
                                  'out of its class folder')


def _fifo(root):
  make_unsplit(root, per_class=4)
  os.mkfifo(root / 'bee' / 'stream.png')  # reading it would block for ever.
  return root / 'bee' / 'stream.png', (r'{path} is named like an image but is not a regular file '
                                       r'\(a pipe, socket or device\); remove it or rename it')


def _unreadable(root, monkeypatch):
  """Permission denied on one image (tests run as root, so chmod cannot deny it: `open`)."""
  make_unsplit(root, per_class=4)
  denied, real = str(root / 'ant' / '2.png'), open

  def fake(path, *args, **kwargs):
    if os.fspath(path) == denied:
      raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), denied)
    return real(path, *args, **kwargs)
  monkeypatch.setattr('builtins.open', fake)
  return denied, (r'{path} cannot be read \(Permission denied\); make it readable \(e\.g\. '
                  rf'chmod -R a\+rX {root}\) or remove it')


def _class_vanishes(root, monkeypatch):
  """A class folder is moved away between listing the folder and listing the class."""
  make_unsplit(root, per_class=4)
  real = os.listdir

  def fake(path='.'):
    if os.fspath(path) == str(root / 'bee'):
      shutil.rmtree(path)
    return real(path)
  monkeypatch.setattr(os, 'listdir', fake)
  return root / 'bee', (rf'{{path}} vanished while {root} was read \(No such file or directory\); '
                        'wait until whatever moves, syncs or unpacks the folder has finished, then '
                        'rerun')


def _file_vanishes(root, monkeypatch):
  """An image is deleted between listing its class and reading its bytes."""
  make_unsplit(root, per_class=4)
  gone, real = str(root / 'cat' / '3.png'), open

  def fake(path, *args, **kwargs):
    if os.fspath(path) == gone and os.path.exists(gone):
      os.remove(gone)
    return real(path, *args, **kwargs)
  monkeypatch.setattr('builtins.open', fake)
  return gone, rf'{{path}} vanished while {root} was read \(No such file or directory\)'


def _link_fails(root, monkeypatch):
  """The view's file system refuses a link half-way (ENAMETOOLONG, ENOSPC): no half view."""
  make_unsplit(root, per_class=4)
  real, made = os.symlink, []

  def fake(src, dst, *args, **kwargs):
    if len(made) == 5:
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), dst)
    made.append(dst)
    return real(src, dst, *args, **kwargs)
  monkeypatch.setattr(os, 'symlink', fake)
  return None, (r'could not make the folder of links to the images of {root} at .*/msmgan_view_'
                r'\w+/.*\.png \(No space left on device\); set --config.dataset.data_dir to a '
                'writable folder with free space')


def _data_dir_under_a_file(root, monkeypatch):
  """The view cannot be placed in the data dir (here a folder under a file): the temporary
  one made first is removed."""
  del monkeypatch
  make_unsplit(root, per_class=4)
  (root.parent / 'tfds').write_text('a file where the data dir should be\n')
  return None, (r'could not make the folder of links to the images of {root} at {tfds}\S* '
                r'\(Not a directory\); set --config.dataset.data_dir to a writable folder')


FAULTS = [_dangling, _dangling_in_split, _folder_named_like_an_image, _fifo, _unreadable,
          _class_vanishes, _file_vanishes, _link_fails]


def run_main(root, tmp_path, capsys, data_dir=None):
  capsys.readouterr()
  code = main.run(['msmgan_jax.main', '--config', 'configs/default.py:smoke',
                   f'--config.dataset.name={root}',
                   f'--config.dataset.data_dir={data_dir or tmp_path / "tfds"}',
                   '--config.dataset.train_split=train', '--workdir', str(tmp_path / 'run')])
  return code, capsys.readouterr().err


@pytest.mark.parametrize('make', FAULTS, ids=lambda f: f.__name__.strip('_'))
def test_file_system_faults_exit_2_naming_the_path_and_the_fix(make, tmp_path, private_tmp,
                                                               monkeypatch, capsys):
  root = tmp_path / 'images'
  args = (root, monkeypatch) if make.__code__.co_argcount == 2 else (root,)
  path, message = make(*args)
  code, err = run_main(root, tmp_path, capsys)
  assert code == 2 and err.startswith('error: ') and 'Traceback' not in err, err
  (line,) = [l for l in err.splitlines() if l.startswith('error:')]
  assert re.search(message.format(path=re.escape(str(path)), root=re.escape(str(root))), line), line
  assert 'resume' not in err and 'checkpoint' not in err
  assert not views_made_in(private_tmp)  # no temporary view left.
  cache = tmp_path / 'tfds' / data.CACHE_DIR
  assert not (cache / 'folders').exists() or not os.listdir(cache / 'folders')
  assert not (tmp_path / 'run').exists()
  if make is not _link_fails:  # the folder could not be read: no split of it cached either.
    assert not list(cache.glob('split-*'))


def test_a_data_dir_where_the_view_cannot_go_exits_2_leaving_no_temporary_folder(
    tmp_path, private_tmp, monkeypatch, capsys):
  root = tmp_path / 'images'
  _, message = _data_dir_under_a_file(root, monkeypatch)
  code, err = run_main(root, tmp_path, capsys, data_dir=tmp_path / 'tfds' / 'sub')
  assert code == 2 and 'Traceback' not in err, err
  (line,) = [l for l in err.splitlines() if l.startswith('error:')]
  assert re.search(message.format(root=re.escape(str(root)),
                                  tfds=re.escape(str(tmp_path / 'tfds' / 'sub'))), line), line
  assert not views_made_in(private_tmp)


@pytest.mark.parametrize('committed, hint', [
    ((), 'no checkpoint was written yet: fix the cause and rerun the same command'),
    (('teacher/5',), 'the last checkpoint is intact: fix the cause and rerun the same command '
                     'to resume'),
])
def test_a_resume_hint_only_where_a_checkpoint_exists(committed, hint, tmp_path, monkeypatch,
                                                      capsys):
  """An OSError no layer explained (here an I/O error) exits 1 with one line; it says the
  run resumes only where the workdir holds a committed checkpoint."""
  from msmgan_jax.training import train  # pylint: disable=g-import-not-at-top
  for c in committed + ('student/3.orbax-checkpoint-tmp-12',):  # a save cut short: none.
    (tmp_path / 'run' / 'checkpoints' / c).mkdir(parents=True)

  def fail(*_, **__):
    raise OSError(errno.EIO, os.strerror(errno.EIO), '/data/x.png')
  monkeypatch.setattr(train, 'train_and_evaluate', fail)
  capsys.readouterr()
  code = main.run(['msmgan_jax.main', '--config', 'configs/default.py:smoke', '--workdir',
                   str(tmp_path / 'run')])
  err = capsys.readouterr().err
  assert code == 1 and err == (f"error: [Errno 5] Input/output error: '/data/x.png'; {hint}\n")


# ------------------------------------------------------------------------ small folders


@pytest.mark.parametrize('num_train, batch_size, steps, passes', [
    (192, 128, 16, 11),   # a 240-image folder's train part (0.8) at the default batch size.
    (24, 8, 18, 6),       # tests/test_own_data.py's folder.
    (1000, 128, 23, 3),   # 7.8 steps a pass: 3 whole passes are 23 steps.
    (2048, 128, 16, 1),   # exactly the floor: one pass.
    (4000, 128, 31, 1),   # above it: unchanged.
    (60_000, 128, 468, 1),
])
def test_a_small_training_sets_teacher_gets_whole_passes_up_to_the_floor(
    num_train, batch_size, steps, passes):
  cfg = config.defaults()
  cfg.batch_size = batch_size
  assert loop.teacher_epoch_steps(cfg, num_train) == (steps, passes)
  assert steps >= loop.MIN_EPOCH_STEPS and steps == passes * num_train // batch_size
  assert passes == 1 or (passes - 1) * num_train // batch_size < loop.MIN_EPOCH_STEPS
  info = data.DatasetInfo('x', 3, (12, 12, 3), num_train, 30)
  assert loop.steps_per_epoch(cfg, info, teacher=True) == steps
  assert loop.steps_per_epoch(cfg, info) == max(1, num_train // batch_size)  # the student's.


def test_a_240_image_folders_teacher_trains_the_floor_and_is_told(tmp_path, capsys):
  """The issue's folder under configs/kd_fmnist_full.py's settings (kd, 15 teacher epochs,
  batch 128): 16 steps an epoch (11 passes over its 192 training images), where it was 1."""
  root = make_unsplit(tmp_path / 'images', per_class=80)
  cfg = config.defaults()
  cfg.method = 'kd'
  cfg.dataset = own_cfg(root, tmp_path / 'tfds', train_split='train', pipeline='device')
  info, _, _ = data.load(cfg.dataset, batch_size=cfg.batch_size, eval_batch_size=100)
  assert info.num_train == 192 and cfg.teacher.epochs == 15
  capsys.readouterr()
  assert loop.steps_per_epoch(cfg, info, teacher=True) == 16
  err = capsys.readouterr().err
  assert ('warning: the teacher trains only 240 steps (teacher.epochs=15 x 16 batches of 11 '
          'passes over 192 training images, the floor of 16 steps per epoch at batch_size 128)'
          ) in err, err
  assert '--config.teacher.epochs=32 (512 steps)' in err
  cfg.teacher.epochs = 32
  assert loop.budget_notes(cfg, 192, teacher=True)[0] == (
      "note: the teacher's epochs are 16 batches of 11 passes over 192 training images, the "
      'floor of 16 steps per epoch at batch_size 128 (512 steps in all).')


@pytest.mark.slow
def test_a_small_folders_teacher_trains_the_floor_end_to_end(tmp_path):
  """A teacher-only run on a 21-image folder at batch 8 (15 training images, 1 step a
  pass): 2 epochs of 16 steps (9 passes each), its last checkpoint at step 32."""
  from msmgan_jax.training import train  # pylint: disable=g-import-not-at-top
  root = make_unsplit(tmp_path / 'images', per_class=7)
  cfg = config.finalize(config.defaults(), 'smoke')
  cfg.method, cfg.teacher.model, cfg.batch_size, cfg.eval_batch_size = 'teacher', 'cnn', 8, 8
  cfg.dataset = dataset_cfg(name=str(root), data_dir=str(tmp_path / 'tfds'), train_split='train',
                            shuffle_buffer=64)
  train.train_and_evaluate(cfg, str(tmp_path / 'run'))
  assert os.listdir(tmp_path / 'run' / 'checkpoints' / 'teacher') == ['32']
  assert sorted(os.listdir(tmp_path / 'run' / 'checkpoints' / 'anchors')) == ['1', '2']
