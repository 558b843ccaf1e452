"""Teacher training with cross-entropy, keeping M anchor checkpoints along its route.

Anchors (METHOD.md section 1) are saved at `config_lib.anchor_epochs(cfg)` under
`checkpoints/anchors/<epoch>`; the latest full state (for resume) under
`checkpoints/teacher`. With `teacher.checkpoints` set, the anchors are loaded from
those paths instead and no teacher is trained.
"""
import dataclasses
import os
import sys
import time
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from msmgan_jax import config as config_lib
from msmgan_jax import errors
from msmgan_jax.core import models, optim, sharding, teachers
from msmgan_jax.core.teachers import diagnosis
from msmgan_jax.files import checkpoints
from msmgan_jax.methods import registry
from msmgan_jax.training import loop


@dataclasses.dataclass(eq=False)
class Anchor:
  """One teacher checkpoint guiding one stage."""
  epoch: int
  test_accuracy: float
  path: str
  variables: dict


@dataclasses.dataclass
class Teacher:
  model: models.Classifier
  model_name: str
  anchors: list
  test_accuracy: float
  params: int
  wall_s: float
  metrics_offset: int  # metrics.jsonl size when the teacher was done (students resume past it).
  source: str = 'msmgan_jax'  # where it came from (`core.teachers.SOURCES`, or python).
  checks: Optional[dict] = None  # what `diagnose` saw of a teacher from elsewhere.

  def summary(self) -> dict:
    out = {'model': self.model_name, 'source': self.source, 'params': self.params,
           'test_accuracy': self.test_accuracy, 'wall_s': self.wall_s,
           'anchors': [{'epoch': a.epoch, 'test_accuracy': a.test_accuracy, 'path': a.path}
                       for a in self.anchors]}
    if self.checks is not None:
      out['checks'] = self.checks
    return out


def variables_of(state) -> dict:
  return {'params': state.params, 'batch_stats': state.batch_stats}


def _anchor_checkpoint(path: str, model_name: str):
  """(manager, step) of an anchor directory, after checking it exists and holds `model_name`."""
  path = os.path.abspath(path)
  base = os.path.basename(path)
  if not base.isdigit() or not os.path.isdir(os.path.join(path, 'state')):
    raise errors.CheckpointError(
        f'teacher checkpoint {path} not found (expected a directory with state/ and meta/, '
        'such as WORKDIR/checkpoints/anchors/EPOCH); fix teacher.checkpoints.')
  ckpt = checkpoints.Checkpoints(os.path.dirname(path), read_only=True)
  meta = ckpt.meta(int(base))
  if meta.get('model') != model_name:
    raise errors.CheckpointError(
        f'teacher checkpoint {path} holds a {meta.get("model")!r} but teacher.model is '
        f'{model_name!r}; set teacher.model to match it or give other checkpoints.')
  return ckpt, int(base)


def check_anchor_paths(cfg) -> None:
  """Raises CheckpointError for a missing or mismatched `teacher.checkpoints` entry (of
  this library's teachers; an external teacher's paths are checked when it loads)."""
  if cfg.teacher.source != 'msmgan_jax':
    return
  for p in cfg.teacher.checkpoints:
    _anchor_checkpoint(p, cfg.teacher.model)


def trained_on(ckpt, step: int, meta: dict) -> dict:
  """What an anchor's teacher was trained on: its recorded `data` (num_classes,
  class_names, image_shape, ...), or for an anchor saved before that was recorded, the
  class count and channels read from its arrays' shapes (the head's kernel, the smallest
  input depth of block 1's convolutions)."""
  if meta.get('data'):
    return meta['data']
  shapes = ckpt.shapes(step)
  heads = [s for p, s in shapes.items() if "['head']" in p and p.endswith("['kernel']")]
  convs = [s for p, s in shapes.items() if "['block1']" in p and len(s) == 4]
  out = {}
  if heads:
    out['num_classes'] = int(heads[0][-1])
  if convs:
    out['channels'] = int(min(s[2] for s in convs))
  return out


def check_agrees(path: str, rec: dict, info) -> None:
  """CheckpointError, in the data's own words, unless the teacher at `path` (`rec`, from
  `trained_on`) was trained on data like `info`'s: class count, class names and their
  order, channels, image size (each compared where the record has it)."""
  shape = rec.get('image_shape')
  channels = shape[2] if shape else rec.get('channels')
  problems = []
  if rec.get('num_classes') is not None and rec['num_classes'] != info.num_classes:
    problems.append('classes')
  if channels is not None and channels != info.image_shape[2]:
    problems.append('channels')
  if shape and tuple(shape[:2]) != tuple(info.image_shape[:2]):
    problems.append('image size')
  names = rec.get('class_names')
  if (not problems and names and info.class_names and list(names) != list(info.class_names)):
    problems.append('class names')
  if not problems:
    return

  def facts(n, names_, ch, size, name):
    out = [f'{n} classes' if n is not None else 'classes unknown']
    if names_ and 'class names' in problems:
      out.append(f'named {list(names_)}')
    out.append(f'{ch} channel{"s" * (ch != 1)}' if ch is not None else 'channels unknown')
    if size:
      out.append(f'{size[0]}x{size[1]} images')
    return (f'{name}: ' if name else '') + ', '.join(out)
  teacher = facts(rec.get('num_classes'), names, channels, shape[:2] if shape else None,
                  rec.get('name'))
  data = facts(info.num_classes, info.class_names, info.image_shape[2], info.image_shape[:2],
               info.name)
  raise errors.CheckpointError(
      f'teacher checkpoint {path} does not fit this data ({", ".join(problems)} differ): the '
      f'teacher was trained on {teacher}; the data here is {data}. Give teacher.checkpoints '
      'trained on this data (same classes in the same order, channels and image size), or '
      'train the teacher here (leave teacher.checkpoints empty); set dataset.image_size '
      'where only the size differs.')


def load_anchor(path: str, target: dict, model_name: str, info=None) -> Anchor:
  """Loads an anchor saved by `train_teacher` (a `checkpoints/anchors/<epoch>` directory),
  after checking (with `info`, the data's `DatasetInfo`) that its teacher fits the data."""
  ckpt, step = _anchor_checkpoint(path, model_name)
  if info is not None:
    check_agrees(os.path.abspath(path), trained_on(ckpt, step, ckpt.meta(step)), info)
  variables, meta = ckpt.restore(step, target)
  return Anchor(meta['epoch'], meta['test_accuracy'], os.path.abspath(path), variables)


# `student.init` other than random needs at least this share of the student's parameters and
# statistics selectable from the teacher: models of different families share only a stem
# convolution or the head by name (0-3% of the student at 10 classes; a WideResNet gives a
# resnet8 1%), a start that is random in all but name.
MIN_SELECTED = 0.1


def check_student_init(cfg, info, given: Optional[Teacher] = None) -> None:
  """Refuses `student.init` (weight selection from an anchor) where it would take under
  `MIN_SELECTED` of the student's parameters and statistics, for this data's image shape and
  class count, from the teacher: `given` (restored by `load_given`) or, without one, the
  library's `teacher.model` as this run would train it (shapes only, nothing computed).
  Called before the workdir is claimed. Raises errors.ConfigError, and CheckpointError for a
  `student.init_checkpoint` that is missing, of another architecture than teacher.model, or
  trained on other data than `info`'s."""
  if cfg.student.init_checkpoint:
    ckpt, step = _anchor_checkpoint(cfg.student.init_checkpoint, cfg.teacher.model)
    check_agrees(os.path.abspath(cfg.student.init_checkpoint),
                 trained_on(ckpt, step, ckpt.meta(step)), info)
    if given is not None and given.model_name != cfg.teacher.model:
      raise errors.ConfigError(
          f'config field student.init_checkpoint: an anchor of this library\'s '
          f'{cfg.teacher.model}, but the teacher is {given.model_name}; leave '
          'student.init_checkpoint empty to start from that teacher\'s own anchor')
  if cfg.method == 'teacher' or cfg.student.init == 'random':
    return
  shapes = lambda model: jax.eval_shape(lambda: optim.init_variables(
      model, jax.random.key(0), info.image_shape))
  if given is not None:
    teacher, name = given.anchors[0].variables, given.model_name
  else:
    teacher = shapes(models.create_model(cfg.teacher.model, info.num_classes))
    name = cfg.teacher.model
  student = shapes(models.create_model(cfg.student.model, info.num_classes))
  share = models.selectable_share(student, teacher)
  if share < MIN_SELECTED:
    raise errors.ConfigError(
        f'config field student.init: {cfg.student.init}: weight selection would take only '
        f'{share:.2%} of the student {cfg.student.model}\'s parameters and statistics from the '
        f'teacher {name} (the arrays they share by name and shape; at least '
        f'{MIN_SELECTED:.0%} needed), leaving the rest at its random start. It works where the '
        'student\'s layers nest in the teacher\'s by name (resnet8 in resnet20, wrn_16_1 in '
        'wrn_40_1): set student.init=random, or pick such a pair')


def load_given(cfg, info, mesh, eval_batches=None, given=None) -> Teacher:
  """The teacher of `cfg.teacher.checkpoints` (trained elsewhere) or `given` (a
  `core.teachers.Given` from Python), every anchor restored and checked against the data
  and the method (`check_serves`).

  Called before the workdir is touched, so a checkpoint that is missing, truncated or of
  another architecture stops the run with nothing written. An external teacher's anchors
  are scored on the test split here (`eval_batches`), as the library's own record theirs,
  and the last one is checked before it teaches (`diagnose`).
  """
  if given is None and cfg.teacher.source == 'msmgan_jax':
    model = models.create_model(cfg.teacher.model, info.num_classes)
    target = sharding.abstract_variables(model, info.image_shape, mesh)  # no compute.
    anchors = [load_anchor(p, target, cfg.teacher.model, info) for p in cfg.teacher.checkpoints]
    return Teacher(model, cfg.teacher.model, anchors, anchors[-1].test_accuracy,
                   optim.count_params(target['params']), 0.0, metrics_offset=0)
  if given is not None:
    if cfg.teacher.checkpoints:
      raise errors.ConfigError('config field teacher.checkpoints: a teacher is given from '
                               'Python as well; give one or the other')
    model, variables, source = given.build(info), list(given.variables), given.source
    name = f'{given.description} (from Python)'
    paths = [f'<{source} teacher from Python, anchor {i + 1}>' for i in range(len(variables))]
  else:
    model, variables, name = external(cfg, info)
    source, paths = cfg.teacher.source, [os.path.abspath(os.path.expanduser(p))
                                         for p in cfg.teacher.checkpoints]
  check_serves(cfg, model, info, name)
  if registry.METHODS[cfg.method].all_anchors and len(variables) != cfg.anchors.num:
    raise errors.ConfigError(
        f'config field anchors.num: {cfg.method} trains one stage per anchor and the teacher '
        f'gives {len(variables)}; set anchors.num={len(variables)}')
  variables = [sharding.replicate(v, mesh) for v in variables]
  scores, checks = [None] * len(variables), None
  if eval_batches is not None:
    passes = [score(model, v, eval_batches, mesh) for v in variables]
    scores = [p['accuracy'] for p in passes]
    checks = diagnose(cfg, model, variables[-1], passes[-1], info, name, eval_batches, mesh)
  anchors = [Anchor(i + 1, s, path, v)
             for i, (s, path, v) in enumerate(zip(scores, paths, variables))]
  print(f'teacher: {name} ({source}), {len(anchors)} anchor(s)' + (
      f', test accuracy {scores[-1]:.4f}' if scores[-1] is not None else ''), flush=True)
  return Teacher(model, name, anchors, scores[-1], optim.count_params(variables[-1]), 0.0,
                 metrics_offset=0, source=source, checks=checks)


def external(cfg, info):
  """(model, [variables per anchor], name) of a teacher.source other than msmgan_jax, from
  its loader (`core.teachers.LOADERS`); flax and keras build the same `Given` the Python
  API does."""
  loaded = teachers.LOADERS[cfg.teacher.source](cfg.teacher, info)
  if len(loaded) == 2:
    given, name = loaded
    return given.build(info), given.variables, name
  return loaded


def _score_step(model):
  """A jitted pass over a masked batch summing what `diagnose` reads: correct predictions,
  examples, predicted and true class counts, and the raw outputs' range and row sums."""
  def step(variables, batch):
    if isinstance(model, teachers.External):
      raw, _ = model.raw(variables, batch['image'])
      logits = model.to_logits(raw)
    else:
      raw = logits = model.apply(variables, batch['image'], train=False)[0]
    m, classes = batch['mask'], raw.shape[-1]
    keep = m[:, None] > 0
    sums = jnp.sum(raw.astype(jnp.float32), -1)  # a 16-bit row's sum, not rounded again.
    onehot = lambda i: jax.nn.one_hot(i, classes) * m[:, None]
    return {'correct': jnp.sum((jnp.argmax(logits, -1) == batch['label']) * m),
            'count': jnp.sum(m), 'predicted': jnp.sum(onehot(jnp.argmax(logits, -1)), 0),
            'labels': jnp.sum(onehot(batch['label']), 0),
            'confusion': onehot(batch['label']).T @ jax.nn.one_hot(jnp.argmax(logits, -1),
                                                                   classes),
            'min': jnp.min(jnp.where(keep, raw, jnp.inf)),
            'max': jnp.max(jnp.where(keep, raw, -jnp.inf)),
            'sum_dev': jnp.max(jnp.where(m > 0, jnp.abs(sums - 1), 0.0)),
            'sum_min': jnp.min(jnp.where(m > 0, sums, jnp.inf)),
            'sum_max': jnp.max(jnp.where(m > 0, sums, -jnp.inf))}
  return jax.jit(step)


def score(model, variables, eval_batches, mesh, limit: int = 0) -> dict:
  """{'accuracy', 'count', 'predicted' (C,), 'labels' (C,), 'confusion' (C, C: row the
  label, column the prediction), 'min', 'max', 'sum_dev', 'sum_min', 'sum_max', 'eps'
  (the outputs' float precision)} of `model` with `variables` over the whole eval split (with
  `limit`, over its first batches holding at least `limit` examples)."""
  step, out, confusion = _score_step(model), None, None
  for batch in eval_batches():
    if limit and out is not None and out['count'] >= limit:
      break
    r = step(variables, sharding.shard_batch(batch, mesh))
    # (C, C) stays on the device until the end: 4 MB a batch for 1,000 classes.
    c = r.pop('confusion')
    confusion = c if confusion is None else confusion + c
    r = jax.device_get(r)
    if out is None:
      out = r
      continue
    for k in ('correct', 'count', 'predicted', 'labels'):
      out[k] = out[k] + r[k]
    for k, f in (('min', min), ('max', max), ('sum_dev', max), ('sum_min', min),
                 ('sum_max', max)):
      out[k] = f(out[k], r[k])
  out['confusion'] = jax.device_get(confusion)
  dtype = getattr(model, 'output_dtype', jnp.dtype(jnp.float32))  # as the network computes.
  out['eps'] = float(jnp.finfo(dtype).eps) if jnp.issubdtype(dtype, jnp.floating) else 0.0
  out = {k: np.asarray(v).tolist() for k, v in out.items()}
  out['accuracy'] = out['correct'] / max(out['count'], 1)
  return out


def diagnose(cfg, model, variables, seen: dict, info, name: str, eval_batches, mesh) -> dict:
  """Checks a teacher from elsewhere before it teaches (`core.teachers.diagnosis`): its
  outputs read as `teacher.outputs`, its test accuracy against chance, one class for every
  image, a class order other than the data's (`diagnosis.order_findings`); for an External
  teacher, every `teacher.inputs` is scored on a sample of the test
  split, to catch (and name) another pixel scale that fits it better. Returns the record for
  summary.json ({'accuracy', 'chance', 'outputs', 'inputs', 'warnings'}). Raises errors.CheckpointError (exit 2, nothing
  written) naming what was seen and the field to change, unless `teacher.allow_weak`, when
  it prints a warning and records it."""
  kind = cfg.teacher.outputs if isinstance(model, teachers.External) else 'logits'
  chance = diagnosis.chance_of(seen['labels'])
  found = diagnosis.output_findings(seen, kind) + diagnosis.score_findings(
      seen['accuracy'], seen['predicted'], seen['labels'], info.class_names) + (
          diagnosis.order_findings(seen['confusion'], info.class_names))
  if isinstance(model, teachers.External) and model.input_dtype != 'uint8':
    sample = {m: score(model.with_inputs(m), variables, eval_batches, mesh,
                       limit=diagnosis.INPUTS_SAMPLE) for m in teachers.INPUTS if model.takes(m)}
    tried = {m: r['accuracy'] for m, r in sample.items()}
    scale = diagnosis.inputs_finding(model.inputs, tried, sample[model.inputs]['count'])
    found += [scale] if scale else []
  else:
    tried = {}
  record = {'accuracy': seen['accuracy'], 'chance': chance, 'outputs': {
      k: seen[k] for k in ('min', 'max', 'sum_min', 'sum_max')}, 'inputs': tried,
            'warnings': []}
  if not found:
    return record
  text = diagnosis.message(name, found, cfg.teacher.allow_weak)
  if not cfg.teacher.allow_weak:
    raise errors.CheckpointError(text)
  sys.stdout.flush()
  sys.stderr.write(f'warning: {text}\n')
  record['warnings'] = [text]
  return record


def check_serves(cfg, model, info, name: str = 'the teacher') -> None:
  """ConfigError (exit 2) unless `model` gives what `cfg.method` needs: logits over the
  data's classes; for a feature method one block map per student block, downsampled as the
  student's; for a method that runs the teacher's upper blocks or trains a copy of it, a
  Flax `Classifier` (`registry.Method.needs_network`)."""
  if isinstance(model, models.Classifier):
    logits = jax.eval_shape(lambda v: model.init_with_output(
        jax.random.key(0), v, train=False)[0][0],
        jax.ShapeDtypeStruct((1,) + tuple(info.image_shape), jax.numpy.float32))
    classes = int(logits.shape[-1])
  else:
    classes = model.num_classes
  if classes != info.num_classes:
    raise errors.CheckpointError(
        f'{name} gives {classes} logits but the data here ({info.name}) has {info.num_classes} '
        'classes; give a teacher trained on these classes (in the same order)')
  if cfg.method == 'teacher' or cfg.method not in registry.METHODS:
    return
  method = registry.METHODS[cfg.method]
  why = method.needs_network(cfg) if method.needs_network else ''
  if why and not isinstance(model, models.Classifier):
    raise errors.ConfigError(
        f'method {cfg.method} needs the teacher as a network of blocks ({why}); {name} is '
        'run whole. Give a Flax teacher built on msmgan_jax.core.models.Classifier, change '
        'those fields, or use a logit method (kd, dkd) or a feature one (fitnets, at)')
  if not method.needs_features:
    return
  student = models.create_model(cfg.student.model, info.num_classes)
  k, strides = student.num_blocks, tuple(student.block_strides)
  layers = ('. Its layers (path, output shape for one image, downsampling):\n'
            + model.layer_table(strides)) if isinstance(model, teachers.External) else ''
  if model.num_blocks == 0:
    raise errors.ConfigError(
        f'method {cfg.method} needs the teacher\'s block features and {name} gives logits '
        f'only: name {k} of its layers in teacher.feature_layers, one per block of the student '
        f'{cfg.student.model}, with outputs downsampled by {strides} (a SavedModel gives '
        'logits only: use a logit method such as kd or dkd)' + layers)
  if model.num_blocks != k or tuple(model.block_strides) != strides:
    raise errors.ConfigError(
        f'config field teacher.feature_layers: the student {cfg.student.model} has {k} blocks '
        f'downsampled by {strides}; {name} gives {model.num_blocks} feature maps downsampled '
        f'by {tuple(model.block_strides)}. Name {k} layers whose outputs line up with the '
        'student\'s blocks' + layers)


def train_teacher(cfg, wd, info, batches, eval_batches, mesh) -> Teacher:
  """Trains (or resumes, or reuses) the teacher of `cfg`; returns it with its anchors."""
  model = models.create_model(cfg.teacher.model, info.num_classes)
  target = sharding.abstract_variables(model, info.image_shape, mesh)  # restore target, no compute.
  n_params = optim.count_params(target['params'])

  spe = loop.steps_per_epoch(cfg, info, teacher=True)
  total = cfg.teacher.epochs * spe
  anchor_epochs = config_lib.anchor_epochs(cfg)
  lr = cfg.teacher.lr * cfg.batch_size / 128
  tx = optim.sgd(optim.lr_schedule(lr, total, int(cfg.teacher.warmup_epochs * spe)),
                 cfg.teacher.momentum, cfg.teacher.weight_decay)
  latest = checkpoints.Checkpoints(wd.file('checkpoints', 'teacher'), max_to_keep=1)
  anchor_ckpt = checkpoints.Checkpoints(wd.file('checkpoints', 'anchors'))
  if latest.latest_step() is not None and latest.latest_step() >= total:
    return _finished(cfg, model, target, n_params, latest, anchor_ckpt, anchor_epochs)
  state = sharding.replicate(optim.create_state(model, jax.random.key(cfg.seed), info.image_shape, tx),
                          mesh)
  start, wall, window = 0, 0.0, ()
  if latest.latest_step() is None:
    wd.metrics.truncate(0)  # drop what a run killed before its first checkpoint logged.
  else:
    state, meta = latest.restore(latest.latest_step(), state)
    start, wall, window = int(meta['step']), float(meta['wall_s']), meta.get('log_window', ())
    wd.metrics.truncate(meta['metrics_offset'])  # drop what was logged after that save.
    print(f'teacher: resuming at step {start}/{total}')
  eval_step = loop.make_eval_step(model)
  t0 = time.time() - wall
  log = lambda split, step, m: wd.metrics.write(step=step, epoch=step / spe, stage=0,
                                                phase='teacher', split=split, **m)

  def after_step(step, state):
    if step % spe == 0:
      epoch = step // spe
      result = loop.evaluate(eval_step, variables_of(state), eval_batches, mesh)
      print(f'teacher epoch {epoch}: test accuracy {result["accuracy"]:.4f}', flush=True)
      log('test', step, result)
      if epoch in anchor_epochs:
        anchor_ckpt.save(epoch, variables_of(state), {
            'epoch': epoch, 'test_accuracy': result['accuracy'], 'model': cfg.teacher.model,
            'data': info.record()},
            where=f'in the teacher by epoch {epoch}')
    return state

  def save(step, state, log_window):
    latest.save(step, state, {'step': step, 'wall_s': time.time() - t0,
                              'metrics_offset': wd.metrics.offset(), 'log_window': log_window},
                where=f'in the teacher by training step {step}')

  train_step = loop.make_classifier_step(model)
  loop.train_loop(state, train_step, multi_step=loop.scanned(train_step),
                  steps_per_dispatch=cfg.steps_per_dispatch,
                  batches=batches(cfg.seed, skip=start), start=start, stop=total, mesh=mesh,
                  batch_size=cfg.batch_size, log_every=cfg.log_every_steps,
                  log=lambda step, m: log('train', step, m), after_step=after_step, save=save,
                  save_at=lambda step: step % spe == 0 or step % cfg.checkpoint_every_steps == 0,
                  where='the teacher', window=window, epoch_steps=spe)
  return _finished(cfg, model, target, n_params, latest, anchor_ckpt, anchor_epochs)


def _finished(cfg, model, target, n_params, latest, anchor_ckpt, anchor_epochs) -> Teacher:
  """The trained teacher of this workdir, its anchors restored."""
  meta = latest.meta(latest.latest_step())
  anchors = [Anchor(e, anchor_ckpt.meta(e)['test_accuracy'], anchor_ckpt.directory + f'/{e}',
                    anchor_ckpt.restore(e, target)[0]) for e in anchor_epochs]
  return Teacher(model, cfg.teacher.model, anchors, anchors[-1].test_accuracy, n_params,
                 round(float(meta['wall_s']), 2), metrics_offset=meta['metrics_offset'])
