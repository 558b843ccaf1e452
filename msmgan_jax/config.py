"""The configuration schema, its defaults, the `smoke` shrink, and validation.

`defaults()` is the single source of every config field (one comment each).
Config files in `configs/` start from it and change a few fields; `finalize(cfg,
arg)` applies a `:smoke` argument. `validate(cfg)` checks the whole config before
any work starts and raises `ConfigError` naming the field and the fix.
"""
import ast
import math
import os
import re
from typing import Optional

import ml_collections

from msmgan_jax.data import datasets as data
from msmgan_jax.data import sources as data_sources
from msmgan_jax.core import models
from msmgan_jax.core.phase import ANCHOR
from msmgan_jax import methods  # noqa: F401 (registers the built-in methods)
from msmgan_jax.methods import registry

SEED_BATCHING = ('auto', 'vmap', 'unroll')


from msmgan_jax.errors import ConfigError  # noqa: E402,F401 (config_lib.ConfigError)


def defaults() -> ml_collections.ConfigDict:
  """Every config field with its default value."""
  c = ml_collections.ConfigDict()
  c.imports = ()                  # your modules, imported before the config is checked: they register data sources, teacher sources or methods ('my_pkg.my_source' or 'path/to/file.py', relative to the working directory).
  c.method = 'msmgan'             # a registered method (msmgan_jax.methods): msmgan, ce, kd, ...; 'teacher' = teacher only.
  c.seed = 0                      # PRNG seed for init, data order and augmentation.
  c.seeds = 1                     # students trained at once: seeds seed .. seed+seeds-1, one program.
  c.seed_batching = 'auto'        # vmap | unroll over the seeds | auto (unroll on CPU, else vmap).
  c.batch_size = 128              # global training batch size.
  c.eval_batch_size = 1000        # global eval batch size (the last batch is padded).
  c.log_every_steps = 50          # training metrics are logged every this many steps.
  c.checkpoint_every_steps = 500  # latest state is also saved every this many steps.
  c.candidates = ()               # settings trained together in one program, every seed each ('student.lr=0.2; kd.tau=2.0', ...): they may differ only in student.lr and the method's run fields (core.runs).
  c.steps_per_dispatch = 1        # training steps per program the device runs (a scan over that many batches; the same results as 1). Pick one dividing log_every_steps.

  c.dataset = d = ml_collections.ConfigDict()
  d.name = 'fashion_mnist'        # a TFDS name, a prepared TFDS dataset dir or an image folder.
  d.source = 'auto'               # auto | tfds | local (fashion_mnist from IDX files).
  d.data_dir = ''                 # TFDS data dir ('' = TFDS default).
  d.manual_dir = ''               # folder with the Fashion-MNIST IDX .gz files ('' = Debian's).
  d.train_split = 'train'         # TFDS split (slicing allowed, e.g. 'train[:10%]').
  d.test_split = 'test'           # split evaluated after each epoch and at the end.
  d.image_size = 0                # resize images to image_size x image_size (0 = keep the data's).
  d.crop_padding = 2              # random crop after zero padding by this many pixels (0 = off).
  d.flip = True                   # random horizontal flip.
  d.shuffle_buffer = 16384        # tf.data shuffle buffer, in examples.
  d.pipeline = 'auto'             # device (splits in device memory) | tfdata | auto (see data.py).
  d.split_fractions = (0.8, 0.1, 0.1)  # an image folder without train/ and test/ is split per class: train, validation, test.
  d.split_seed = 0                # seed of that split (the same files in each part on every machine).

  c.teacher = t = ml_collections.ConfigDict()
  t.model = 'resnet20'            # a name in msmgan_jax.core.models.MODELS.
  t.epochs = 15                   # teacher training epochs.
  t.lr = 0.1                      # peak SGD learning rate (scaled by batch_size / 128).
  t.momentum = 0.9                # SGD (Nesterov) momentum.
  t.weight_decay = 5e-4           # L2 decay on conv and dense kernels.
  t.warmup_epochs = 0.5           # linear warmup, then cosine decay to 0.
  t.checkpoints = ()              # anchor checkpoint paths (a teacher trained elsewhere), weakest first.
  t.source = 'msmgan_jax'         # msmgan_jax (teacher.model) | flax | keras | saved_model: what teacher.checkpoints hold.
  t.module = ''                   # source flax: 'package.module:name' of the Linen module (or a function returning one).
  t.feature_layers = ()           # source flax/keras: one layer path per student block ('backbone/conv4'), its output the block's features; `python -m msmgan_jax.teachers --config ...` lists them.
  t.inputs = 'normalised'         # what an external teacher expects: normalised (as the student) | unit ([0, 1]) | raw (0..255) | signed ([-1, 1]) | caffe, torch (ImageNet models: Keras preprocess_input's modes).
  t.outputs = 'logits'            # what an external teacher returns: logits | probabilities (softmax; its log is used).
  t.output = ''                   # which of an external teacher's several outputs holds the class scores: a name or an index ('' = its only one, or the one named logits).
  t.train_kwarg = ''              # source flax: the __call__ keyword that turns training off, 'is_train' (given False) or 'deterministic=True' ('' = found by name).
  t.allow_weak = False            # go on (with a recorded warning) when the teacher looks wrong at load: near chance, one class for all, probabilities or sigmoid scores read as logits, classes in another order.

  c.anchors = a = ml_collections.ConfigDict()
  a.num = 3                       # M, the number of teacher anchors (= stages of a method that takes each in turn).
  a.epochs = ()                   # teacher epochs at which anchors are kept; () = M evenly spaced, the last at the end.

  registry.add_groups(c)         # each registered method's own groups (kd, dkd, msmgan's, ...).

  c.student = st = ml_collections.ConfigDict()
  st.model = 'resnet8'            # a name in msmgan_jax.core.models.MODELS.
  st.epochs = 15                  # the student's whole budget, in epochs of the train split.
  st.min_steps = 0                # floor on the student's steps (epochs x train images / batch_size): below it, student.epochs rises to reach it (0 = off; a warning under 500).
  st.lr = 0.1                     # peak SGD learning rate (scaled by batch_size / 128).
  st.momentum = 0.9               # SGD (Nesterov) momentum.
  st.weight_decay = 5e-4          # L2 decay on conv and dense kernels.
  st.warmup_epochs = 0.5          # linear warmup, then cosine decay to 0.
  st.eval_every_phase = True      # test accuracy after every phase (False: after each stage).
  st.eval_every_epochs = 0.0      # also within phases, every this many epochs of images (0 = off).
  st.init = 'random'              # random | first_anchor | last_anchor: weight selection from it.
  st.init_checkpoint = ''         # a teacher anchor dir (.../anchors/EPOCH) to start from instead.
  st.stage_shares = ()            # budget split over the stages, weakest anchor first (() = equal).
  st.schedule = 'global'          # global: one warmup+cosine over the student's whole budget; phase.
  st.block_schedule = 'global'    # feature phases: global (as `schedule`) | own (a cosine each).
  st.block_lr = 0.1               # peak SGD learning rate of feature (block) phases.
  st.finetune_lr_mult = 1.0       # a head phase that also trains the blocks does so at this multiple of student.lr.
  return c


def parse_setting(text: str) -> dict:
  """'kd.tau=2.0; kd.beta=0.5' -> {'kd.tau': 2.0, 'kd.beta': 0.5} ('' -> {})."""
  out = {}
  for part in (p.strip() for p in text.split(';')):
    if not part:
      continue
    field, sep, value = part.partition('=')
    if not sep:
      raise ValueError(f'setting {part!r} is not field=value')
    try:
      out[field.strip()] = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
      out[field.strip()] = value.strip()  # a bare string, e.g. student.init=first_anchor.
  return out


def apply_setting(cfg, overrides: dict):
  """`cfg` with `overrides` ({'group.field': value}) set, a field that has moved since a
  setting was written set where it is now (`registry.current_fields`, for `cfg.method`);
  unknown fields are ConfigErrors."""
  for path, value in registry.current_fields(overrides, cfg.get('method')).items():
    group, _, name = path.rpartition('.')
    node = cfg
    for part in filter(None, group.split('.')):
      if part not in node:
        raise ConfigError(f'setting {path}={value!r}: unknown config group {part!r}')
      node = node[part]
    if name not in node:
      raise ConfigError(f'setting {path}={value!r}: unknown config field {path}')
    if isinstance(node[name], tuple) or isinstance(value, (list, tuple)):
      value = tuple(value)
    elif isinstance(node[name], float) and isinstance(value, int):
      value = float(value)
    node[name] = value
  return cfg


def copy_config(cfg):
  """An unlocked deep copy (tuples stay tuples, as the config schema has them)."""
  out = cfg.copy_and_resolve_references()
  out.unlock()
  return out


def smoke(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks any config to a run of a few minutes on real data."""
  cfg.dataset.train_split = 'train[:20%]'
  if not cfg.teacher.checkpoints:  # given anchors fix the teacher and the number of stages.
    cfg.teacher.epochs = 2
    cfg.teacher.warmup_epochs = 0.1
    cfg.anchors.epochs = ()
    cfg.anchors.num = min(cfg.anchors.num, 2)
  cfg.student.epochs = 1
  cfg.student.warmup_epochs = 0.1
  cfg.student.eval_every_phase = False
  cfg.log_every_steps = 20
  cfg.checkpoint_every_steps = 100
  return cfg


def finalize(cfg: ml_collections.ConfigDict, arg: Optional[str]) -> ml_collections.ConfigDict:
  """Applies a config-file argument (`smoke` or nothing)."""
  if arg in (None, ''):
    return cfg
  if arg == 'smoke':
    return smoke(cfg)
  raise ConfigError(f'unknown config argument {arg!r}: use configs/X.py or configs/X.py:smoke')


def _check_schema(cfg, ref, prefix=''):
  for key in cfg.keys():
    if key not in ref:
      moved = registry.moved_to(f'{prefix}{key}')
      raise ConfigError(f'unknown config field {prefix}{key}; ' + (
          f'it is {moved} now' if moved else f'known fields here: {sorted(ref.keys())}'))
    if isinstance(ref[key], ml_collections.ConfigDict):
      if not isinstance(cfg[key], ml_collections.ConfigDict):
        raise ConfigError(f'config field {prefix}{key} must be a group of fields, not {cfg[key]!r}')
      _check_schema(cfg[key], ref[key], f'{prefix}{key}.')


def _require(ok: bool, field: str, msg: str):
  if not ok:
    raise ConfigError(f'config field {field}: {msg}')


_SPLIT = re.compile(r'^[a-z_]+(\[[0-9%:\-]*\])?$')


def anchor_epochs(cfg) -> tuple:
  """The teacher epochs at which anchors are kept (see METHOD.md section 1)."""
  if cfg.anchors.epochs:
    return tuple(int(e) for e in cfg.anchors.epochs)
  m, e = cfg.anchors.num, cfg.teacher.epochs
  return tuple(round(e * (i + 1) / m) for i in range(m))


STUDENT_INITS = ('random', 'first_anchor', 'last_anchor')


def import_modules(names) -> list:
  """Imports the modules `imports` names, in order, so what they register (data sources,
  teacher sources, methods) is known; returns the imported modules. A name is a module on
  `sys.path` or the working directory ('my_pkg.my_source'), or a `.py` file
  ('path/to/my_source.py', relative to the working directory; imported once per process,
  as the module named by its file's stem).

  Raises:
    ConfigError: `names` is not a tuple of strings, a module is not found, or importing it
      raised (the error names the module and what it raised).
  """
  import importlib  # pylint: disable=g-import-not-at-top
  import importlib.util  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  _require(isinstance(names, (tuple, list)) and all(isinstance(n, str) and n for n in names),
           'imports', f'must be a tuple of module names or .py paths, got {names!r}')
  done = []
  for name in names:
    is_file = name.endswith('.py') or os.sep in name
    try:
      if is_file:
        path = os.path.abspath(os.path.expanduser(name))
        _require(os.path.isfile(path), 'imports', f'{name!r}: no such file')
        key = f'msmgan_jax_imports.{os.path.splitext(os.path.basename(path))[0]}'
        module = sys.modules.get(key)
        if module is None or os.path.abspath(getattr(module, '__file__', '')) != path:
          spec = importlib.util.spec_from_file_location(key, path)
          module = importlib.util.module_from_spec(spec)
          sys.modules[key] = module
          try:
            spec.loader.exec_module(module)
          except BaseException:
            del sys.modules[key]
            raise
      else:
        if os.getcwd() not in sys.path and '' not in sys.path:
          sys.path.append(os.getcwd())  # console scripts do not put it there.
        module = importlib.import_module(name)
    except ConfigError:
      raise
    except ModuleNotFoundError as e:
      raise ConfigError(f'config field imports: cannot import {name!r} ({e}); give a module '
                        'on sys.path or in the working directory, or a .py file\'s path') from e
    except Exception as e:  # pylint: disable=broad-except
      raise ConfigError(f'config field imports: importing {name!r} raised '
                        f'{type(e).__name__}: {e}') from e
    done.append(module)
  return done


def validate(cfg: ml_collections.ConfigDict) -> None:
  """Raises ConfigError on the first wrong field of `cfg`, after importing the modules
  its `imports` names (`import_modules`), whose sources and methods it may use."""
  if 'imports' in cfg:
    import_modules(cfg.imports)
  _check_schema(cfg, defaults())
  methods = ('teacher',) + tuple(registry.METHODS)
  _require(cfg.method in methods, 'method', f'{cfg.method!r} is not one of {methods}')
  problem = data.check_name(cfg.dataset.name)
  _require(problem is None, 'dataset.name', problem)
  _require(isinstance(cfg.seeds, int) and not isinstance(cfg.seeds, bool) and cfg.seeds >= 1,
           'seeds', f'must be an integer >= 1, got {cfg.seeds!r}')
  _require(cfg.student.schedule in ('global', 'phase'), 'student.schedule',
           f'{cfg.student.schedule!r} is not global or phase')
  _require(cfg.student.block_schedule in ('global', 'own'), 'student.block_schedule',
           f'{cfg.student.block_schedule!r} is not global or own')
  _require(cfg.seed_batching in SEED_BATCHING, 'seed_batching',
           f'{cfg.seed_batching!r} is not one of {SEED_BATCHING}')
  _require(cfg.seeds == 1 or cfg.method != 'teacher', 'seeds',
           'several seeds train students; a teacher run trains one teacher (set seeds=1)')
  _require(cfg.dataset.pipeline in data.PIPELINES, 'dataset.pipeline',
           f'{cfg.dataset.pipeline!r} is not one of {data.PIPELINES}')
  for f in ('train_split', 'test_split'):
    _require(bool(_SPLIT.match(str(cfg.dataset[f]))), f'dataset.{f}',
             f'{cfg.dataset[f]!r} is not a TFDS split such as train or train[:10%]')
  for f in ('batch_size', 'eval_batch_size', 'log_every_steps', 'checkpoint_every_steps',
            'steps_per_dispatch',
            'dataset.shuffle_buffer', 'teacher.epochs', 'student.epochs', 'anchors.num'):
    v = cfg[f] if '.' not in f else cfg[f.split('.')[0]][f.split('.')[1]]
    _require(isinstance(v, int) and v > 0, f, f'must be a positive integer, got {v!r}')
  v = cfg.student.min_steps
  _require(isinstance(v, int) and not isinstance(v, bool) and v >= 0, 'student.min_steps',
           f'must be an integer >= 0 (a floor on the student\'s steps; 0 = off), got {v!r}')
  _require(cfg.student.init in STUDENT_INITS, 'student.init',
           f'{cfg.student.init!r} is not one of {STUDENT_INITS}')
  _require(isinstance(cfg.student.init_checkpoint, str), 'student.init_checkpoint',
           f'must be a path (a string), got {cfg.student.init_checkpoint!r}')
  _require(not cfg.student.init_checkpoint or cfg.student.init != 'random',
           'student.init_checkpoint', 'names the anchor the student starts from, and '
           'student.init is random: set student.init=first_anchor (or last_anchor), or leave '
           'student.init_checkpoint empty')
  v = cfg.student.eval_every_epochs
  _require(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0,
           'student.eval_every_epochs', f'must be a finite number >= 0 (0 = off), got {v!r}')
  _require(cfg.dataset.crop_padding >= 0, 'dataset.crop_padding', 'must be >= 0')
  size = cfg.dataset.image_size
  _require(isinstance(size, int) and not isinstance(size, bool) and size >= 0,
           'dataset.image_size', f"must be an integer >= 0 (0 keeps the data's size), got {size!r}")
  _check_split(cfg.dataset)
  for net in ('teacher', 'student'):
    _require(cfg[net].model in models.MODELS, f'{net}.model',
             f'{cfg[net].model!r} is not one of {sorted(models.MODELS)}')
    for f in ('lr', 'momentum', 'weight_decay', 'warmup_epochs'):
      v = cfg[net][f]
      _require(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0, f'{net}.{f}',
               f'must be a finite number >= 0, got {v!r}')
    _require(cfg[net].warmup_epochs <= cfg[net].epochs, f'{net}.warmup_epochs',
             f'must not exceed {net}.epochs ({cfg[net].epochs})')
  import jax  # pylint: disable=g-import-not-at-top
  for f in ('batch_size', 'eval_batch_size'):
    _require(cfg[f] % jax.device_count() == 0, f,
             f'{cfg[f]} does not split evenly over {jax.device_count()} devices; use a multiple')
  shares = tuple(cfg.student.stage_shares)
  _require(not shares or (len(shares) == cfg.anchors.num and all(
      isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0 for x in shares)
      and abs(sum(shares) - 1) < 1e-6), 'student.stage_shares',
      f'{shares} must be empty (equal stages) or {cfg.anchors.num} positive numbers summing to '
      '1, one per stage (anchors.num)')
  _check_source(cfg)
  if cfg.teacher.checkpoints:
    paths = [os.path.abspath(p) for p in cfg.teacher.checkpoints]
    _require(len(set(paths)) == len(paths), 'teacher.checkpoints',
             f'{tuple(cfg.teacher.checkpoints)} repeats a path; give one anchor per stage')
    _require(len(paths) == cfg.anchors.num, 'teacher.checkpoints',
             f'gives {len(paths)} paths but anchors.num is {cfg.anchors.num}')
  else:
    _check_anchor_epochs(cfg)
  _check_numbers(cfg)
  registry.check_groups(cfg)
  if cfg.method != 'teacher':
    if cfg.teacher.source == 'msmgan_jax':
      _check_pair(cfg)  # an external teacher's blocks are checked when it is loaded.
    _check_phases(cfg)
    method = registry.METHODS[cfg.method]
    if method.check is not None:
      method.check(cfg)
  if cfg.get('candidates'):
    _check_candidates(cfg)


def run_fields(method: str) -> tuple:
  """The fields the candidates of one program of `method` may set apart (`core.runs`):
  `student.lr`, the method's registered `run_fields`, and a field the method copied into
  one of those (a `Moved` copy, say kd.beta -> msmgan.beta), which it no longer reads."""
  from msmgan_jax.core import runs  # pylint: disable=g-import-not-at-top
  own = runs.COMMON_FIELDS + registry.METHODS[method].run_fields
  copied = tuple(m.old for m in registry.MOVED
                 if m.copy and m.method == method and m.new in own)
  return own + copied


def candidate_configs(cfg) -> list:
  """One config per entry of `cfg.candidates`: `cfg` with that setting applied and no
  candidates (each is the config its own run would have). [] without candidates."""
  out = []
  for text in tuple(cfg.get('candidates', ())):
    one = copy_config(cfg)
    one.candidates = ()
    out.append(apply_setting(one, parse_setting(text)))
  return out


def candidate_values(cfg) -> tuple:
  """(the fields in which the candidates of `cfg` differ, sorted; per candidate, their
  values as floats): what `core.runs` makes per-run inputs. ((), []) without candidates."""
  cands = candidate_configs(cfg)
  if not cands:
    return (), []
  flat = [flat_fields(c.to_dict()) for c in cands]
  own = set(registry.METHODS[cfg.method].run_fields) | {'student.lr'}
  fields = sorted(f for f in own if f in flat[0] and len({repr(x[f]) for x in flat}) > 1)
  return tuple(fields), [{f: float(x[f]) for f in fields} for x in flat]


def flat_fields(d: dict, prefix: str = '') -> dict:
  """A nested dict (a config's `to_dict()` or its JSON) as {'dotted.field': value}: the
  names `--config.x.y=` and candidate settings use. Leaves that are not dicts (tuples,
  lists, scalars) stay whole."""
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(flat_fields(v, f'{prefix}{k}.'))
    else:
      out[prefix + k] = v
  return out


def _check_candidates(cfg) -> None:
  """`candidates`: settings of student runs, each a valid config, that differ only in
  fields one program can take per run (`run_fields`), as numbers, and agree on which of
  them are 0 (a term off) or negative (a program computes the same terms for every run)."""
  texts = cfg.candidates
  _require(isinstance(texts, tuple) and all(isinstance(t, str) for t in texts), 'candidates',
           f'must be a tuple of settings such as \'student.lr=0.2; kd.tau=2.0\', got {texts!r}')
  _require(cfg.method != 'teacher', 'candidates', 'candidates are student settings; a '
           'teacher run trains one teacher (leave candidates empty)')
  allowed = run_fields(cfg.method)
  cands = []
  for i, text in enumerate(texts):
    try:
      fields = parse_setting(text)
    except ValueError as e:
      raise ConfigError(f'config field candidates: candidate {i} {text!r}: {e}') from e
    for f in ('candidates', 'seed', 'seeds', 'method'):
      _require(f not in fields, 'candidates', f'candidate {i} {text!r} sets {f}; a candidate '
               'sets hyperparameters of the run (set seeds and the method on the config)')
    try:
      one = candidate_configs(ml_collections.ConfigDict({**cfg.to_dict(), 'candidates': (text,)}))[0]
      validate(one)
    except ConfigError as e:
      raise ConfigError(f'config field candidates: candidate {i} {text!r}: {e}') from e
    cands.append(flat_fields(one.to_dict()))
  first = cands[0] if cands else {}
  for i, c in enumerate(cands[1:], 1):
    differ = sorted(f for f in first if repr(first[f]) != repr(c.get(f)))
    fixed = [f for f in differ if f not in allowed]
    _require(not fixed, 'candidates', f'candidate {i} {texts[i]!r} changes {", ".join(fixed)} '
             f'from candidate 0, which shapes the compiled program of {cfg.method}; the '
             f'candidates of one program may differ only in {", ".join(allowed)}: train the '
             'others as runs of their own')
    for f in differ:
      a, b = first[f], c[f]
      _require(isinstance(b, (int, float)) and not isinstance(b, bool)
               and (a > 0) == (b > 0) and (a == 0) == (b == 0), 'candidates',
               f'candidate {i} sets {f}={b!r} where candidate 0 has {a!r}: in one program a '
               'field is 0 (its term off), negative or positive in every candidate alike; '
               'train this one as a run of its own')


def _check_source(cfg):
  """teacher.source and the fields it needs (core.teachers)."""
  from msmgan_jax.core import teachers  # pylint: disable=g-import-not-at-top
  t = cfg.teacher
  _require(t.source in teachers.SOURCES, 'teacher.source',
           f'{t.source!r} is not one of {teachers.SOURCES}')
  _require(t.inputs in teachers.INPUTS, 'teacher.inputs',
           f'{t.inputs!r} is not one of {teachers.INPUTS}')
  _require(t.outputs in teachers.OUTPUTS, 'teacher.outputs',
           f'{t.outputs!r} is not one of {teachers.OUTPUTS}')
  _require(isinstance(t.feature_layers, (tuple, list)) and all(
      isinstance(n, str) and n for n in t.feature_layers), 'teacher.feature_layers',
      f'{t.feature_layers!r} must be a tuple of layer names')
  if t.source == 'msmgan_jax':
    _require((t.inputs, t.outputs) == ('normalised', 'logits'), 'teacher.inputs',
             f'teacher.inputs={t.inputs!r} and teacher.outputs={t.outputs!r} would be ignored: '
             'a teacher of this library reads normalised images and returns logits; leave '
             'them at normalised and logits')
    return
  _require(cfg.method != 'teacher', 'teacher.source',
           f'{t.source}: method teacher trains a teacher here; a teacher from elsewhere is '
           'given to a student method (set method, say kd)')
  _require(bool(t.checkpoints), 'teacher.checkpoints',
           f'teacher.source {t.source} reads the teacher from teacher.checkpoints: give its '
           'path(s), one per anchor, weakest first')
  _require(isinstance(t.output, str) and isinstance(t.train_kwarg, str), 'teacher.output',
           'teacher.output and teacher.train_kwarg are strings (a name, or an index as text)')
  teachers.check(t)  # the fields this source reads (core.teachers.CHECKS).
  _require(cfg.student.init == 'random', 'student.init',
           f'{cfg.student.init} copies weights from an anchor of this library\'s models; a '
           f'{t.source} teacher has none to give (set student.init=random)')


def _check_split(dataset):
  """The dataset fields the data sources read (dataset.split_fractions and split_seed: how
  an unsplit image folder is split): each registered source checks its own."""
  data_sources.check(dataset)


def _check_anchor_epochs(cfg):
  _require(cfg.anchors.num <= cfg.teacher.epochs, 'anchors.num',
           f'{cfg.anchors.num} anchors need at least as many teacher epochs (teacher.epochs is '
           f'{cfg.teacher.epochs}); lower anchors.num or raise teacher.epochs')
  epochs = anchor_epochs(cfg)
  _require(len(epochs) == cfg.anchors.num, 'anchors.epochs',
           f'gives {len(epochs)} anchors but anchors.num is {cfg.anchors.num}; give one epoch '
           'per anchor')
  _require(all(a < b for a, b in zip((0,) + epochs, epochs)) and epochs[-1] <= cfg.teacher.epochs,
           'anchors.epochs', f'{epochs} must increase strictly within 1..teacher.epochs '
           f'({cfg.teacher.epochs})')


def _check_numbers(cfg):
  """Ranges of the trainer's own rates (each method's group checks its own fields)."""
  registry.check_finite(cfg, ('student.block_lr', 'student.finetune_lr_mult'))


def _check_phases(cfg):
  """A method without a teacher cannot have phases that need one."""
  if registry.METHODS[cfg.method].uses_teacher:
    return
  k = models.create_model(cfg.student.model, 10).num_blocks
  for p in (p for m in range(cfg.anchors.num) for p in registry.stage_phases(cfg, k, m)):
    _require(not (p.is_feature or p.adversarial or p.partner is ANCHOR), 'method',
             f'{cfg.method!r} is registered without a teacher but its phase {p.name!r} needs '
             "one (features, the anchor's logits or a GAN); register it with uses_teacher=True")


def _check_pair(cfg):
  """Teacher and student must have blocks that line up (same K, same downsampling)."""
  t = models.create_model(cfg.teacher.model, 10)
  s = models.create_model(cfg.student.model, 10)
  _require(t.num_blocks == s.num_blocks, 'student.model',
           f'{cfg.student.model} has {s.num_blocks} blocks but teacher {cfg.teacher.model} has '
           f'{t.num_blocks}; pick a student with the same number of blocks')
  _require(tuple(t.block_strides) == tuple(s.block_strides), 'student.model',
           f'{cfg.student.model} downsamples its blocks by {tuple(s.block_strides)} but teacher '
           f'{cfg.teacher.model} by {tuple(t.block_strides)}; block features must align')


REFERENCE_START, REFERENCE_END = '<!-- config reference: start -->', '<!-- config reference: end -->'
REFERENCE_PAGE = os.path.join('docs', 'configuration.md')  # relative to the checkout's root.


def reference_markdown() -> str:
  """The config reference (field, default, comment) as Markdown, read from `defaults()` and
  each registered method group's defaults function.

  The comments are the ones in those functions' source, so the reference cannot drift from
  them; `python -m msmgan_jax.config` writes it into docs/configuration.md between the markers.
  """
  cfg = defaults()
  rows = registry.reference_rows(defaults, cfg)
  student = next(i for i, r in enumerate(rows) if r[0].startswith('student.'))
  groups = [r for g in registry.GROUPS.values() for r in registry.reference_rows(g.defaults, cfg)]
  rows = rows[:student] + groups + rows[student:]
  lines = [f'| `{field}` | `{value!r}` | {comment.replace("|", "/")} |'
           for field, value, comment in rows]
  return '\n'.join(['| field | default | what |', '|---|---|---|'] + lines) + '\n'


def write_reference(page: str = REFERENCE_PAGE) -> bool:
  """Rewrites the config reference between the markers of the Markdown file `page`
  (default docs/configuration.md, relative to the working directory).

  Returns:
    True if the file changed, False if it already held `reference_markdown()`.
  Raises:
    OSError: `page` cannot be read or written.
    ConfigError: `page` has no REFERENCE_START ... REFERENCE_END section.
  """
  with open(page) as f:
    text = f.read()
  head, _, rest = text.partition(REFERENCE_START)
  _, _, tail = rest.partition(REFERENCE_END)
  if not rest:
    raise ConfigError(f'{page} has no {REFERENCE_START} ... {REFERENCE_END} section')
  new = f'{head}{REFERENCE_START}\n{reference_markdown()}{REFERENCE_END}{tail}'
  if new != text:
    with open(page, 'w') as f:
      f.write(new)
  return new != text


def main(argv=None) -> int:
  """`python -m msmgan_jax.config [PAGE]`: regenerates the config reference of PAGE (default
  docs/configuration.md, run from the checkout's root) between its markers from `defaults()`;
  exit 2 when the file is missing or has no markers."""
  import argparse  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(prog='python -m msmgan_jax.config', description=main.__doc__)
  parser.add_argument('page', nargs='?', default=REFERENCE_PAGE,
                      help=f'the Markdown file whose config reference to rewrite (default '
                           f'{REFERENCE_PAGE})')
  args = parser.parse_args(argv)
  try:
    print('updated' if write_reference(args.page) else 'up to date')
  except (OSError, ConfigError) as e:
    sys.stderr.write(f'error: {e}\n')
    return 2
  return 0


if __name__ == '__main__':
  import sys  # pylint: disable=g-import-not-at-top
  sys.exit(main())
