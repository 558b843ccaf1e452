"""Data source `image_folder`: your own images, one sub-folder per class, split or unsplit.

It claims any other existing folder (a registered TFDS name and a prepared TFDS dataset
directory are claimed before it): an image folder `DIR/{train,test}/CLASS/*.{png,jpg,jpeg}`
read by TFDS's `ImageFolder` after one check that every image decodes; an unsplit one,
`DIR/CLASS/*.png`, is split per class into train, validation and test by a seeded rule
(`_split_folder`, SPLIT_RULE) with `dataset.split_fractions` and `dataset.split_seed`
(checked by `check`). TFDS reads a clean view of the folder (`_clean_view`: symbolic links
to exactly its classes and images) made in the TFDS data dir; the split and the decode
check are cached there (`common.cached`) while the files stay the same.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import glob
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import unicodedata
from typing import Callable, Optional

from msmgan_jax.data.common import CACHE_DIR, cached, data_root, registered, tf, tfds
from msmgan_jax.data.sources.base import SPLIT_ATTR, DataSource, require
from msmgan_jax.errors import DataError

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')  # the files tfds.folder_dataset.ImageFolder reads.
SPLIT_PARTS = ('train', 'validation', 'test')  # an unsplit image folder's splits (split_fractions).
SPLIT_RULE = 'stratified-v2'  # the name its record gives the rule of `_split_folder`.
SPLIT_COPIES = 'together, across classes'  # where that rule keeps byte-identical images.
NAME_MAX = 255  # the longest file name (in bytes) of common file systems: the view's fit it.


def _split_names(cfg) -> tuple:
  """The split folders an image folder needs: those of dataset.train_split and test_split."""
  return tuple(dict.fromkeys(cfg[f].partition('[')[0] for f in ('train_split', 'test_split')))


def _ignored(name: str) -> bool:
  """Hidden and system entries: `.ipynb_checkpoints`, `.DS_Store`, `._photo.png` (macOS
  AppleDouble files), `__MACOSX`, `__pycache__`: never a class, never an image."""
  return name.startswith('.') or name.startswith('__')


def _image_files(folder: str, splits: tuple, notes: Optional[list] = None) -> dict:
  """{split: {class: [image paths]}} of an image folder; DataError when its layout is wrong.

  A class is a sub-folder of a split folder, named by its name in Unicode NFC (`_nfc`: a
  folder copied from macOS, NFD, is the same class); an image is a file in it ending in
  .png, .jpg or .jpeg (any case). Hidden and system entries (`_ignored`) are skipped, and
  named in `notes` when given. Any name the OS accepts is read (not only UTF-8 ones). A
  class with no image in the first split (training) is refused; in a later split (test) it
  gets a note: that split measures the other classes only. An entry named like an image
  that is no readable file (see `_class_files`) is a DataError naming it.
  """
  files = {}
  for split in splits:
    split_dir = os.path.join(folder, split)
    if not os.path.isdir(split_dir):
      prepared = sorted(glob.glob(os.path.join(glob.escape(folder), '*', 'dataset_info.json')))
      hint = f'; did you mean {os.path.dirname(prepared[-1])}?' if prepared else ''
      raise DataError(f'{folder} is neither a prepared TFDS dataset directory (it holds no '
                      f'dataset_info.json{hint}) nor an image folder (it has no {split}/ '
                      f'sub-folder). An image folder holds {" and ".join(f"{s}/" for s in splits)}'
                      ', each with one sub-folder of images (.png, .jpg, .jpeg) per class, or '
                      'only the class sub-folders (then it is split by dataset.split_fractions).')
    files[split] = _class_files(split_dir, f'{split}/', notes, order_note=split == splits[0])
    empty = [c for c, paths in files[split].items() if not paths]
    if empty and split == splits[0]:
      raise DataError(f'the class folder(s) {empty} of {split_dir} hold no image (.png, .jpg, '
                      '.jpeg): a class needs training images; add some or remove the folder')
    if empty and notes is not None:
      notes.append(f'{split}/: the class folder(s) {empty} hold no image, so this split '
                   'measures the other classes only')
  for a, b in zip(splits, splits[1:]):
    only_a, only_b = sorted(set(files[a]) - set(files[b])), sorted(set(files[b]) - set(files[a]))
    if only_a or only_b:
      raise DataError(f'the class folders of {a}/ and {b}/ in {folder} differ (only in {a}/: '
                      f'{only_a}, only in {b}/: {only_b}); give both splits the same classes')
  return files


def _class_files(where: str, rel: str, notes: Optional[list], order_note: bool = True) -> dict:
  """{class: [image paths]} of the class sub-folders of `where` (`rel`: how notes name it,
  'train/' or '' for an unsplit folder), classes named in Unicode NFC (`_nfc`); DataError
  when it holds fewer than 2 classes, two folders whose names are one class in NFC, or an
  entry named like an image that is not a file (`_not_a_file`). Hidden and system entries
  are skipped (and noted, see `_image_files`); with `order_note`, NFD class names whose
  order differs from the names as written are noted with both orders."""
  entries = sorted(os.listdir(where))
  skipped = [c for c in entries if _ignored(c) and os.path.isdir(os.path.join(where, c))]
  folders = [c for c in entries if not _ignored(c) and os.path.isdir(os.path.join(where, c))]
  if notes is not None and skipped:
    notes.append(f'{rel}: ' * bool(rel) + f'skipped the hidden or system folder(s) {skipped}, '
                 'not classes')
  if len(folders) < 2:
    also = f' (and the hidden or system folder(s) {skipped}, never classes)' if skipped else ''
    raise DataError(f'{where} holds {len(folders)} class folder(s) {folders}{also}; a '
                    'classifier needs at least 2: put the images of each class in a '
                    'sub-folder of its own')
  files = {}
  for c in folders:
    if _nfc(c) in files:
      raise DataError(f'{where} holds two class folders named {_nfc(c)!r}, one in Unicode NFC '
                      'and one in NFD (as macOS writes names): merge them into one folder')
    names = sorted(os.listdir(os.path.join(where, c)))
    files[_nfc(c)] = [os.path.join(where, c, f) for f in names
                      if not _ignored(f) and f.lower().endswith(IMAGE_EXTENSIONS)]
    for path in files[_nfc(c)]:
      if not os.path.isfile(path):  # follows links: False for a dangling one.
        raise DataError(_not_a_file(path))
    hidden = [f for f in names if _ignored(f)]
    if notes is not None and hidden:
      notes.append(f'{rel}{c}/: skipped {len(hidden)} hidden or system file(s)')
    if notes is not None:
      notes.extend(_unread_notes(os.path.join(where, c), f'{rel}{c}/', names))
  if notes is not None and order_note and [_nfc(c) for c in folders] != sorted(files):
    notes.append(
        f'{rel}: ' * bool(rel) + 'some class folder names are in Unicode NFD (as macOS '
        'writes them), and the classes are numbered in the order of their NFC names: '
        f'{", ".join(f"{i} {c}" for i, c in enumerate(sorted(files)))}; a tool that sorts '
        f'the names as written (Keras, torchvision) numbers them {", ".join(map(_nfc, folders))}'
        ', so a teacher trained that way has its classes in another order')
  return dict(sorted(files.items()))


def _unread_notes(where: str, rel: str, names: list) -> list:
  """Notes on the entries of class folder `where` (`names`, listed) that are neither images
  nor hidden or system entries: sub-folders (torchvision's ImageFolder and Keras read the
  images in them; this reader does not) and files of other kinds (.webp, .bmp, .txt)."""
  def listed(items):
    return ', '.join(items[:3]) + (f' and {len(items) - 3} more' if len(items) > 3 else '')
  odd = [n for n in names if not _ignored(n) and not n.lower().endswith(IMAGE_EXTENSIONS)]
  nested = [n for n in odd if os.path.isdir(os.path.join(where, n))]
  other = [n for n in odd if n not in nested]
  out = []
  if nested:
    out.append(f'{rel}: skipped {len(nested)} sub-folder(s) ({listed(nested)}): images in '
               'folders inside a class folder are not read (torchvision and Keras would '
               'read them); move them up into the class folder to use them')
  if other:
    out.append(f'{rel}: skipped {len(other)} file(s) that are not .png, .jpg or .jpeg '
               f'({listed(other)})')
  return out


def _nfc(name: str) -> str:
  """`name` in Unicode NFC (composed: 'é' one code point, as Linux and Windows write it;
  macOS writes NFD, 'e' and a combining accent), so a folder copied between them keeps its
  names; a name that is not valid UTF-8 (its bytes as surrogates) is returned unchanged."""
  try:
    name.encode('utf-8')
  except UnicodeEncodeError:
    return name
  return unicodedata.normalize('NFC', name)


def _not_a_file(path: str) -> str:
  """What is wrong with `path`, an entry named like an image that is no regular file (or no
  longer there), and the fix."""
  if os.path.islink(path) and not os.path.exists(path):
    return (f'{path} is a symbolic link to {os.readlink(path)}, which does not exist; '
            'restore what it points to or remove the link')
  if os.path.isdir(path):
    return f'{path} is a folder named like an image; rename it or move it out of its class folder'
  if os.path.lexists(path):
    return (f'{path} is named like an image but is not a regular file (a pipe, socket or '
            'device); remove it or rename it')
  return (f'{path} vanished while its folder was read; wait until whatever moves, syncs or '
          'unpacks the folder has finished, then rerun')


@contextlib.contextmanager
def _os_errors_as(explain: Callable[[OSError], str]):
  """Turns an OSError raised inside into a DataError saying `explain(error)`."""
  try:
    yield
  except OSError as e:
    raise DataError(explain(e)) from e


def _read_fault(folder: str) -> Callable[[OSError], str]:
  """`explain` (see `_os_errors_as`) for a file or folder of the image folder `folder`
  that could not be read: which one, why, and the fix."""
  def explain(e: OSError) -> str:
    path = os.fsdecode(e.filename) if e.filename is not None else folder
    if e.errno == errno.ENOENT:
      return (f'{path} vanished while {folder} was read ({e.strerror}); wait until whatever '
              'moves, syncs or unpacks the folder has finished, then rerun')
    if e.errno in (errno.EACCES, errno.EPERM):
      return (f'{path} cannot be read ({e.strerror}); make it readable (e.g. chmod -R a+rX '
              f'{folder}) or remove it')
    return (f'{path} cannot be read ({e.strerror or e}); fix or remove it (or copy the folder '
            'to a local disk), then rerun')
  return explain


def _view_fault(folder: str, root: str) -> Callable[[OSError], str]:
  """`explain` (see `_os_errors_as`) for a failure to make the clean view of `folder` in
  the TFDS data dir `root` (or the temporary folder it is made in)."""
  def explain(e: OSError) -> str:
    path = os.fsdecode(e.filename) if e.filename is not None else root
    return (f'could not make the folder of links to the images of {folder} at {path} '
            f'({e.strerror or e}); set --config.dataset.data_dir to a writable folder with '
            'free space (or free space there), then rerun')
  return explain


def _is_unsplit(folder: str, splits: tuple) -> bool:
  """Whether `folder` is an unsplit image folder (`DIR/CLASS/*.png`): it holds no split
  folder (train/, validation/, test/ or one that `splits` names), no prepared TFDS dataset
  directory and at least one visible sub-folder. Any other folder is read as split (and
  `_image_files` says what it lacks)."""
  if any(os.path.isdir(os.path.join(folder, s)) for s in SPLIT_PARTS + tuple(splits)):
    return False
  if glob.glob(os.path.join(glob.escape(folder), '*', 'dataset_info.json')):
    return False
  return any(not _ignored(e) and os.path.isdir(os.path.join(folder, e))
             for e in os.listdir(folder))


def _part_sizes(n: int, fractions: tuple) -> list:
  """How many of a class's `n` images go to each part: the largest-remainder rounding of
  n x fractions (ties to the earlier part), then one image for each part with a non-zero
  fraction that got none, taken from the largest part. Needs n >= the non-zero parts."""
  total = float(sum(fractions))
  quotas = [round(n * f / total, 9) for f in fractions]  # 9 digits: no float noise.
  sizes = [int(q) for q in quotas]
  order = sorted((i for i, f in enumerate(fractions) if f > 0),
                 key=lambda i: (-(quotas[i] - sizes[i]), i))
  for k in range(n - sum(sizes)):
    sizes[order[k % len(order)]] += 1
  for i, f in enumerate(fractions):
    if f > 0 and sizes[i] == 0:
      sizes[max(range(len(sizes)), key=lambda j: (sizes[j], -j))] -= 1
      sizes[i] = 1
  return sizes


def _split_key(seed: int, label: str, path: str) -> tuple:
  """Where image `path` of class `label` (its NFC name) comes in its class's order for the
  split with `seed`: the SHA-256 of `'{seed}/{class}/{file name}'` with the file name in
  Unicode NFC (`_nfc`; the bytes of one that is not UTF-8), then that name, then the name's
  own bytes (two names equal in NFC)."""
  raw = os.fsencode(os.path.basename(path))
  name = os.fsencode(_nfc(os.path.basename(path)))
  return hashlib.sha256(os.fsencode(f'{seed}/{label}/') + name).digest(), name, raw


def _group_parts(sizes: list, fractions: tuple, pinned: Optional[list] = None) -> list:
  """The part (index into `fractions`) of each of a class's groups of images, in their
  order (`sizes`: images in each; `pinned`: for each group the part it must go to, or None
  for a free one; all free when not given). The pinned groups count towards their part;
  the free groups fill the parts in order, a part taking the next free group until it
  holds its share of `_part_sizes`, and moving on early when the free groups left are
  just enough to give every still empty part after it one. So each part with a non-zero
  fraction gets at least one group wherever the free groups suffice, and with groups of
  one image each, none pinned, the cut is exactly that of `_part_sizes`."""
  targets = _part_sizes(sum(sizes), fractions)
  parts = [i for i, f in enumerate(fractions) if f > 0]
  pinned = pinned or [None] * len(sizes)
  filled = [0] * len(fractions)
  for size, part in zip(sizes, pinned):
    if part is not None:
      filled[part] += size
  left, j, out = pinned.count(None), 0, []
  for size, part in zip(sizes, pinned):
    if part is None:
      while j < len(parts) - 1 and filled[parts[j]] and (
          filled[parts[j]] >= targets[parts[j]]
          or left <= sum(not filled[p] for p in parts[j + 1:])):
        j += 1
      part, left = parts[j], left - 1
      filled[part] += size
    out.append(part)
  return out


def _split_folder(cfg, folder: str, notes: Optional[list] = None) -> tuple:
  """({part: {class: [image paths]}}, the split's record) of an unsplit image folder
  (`DIR/CLASS/*.png`): each class's images divided into the SPLIT_PARTS by
  dataset.split_fractions (train, validation, test) with dataset.split_seed.

  The rule (SPLIT_RULE: stratified, the same files in each part on every machine, whatever
  order the files were made or listed in, whatever Unicode form their names were written
  in): byte-identical images of a class (the same SHA-256 of their bytes, e.g. `img001.png`
  and `img001 (1).png`) form one group, every other image a group of its own; an image's
  key is the SHA-256 of `'{seed}/{class}/{file name}'` (class and file names in Unicode NFC,
  `_split_key`), a group's the smallest key of its images. The classes are split one after
  the other in the order of their NFC names: a class's groups, in the order of their keys,
  fill train, then validation, then test to the sizes of `_part_sizes` (`_group_parts`),
  except that a group byte-identical to images of an earlier class (the same picture
  under two labels) is pinned to the part those went to, and counts towards it. So no
  two byte-identical images are ever in two parts, within a class or across classes;
  without copies across classes every class is split on its own, as this rule did before
  it kept them together, and without any copies each class's cut is that of `_part_sizes`
  exactly. A part with fraction 0 is left out; every other part gets at least one group
  of every class, unless that class's pinned groups leave too few free ones to give it
  one; then the copies still stay together (a test image trained on would make the test
  wrong): a class left without a training image is a DataError naming it and its copies
  (relabel or remove them), one left without a validation or test image gets a note (that
  part measures the other classes only), as for a split folder (`_image_files`). A
  `note:` in `notes` says how many copies were grouped, and which images sit in more than
  one class and the part each was kept in. The split's cache key holds SPLIT_COPIES, so a
  split cached before copies across classes were kept together is not reused (and the
  clean view's name holds the split's digest, `_image_folder`).

  The record (`DatasetInfo.split`, in summary.json and the export): {'rule', 'names':
  'NFC', 'copies': SPLIT_COPIES, 'seed', 'fractions', 'counts': {part: images},
  'grouped': copies kept with their image of the same class, 'pinned': images kept in the
  part of a byte-identical image of an earlier class, 'digest': a SHA-256 of every file's
  'part/class/file name' (NFC), so two runs can tell they saw the same split}.
  Every image is read once for its SHA-256: the split (and its notes) is cached while the
  files stay the same, and nothing is written when it fails. DataError when there are
  fewer than 2 classes, a class has fewer distinct images than the parts with a non-zero
  fraction (naming it), or one gets no training image (above); an OSError reading a file
  is raised as it is.
  """
  fractions = tuple(float(f) for f in cfg.get('split_fractions', (0.8, 0.1, 0.1)))
  seed = int(cfg.get('split_seed', 0))
  classes = _class_files(folder, '', notes)
  key = {'folder': folder, 'files': _fingerprint({'': classes}), 'rule': SPLIT_RULE,
         'copies': SPLIT_COPIES, 'seed': seed, 'fractions': list(fractions)}
  split = cached(cfg, 'split', key, lambda: _split_classes(folder, classes, seed, fractions))
  if notes is not None:
    notes.extend(split['notes'])
  return split['files'], split['record']


def _split_classes(folder: str, classes: dict, seed: int, fractions: tuple) -> dict:
  """{'files', 'record', 'notes'} of the split of `classes` ({class: [paths]}) of the
  unsplit image folder `folder` (see `_split_folder`)."""
  contents = {p: _sha256(p) for paths in classes.values() for p in paths}
  groups = {c: _groups(seed, c, paths, contents) for c, paths in classes.items()}
  needed = sum(f > 0 for f in fractions)
  parts = [p for p, f in zip(SPLIT_PARTS, fractions) if f > 0]
  few = {c: (len(classes[c]), len(g)) for c, g in groups.items() if len(g) < needed}
  if few:
    nested = any(os.path.isdir(os.path.join(folder, e, f)) for e in os.listdir(folder)
                 if _nfc(e) in few for f in os.listdir(os.path.join(folder, e)))
    also = (' (a class folder holding folders: were these meant as the splits? Name them '
            'train/ and test/)') if nested else ''
    one = len(few) == 1
    raise DataError(
        f'{folder} has no train/ and test/ folders, so every class is split into '
        f'{", ".join(parts)} (dataset.split_fractions {fractions}), which needs at least '
        f'{needed} images in every class, but class ' + ', '.join(
            f'{c!r} has {n}' + (f' ({g} distinct: byte-identical copies stay together)'
                                if g < n else '') for c, (n, g) in few.items()) +
        f'{also}: add images to {"it" if one else "them"} or remove '
        f'{"its folder" if one else "their folders"} (or leave a split out with a fraction of 0)')
  files = {p: {c: [] for c in classes} for p in parts}
  placed = {}  # content -> (class, image, part index) of the first class holding it.
  for c in sorted(groups):
    pinned = [placed[contents[g[0]]][2] if contents[g[0]] in placed else None
              for g in groups[c]]
    for group, part in zip(groups[c], _group_parts(list(map(len, groups[c])), fractions, pinned)):
      placed.setdefault(contents[group[0]], (c, group[0], part))
      files[SPLIT_PARTS[part]][c] += group
  gaps = {c: [p for p in parts if not files[p][c]] for c in classes}
  said = {c: _pinned_gap(c, ps, groups[c], contents, placed) for c, ps in gaps.items() if ps}
  untrained = [said[c] for c in said if gaps[c][0] == parts[0]]
  if untrained:
    raise DataError(f'{folder} has no train/ and test/ folders, so it is split per class, '
                    'and byte-identical images stay in one part, across classes too: '
                    f'{"; ".join(untrained)}. A class needs training images: remove or '
                    'relabel the copies (the same picture under two labels), or add images')
  digest = hashlib.sha256()
  for part, part_classes in files.items():
    for c, paths in part_classes.items():
      for name in sorted(os.fsencode(_nfc(os.path.basename(p))) for p in paths):
        digest.update(os.fsencode(f'{part}/{c}/') + name + b'\n')
  record = {'rule': SPLIT_RULE, 'names': 'NFC', 'copies': SPLIT_COPIES, 'seed': seed,
            'fractions': list(fractions),
            'counts': {p: sum(map(len, files[p].values())) for p in parts},
            'grouped': sum(len(g) - 1 for gs in groups.values() for g in gs),
            'pinned': sum(len(g) for c, gs in groups.items() for g in gs
                          if placed[contents[g[0]]][0] != c),
            'digest': digest.hexdigest()}
  notes = _copy_notes(groups, contents, placed) + [
      f'{said[c]}, so {" and ".join(gaps[c])} measure{"s" * (len(gaps[c]) == 1)} the other '
      'classes only' for c in said]
  return {'files': files, 'record': record, 'notes': notes}


def _sha256(path: str) -> str:
  """The SHA-256 of the file at `path`'s bytes (hex)."""
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(functools.partial(f.read, 1 << 20), b''):
      digest.update(chunk)
  return digest.hexdigest()


def _copies_across_splits(files: dict) -> dict:
  """{'notes': [...]} on images of a split folder (`files`: {split: {class: [paths]}}, the
  training split first) byte-identical to an image of an earlier split: a test image that
  is also a training image inflates the test accuracy, by the teacher's and the
  students' alike. Every file is read once for its SHA-256."""
  first, shared = {}, {}
  for split, classes in files.items():
    for c, paths in classes.items():
      for path in paths:
        name = f'{split}/{_image_name(c, path)}'
        seen = first.setdefault(_sha256(path), (split, name))
        if seen[0] != split:
          shared.setdefault((split, seen[0]), []).append(f'{name} = {seen[1]}')
  return {'notes': [
      f'{len(pairs)} image(s) of {later}/ are byte-identical copies of images in {earlier}/ '
      f'(e.g. {pairs[0]}): {later} scores pictures the students train on, so its accuracy is '
      f'inflated; remove the copies from one of the two' for (later, earlier), pairs in
      shared.items()]}


def _groups(seed: int, label: str, paths: list, contents: dict) -> list:
  """The groups of class `label`'s images for its split (see `_split_folder`): lists of
  byte-identical images (`contents`: path -> SHA-256), each in `_split_key` order, the
  groups in the order of their first image's key."""
  key = functools.partial(_split_key, seed, label)
  by_content = {}
  for path in sorted(paths, key=key):
    by_content.setdefault(contents[path], []).append(path)
  return sorted(by_content.values(), key=lambda group: key(group[0]))


def _image_name(c: str, path: str) -> str:
  """How notes name image `path` of class `c`: 'class/file name' (the file's own name)."""
  return f'{c}/{os.path.basename(path)}'


def _pinned_gap(c: str, missing: list, class_groups: list, contents: dict, placed: dict) -> str:
  """What left class `c` without an image in the parts `missing` (see `_split_folder`):
  how many of its groups were pinned by byte-identical images of earlier classes
  (`placed`: content -> (class, image, part index)), naming the first three and their
  part."""
  pinned = [(g[0], placed[contents[g[0]]]) for g in class_groups
            if placed[contents[g[0]]][0] != c]
  named = '; '.join(f'{_image_name(c, p)} = {_image_name(d, q)} in {SPLIT_PARTS[part]}'
                    for p, (d, q, part) in pinned[:3]) + '; ...' * (len(pinned) > 3)
  return (f'class {c!r} has no image in {" or ".join(missing)}: {len(pinned)} of its '
          f'{len(class_groups)} distinct images are byte-identical to images of classes '
          f'before it and kept in their part ({named})')


def _copy_notes(groups: dict, contents: dict, placed: dict) -> list:
  """The notes on copies among an unsplit folder's images (`groups`: {class: groups}, see
  `_groups`; `placed`: content -> (class, image, part index) where it went): how many
  byte-identical copies were kept with their image, and which images sit in more than one
  class (a labelling problem the split cannot mend) and the part each was kept in."""
  lines = []
  copies = [g for class_groups in groups.values() for g in class_groups if len(g) > 1]
  if copies:
    c = next(c for c, gs in groups.items() if copies[0] in gs)
    lines.append(f'{sum(len(g) - 1 for g in copies)} file(s) are byte-identical copies of '
                 f'another image of their class (e.g. {_image_name(c, copies[0][1])} = '
                 f'{_image_name(c, copies[0][0])}); each is kept in the split of its image, '
                 'so no test image is trained on')
  classes_of = {}
  for c in sorted(groups):
    for g in groups[c]:
      classes_of.setdefault(contents[g[0]], []).append(_image_name(c, g[0]))
  shared = [(names, placed[h][2]) for h, names in classes_of.items() if len(names) > 1]
  if shared:
    kept = '; '.join(f'{" = ".join(names)} in {SPLIT_PARTS[part]}' for names, part in shared[:5])
    lines.append(f'{len(shared)} image(s) are in more than one class folder (e.g. '
                 f'{" = ".join(shared[0][0])}): the same picture under two labels; check the '
                 'labelling. Each stays in one part with all its copies (where the first of '
                 f'its classes by name put it), so no test image is trained on: {kept}'
                 + f'; and {len(shared) - 5} more' * (len(shared) > 5))
  return lines


def _fingerprint(files: dict) -> str:
  """A digest of the paths, sizes and modification times of `files` (see `_image_files`)."""
  digest = hashlib.sha256()
  for paths in files.values():
    for path in (p for ps in paths.values() for p in ps):
      st = os.stat(path)
      digest.update(f'{path}\0{st.st_size}\0{st.st_mtime_ns}\n'.encode('utf-8', 'surrogateescape'))
  return digest.hexdigest()


def _link_name(path: str) -> str:
  """The file name an image (or class folder) gets in the clean view: its own when that is
  plain UTF-8, else a readable stand-in (the bytes TFDS cannot take replaced by `_`, and a
  tag of 8 hex digits of the name's SHA-256 that keeps it distinct), its stem shortened
  where needed so the stand-in fits NAME_MAX bytes."""
  name = os.path.basename(path)
  try:
    name.encode('utf-8')
    return name
  except UnicodeEncodeError:
    raw = name.encode('utf-8', 'surrogateescape')
    tag = hashlib.sha256(raw).hexdigest()[:8]
    stem, ext = os.path.splitext(raw.decode('utf-8', 'replace').replace('\ufffd', '_'))
    room = NAME_MAX - len(f'_{tag}{ext}'.encode())
    stem = stem.encode()[:room].decode('utf-8', 'ignore')  # whole characters only.
    return f'{stem}_{tag}{ext}'


def _clean_view(cfg, folder: str, files: dict, split: Optional[dict] = None) -> tuple:
  """A folder of symbolic links holding exactly the classes and images of `files` (the
  splits the run reads, or the parts of an unsplit folder), for TFDS's ImageFolder, which
  would take every sub-folder (a hidden one too) for a class and cannot open non-UTF-8
  names. Its place is in the TFDS data dir, named by the files' fingerprint (and `split`,
  the split's record, for an unsplit folder). Returns (path, {link: original file}, the
  place it goes to, or None when it is already there): a new view is made in a temporary
  folder first (removed again when making it fails), and `_place` puts it in place once
  its images are known to be good. DataError when it cannot be made (`_view_fault`)."""
  named = {'folder': folder, 'files': _fingerprint(files)}
  if split is not None:
    named['split'] = split
  key = hashlib.sha256(json.dumps(named).encode('utf-8', 'surrogateescape')).hexdigest()[:16]
  view = os.path.join(data_root(cfg.get('data_dir') or None), CACHE_DIR, 'folders', key)
  with _os_errors_as(_view_fault(folder, os.path.dirname(view))):
    where = view if os.path.isdir(view) else tempfile.mkdtemp(prefix='msmgan_view_')
    try:
      origin = {}
      for split, classes in files.items():
        for c, paths in classes.items():
          os.makedirs(os.path.join(where, split, _link_name(c)), exist_ok=True)  # empty: kept.
          for p in paths:
            link = os.path.join(where, split, _link_name(c), _link_name(p))
            origin[link] = p
            if where != view:
              os.symlink(os.path.abspath(p), link)
    except BaseException:
      if where != view:
        shutil.rmtree(where, ignore_errors=True)
      raise
  return where, origin, (None if where == view else view)


def _place(made: str, view: str) -> str:
  """Moves a view made in a temporary folder to its place (another process may have put
  the same view there first: then theirs is kept). The temporary folder is gone after,
  also when the OSError of a view that cannot be placed is raised."""
  tmp = view + f'.tmp{os.getpid()}'
  try:
    os.makedirs(os.path.dirname(view), exist_ok=True)
    shutil.move(made, tmp)
    os.rename(tmp, view)
  except OSError:
    shutil.rmtree(tmp, ignore_errors=True)
    if not os.path.isdir(view):  # nor another process's: this view cannot be placed.
      raise
  finally:
    shutil.rmtree(made, ignore_errors=True)
  return view


def _image_folder(cfg, folder: str) -> tfds.folder_dataset.ImageFolder:
  """TFDS's ImageFolder over a clean view of `folder` (`_clean_view`), decoding to the
  channels and size its images share.

  An unsplit folder (`_is_unsplit`) is split by `_split_folder` into the splits train,
  validation and test of the view (`datasets.split_record(builder)` is the split's record); a
  split that dataset.train_split or test_split names and the split leaves out (fraction
  0) is a DataError.

  Every image is decoded once first (cached while the files stay the same): a file that
  does not decode, or (with dataset.image_size 0) images of different sizes, are DataErrors,
  and then nothing is left behind. What was skipped (hidden folders and files, sub-folders
  of a class folder, files of other kinds) or is missing (a test class without images) is
  said on stderr, and so are test images byte-identical to training images (a split
  folder's files are read once for their SHA-256, cached). A file or folder that cannot be
  read, or vanishes while it is read, is a DataError naming it (`_read_fault`), and so is a
  view that cannot be written (`_view_fault`); no temporary folder is left behind.
  """
  notes, split = [], None
  with _os_errors_as(_read_fault(folder)):
    if _is_unsplit(folder, _split_names(cfg)):
      files, split = _split_folder(cfg, folder, notes)
    else:
      files = _image_files(folder, _split_names(cfg), notes)
    for note in notes:
      sys.stderr.write(f'note: {folder}: {note}\n')
    for field in ('train_split', 'test_split') if split else ():
      name = cfg[field].partition('[')[0]
      if name not in files:
        raise DataError(
            f'dataset.{field} {cfg[field]!r}: {folder} has no train/ and test/ folders, so it '
            f'is split into {", ".join(files)} (dataset.split_fractions '
            f'{tuple(split["fractions"])}), and {name!r} is none of them; name one of those, '
            'or give that part a fraction above 0')
    key = {'folder': folder, 'files': _fingerprint(files), 'resized': cfg.image_size > 0}
    named = split and {k: split[k] for k in ('rule', 'seed', 'fractions', 'digest')}
    view, origin, place = _clean_view(cfg, folder, files, named)
  try:
    scan = cached(cfg, 'scan', key, lambda: _scan_images(folder, view, origin, cfg.image_size))
    if not split and len(files) > 1:  # once every image decodes (a bad folder writes nothing).
      with _os_errors_as(_read_fault(folder)):
        copies = cached(cfg, 'copies', {'folder': folder, 'files': key['files']},
                        lambda: _copies_across_splits(files))
      for note in copies['notes']:
        sys.stderr.write(f'note: {folder}: {note}\n')
  except BaseException:
    if place:
      shutil.rmtree(view, ignore_errors=True)
    raise
  if place:
    with _os_errors_as(_view_fault(folder, os.path.dirname(place))):
      view = _place(view, place)
  builder = tfds.folder_dataset.ImageFolder(view, shape=(*scan['size'], scan['channels']))
  if split:
    setattr(builder, SPLIT_ATTR, split)  # its record: datasets.split_record.
  return builder


def _scan_images(folder: str, view: str, origin: dict, image_size: int) -> dict:
  """{'size': [H, W] (or [None, None] when they differ), 'channels': 1 or 3} of the images
  of a clean view (`origin`: its links and the files they stand for).

  Decoded by TFDS's own decoder, in their native channels: all grayscale stays 1 channel;
  anything else (RGB, RGBA, palette, a mix) is read as RGB, alpha dropped.
  """
  native = tfds.folder_dataset.ImageFolder(view, shape=(None, None, None))
  shapes = {}
  for split in sorted({os.path.relpath(l, view).split(os.sep)[0] for l in origin}):
    ds = native.as_dataset(split=split).map(
        lambda ex: (ex['image/filename'], tf.shape(ex['image']))).ignore_errors()
    shapes.update({origin.get(p.decode(), p.decode()): tuple(int(x) for x in s)
                   for p, s in ds.as_numpy_iterator()})
  bad = [p for p in origin.values() if p not in shapes]
  for path in bad:
    with _os_errors_as(_read_fault(folder)):  # unreadable (or vanished): said as such.
      with open(path, 'rb') as f:
        f.read(1)
  if bad:
    raise DataError(f'{len(bad)} image file(s) cannot be decoded: {", ".join(bad[:5])}'
                    f'{", ..." if len(bad) > 5 else ""}; replace or remove them')
  sizes = {}
  for path in sorted(shapes):
    sizes.setdefault(shapes[path][:2], path)
  if len(sizes) > 1 and not image_size:
    examples = ', '.join(f'{h}x{w}: {p}' for (h, w), p in list(sizes.items())[:3])
    raise DataError(f'the images in {folder} have different sizes ({examples}); set '
                    'dataset.image_size (e.g. --config.dataset.image_size=32) to resize every '
                    'image to that size')
  return {'size': list(next(iter(sizes))) if len(sizes) == 1 else [None, None],
          'channels': 1 if all(s[2] == 1 for s in shapes.values()) else 3}


def check(dataset) -> None:
  """dataset.split_fractions and split_seed: how an unsplit image folder is split
  (ConfigError naming the field)."""
  f = dataset.split_fractions
  numbers = isinstance(f, (tuple, list)) and len(f) == 3 and all(
      isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and 0 <= x <= 1
      for x in f)
  require(numbers and f[0] > 0 and abs(sum(f) - 1) < 1e-6, 'dataset.split_fractions',
          f'{f!r} must be 3 numbers in [0, 1] summing to 1, the shares of train (above 0), '
          'validation and test (0 leaves a part out), e.g. (0.8, 0.1, 0.1)')
  seed = dataset.split_seed
  require(isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0,
          'dataset.split_seed', f'must be an integer >= 0, got {seed!r}')


def claims(name: str) -> bool:
  """Whether `name` is an existing folder that is no registered TFDS name."""
  return not registered(name) and os.path.isdir(os.path.expanduser(name))


def build(cfg) -> tfds.folder_dataset.ImageFolder:
  """The ImageFolder builder of the folder `cfg.name` (see `_image_folder`)."""
  return _image_folder(cfg, os.path.abspath(os.path.expanduser(cfg.name)))


def owns(builder) -> bool:
  """Whether `builder` is an ImageFolder (this source's builders)."""
  return isinstance(builder, tfds.folder_dataset.ImageFolder)


def read(builder, split: str, shard: tuple = (0, 1), shuffle_seed: Optional[int] = None,
         positions: bool = False) -> tf.data.Dataset:
  """Part `shard[0]` of `shard[1]` even parts of `split` (slicing allowed) of an
  ImageFolder, in the order it lists its files (`shuffle_seed` is not used); with
  `positions`, each example also carries 'position' (int64), its position in `split`.

  ImageFolder reads whole splits only, in an order it shuffled deterministically (its own
  file shuffling is unseeded, so it is not used: the caller's seeded shuffle suffices).
  """
  del shuffle_seed
  index, count = shard
  (part,) = tfds.core.ReadInstruction.from_spec(split).to_absolute(builder.info.splits)
  start = part.from_ or 0
  n = (builder.info.splits[part.splitname].num_examples if part.to is None else part.to) - start
  first, stop = start + n * index // count, start + n * (index + 1) // count
  ds = builder.as_dataset(split=part.splitname).skip(first).take(stop - first)
  if not positions:
    return ds
  return ds.enumerate(first - start).map(lambda position, ex: {**ex, 'position': position})


def data_key(cfg, builder) -> dict:
  """What names an ImageFolder's data in the stats cache: its view and the fingerprint of
  the files of the splits the run reads (a changed image computes the stats again)."""
  with _os_errors_as(_read_fault(builder.data_dir)):  # its view: a link whose image vanished.
    return {'folder': builder.data_dir,
            'files': _fingerprint(_image_files(builder.data_dir, _split_names(cfg)))}


SOURCE = DataSource(
    'image_folder', claims, build=build, check=check, owns=owns, read=read, data_key=data_key,
    says='an image folder holding train/ and test/, each with one sub-folder of images per '
         'class (or only the class sub-folders: then it is split)')
