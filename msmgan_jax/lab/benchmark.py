"""The measurements of `python -m msmgan_jax.benchmark` (see `msmgan_jax/benchmark.py` for
what each row is and the command line): `measure(...)` runs them and returns the result
(rows, machine, versions), `markdown(result)` tabulates it, `recount(saved, workdir)`
counts a saved result's FLOP columns again.

Every JSON entry carries `case`, `jax_img_s`, `ref_img_s` and `ratio` (JAX over the
reference: > 1 means JAX is faster). The steps are the library's own (`steps.PhaseSteps`
through `student.Distiller`), on random 28x28x1 images, batch 128. The PyTorch reference
networks are `torch_reference.py`, the op rows `op_profile.py`, the Keras 3 teacher twin
`keras_resnet.py`.
"""
import importlib.util
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time

import jax
import numpy as np

from msmgan_jax import config as config_lib
from msmgan_jax.data import datasets as data
from msmgan_jax.core import models
from msmgan_jax.core import optim
from msmgan_jax import methods  # noqa: F401 (registers the built-in methods)
from msmgan_jax.methods import registry as phases
from msmgan_jax.training import student
from msmgan_jax.training import teacher
from msmgan_jax.training import train
from msmgan_jax.training import workdir as workdir_lib
from msmgan_jax.files import checkpoints
from msmgan_jax.files import io
from msmgan_jax.core import sharding

BATCH, SHAPE, CLASSES = 128, (28, 28, 1), 10
SEEDS = 3  # seeds in one program for the seed rows.


def _cfg(student_model='resnet8', teacher_model='resnet20'):
  cfg = config_lib.defaults()
  cfg.teacher.model, cfg.student.model = teacher_model, student_model
  # 2 epochs of 60,000 images: over the budget floor, so no run-budget warning is printed.
  cfg.batch_size, cfg.anchors.num, cfg.student.epochs = BATCH, 1, 2
  return cfg


def _batch(rng):
  return {'image': rng.normal(size=(BATCH,) + SHAPE).astype(np.float32),
          'label': rng.integers(0, CLASSES, BATCH).astype(np.int32)}


def _teacher(cfg):
  model = models.create_model(cfg.teacher.model, CLASSES)
  v = optim.init_variables(model, jax.random.key(7), SHAPE)
  anchor = teacher.Anchor(1, 0.0, 'random', v)
  return teacher.Teacher(model, cfg.teacher.model, [anchor], 0.0,
                         optim.count_params(v['params']), 0.0, 0)


def _external_teacher(cfg, source: str):
  """`_teacher(cfg)`'s network and weights as a teacher from `source`: 'keras' (its Keras 3
  twin) or 'flax_module' (inside a Linen module that is not a Classifier), features from
  the layers named block1..block3."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  from msmgan_jax.core import teachers  # pylint: disable=g-import-not-at-top
  native = _teacher(cfg)
  v = native.anchors[0].variables
  if source == 'keras':
    from msmgan_jax.lab import keras_resnet  # pylint: disable=g-import-not-at-top
    given = teachers.keras_teacher(
        keras_resnet.keras_resnet(cfg.teacher.model, v, SHAPE, CLASSES),
        ('block1', 'block2', 'block3'))
  else:
    factory = models.MODELS[cfg.teacher.model]

    class Wrapped(nn.Module):  # logits only; the blocks are sub-modules net/blockK.
      @nn.compact
      def __call__(self, x, train: bool = False):
        return factory(num_classes=CLASSES, name='net')(x, train)[0]
    given = teachers.flax_teacher(
        Wrapped(), {'params': {'net': v['params']}, 'batch_stats': {'net': v['batch_stats']}},
        ('net/block1', 'net/block2', 'net/block3'))
  info = data.DatasetInfo('bench', CLASSES, SHAPE, 60000, 10000, mean=(0.0,), std=(1.0,))
  model = given.build(info)
  return teacher.Teacher(model, f'{cfg.teacher.model} ({source})',
                         [teacher.Anchor(1, 0.0, source, given.variables[0])], 0.0,
                         native.params, 0.0, 0, source=source)


def teacher_cases(workdir: str) -> dict:
  """name -> JaxCase: the kd step with the native teacher and with each other source
  (Keras where Keras 3 is installed)."""
  cfg = _cfg()
  kd = phases.METHODS['kd'].stage_phases(cfg, 3, 0)[0]
  out = {'kd_resnet20_resnet8': JaxCase(cfg, kd, os.path.join(workdir, 'kd'))}
  sources = ['flax_module']
  if importlib.util.find_spec('keras') is not None:
    sources.insert(0, 'keras')
  for source in sources:
    out[f'kd_{source}_resnet20_resnet8'] = JaxCase(
        cfg, kd, os.path.join(workdir, f'kd_{source}'), _external_teacher(cfg, source))
  return out


class JaxCase:
  """One student step of the library (`phase` of the Distiller of `cfg`), ready to time;
  the teacher is a random `cfg.teacher.model` unless `given` (a `training.teacher.Teacher`)."""

  def __init__(self, cfg, phase, workdir, given=None):
    info = data.DatasetInfo('bench', CLASSES, SHAPE, 60000, 10000)
    wd = workdir_lib.Workdir(workdir)
    self.d = student.Distiller(cfg, wd, info, None, None, sharding.mesh(),
                               given if given is not None else _teacher(cfg))
    self.d.phases = [[phase]]  # one stage of one phase.
    self.phase, self.anchor = phase, self.d.anchors[0]
    self.states = self.d.build_states(0, 0, self.d.init_carry())
    self.step = self.d.step_fn(phase, self.anchor)
    self.batches = [sharding.shard_batch(_batch(np.random.default_rng(i)), self.d.mesh)
                    for i in range(4)]
    runs = len(self.d.seeds.seeds)  # seeds x candidates.
    if runs > 1:  # each run its own batch, stacked as the trainer stacks them.
      spec = ('data',) if self.d.seeds.batching() == 'unroll' else ()
      placed = jax.sharding.NamedSharding(self.d.mesh, jax.sharding.PartitionSpec(None, *spec))
      self.batches = [{k: jax.device_put(np.stack([np.asarray(self.batches[(i + j) % 4][k])
                                                   for j in range(runs)]), placed)
                       for k in self.batches[0]} for i in range(4)]
    t0 = time.perf_counter()
    self.states, m = self.step(self.states, self.batches[0])
    jax.block_until_ready(m)
    self.compile_s = time.perf_counter() - t0

  def run(self, n):
    t0 = time.perf_counter()
    for i in range(n):
      self.states, m = self.step(self.states, self.batches[i % 4])
    jax.block_until_ready((self.states['g'].params, m))
    return n * BATCH / (time.perf_counter() - t0)

  def flops(self):
    """XLA's count of floating-point operations of one whole step, on the program JAX
    lowers (before the backend's passes; the compiled GPU program hides its convolutions
    in cuDNN calls that XLA counts as 0), or None where the backend gives no such count
    (JAX 0.11's GPU backend)."""
    fns, p = self.d.steps_for(self.phase), self.phase
    s, b = self.states, self.batches[0]
    fn = fns.feature_step if p.is_feature else fns.logit_step
    return _cost(fn, s['g'], s.get(p.state_name), self.anchor.variables, b)


class DispatchCase(JaxCase):
  """`JaxCase` with `k` student steps per dispatch (`Distiller.multi_step_fn`, the program
  `steps_per_dispatch` runs): each call hands the device k batches already on it."""

  def __init__(self, cfg, phase, workdir, k: int):
    self.k = k
    super().__init__(cfg, phase, workdir)

  def _stacked(self, i):
    return jax.tree.map(lambda *b: jax.numpy.stack(b), *[self.batches[(i + j) % 4]
                                                        for j in range(self.k)])

  def _first(self):
    self.step = self.d.multi_step_fn(self.phase, self.anchor)
    self.stacked = [self._stacked(i) for i in range(4)]
    t0 = time.perf_counter()
    self.states, m = self.step(self.states, self.stacked[0])
    jax.block_until_ready(m)
    self.compile_s = time.perf_counter() - t0

  def run(self, n):
    """Images/s over `n` steps (rounded up to whole dispatches of k)."""
    if not hasattr(self, 'stacked'):
      self._first()
    calls = -(-n // self.k)
    t0 = time.perf_counter()
    for i in range(calls):
      self.states, m = self.step(self.states, self.stacked[i % 4])
    jax.block_until_ready((self.states['g'].params, m))
    return calls * self.k * BATCH / (time.perf_counter() - t0)


DISPATCH_KS = (1, 8, 32)      # steps per dispatch of the --dispatch rows.
RUNS_PER_PROGRAM = (1, 4, 16)  # students in one program (seeds) of the --dispatch rows.
# Tuning candidates of the --dispatch rows: kd's learning rate and temperature set apart.
CANDIDATES = tuple(f'student.lr={lr}; kd.tau={tau}' for lr in (0.05, 0.1, 0.2, 0.4)
                   for tau in (1.0, 2.0, 4.0, 8.0))


def dispatch_cases(workdir: str) -> dict:
  """name -> case of the --dispatch rows: the kd step (resnet20 -> resnet8) with k steps per
  dispatch (`DISPATCH_KS`), and with R students in one program (`RUNS_PER_PROGRAM`): R seeds,
  and R tuning candidates (`CANDIDATES`, one seed each, their learning rate and temperature
  per-run inputs, `core.runs`), one step per dispatch."""
  cfg = _cfg()
  kd = phases.METHODS['kd'].stage_phases(cfg, 3, 0)[0]
  out = {}
  for k in DISPATCH_KS:
    path = os.path.join(workdir, f'dispatch_{k}')
    out[f'kd_{k}_steps_per_dispatch'] = (JaxCase(cfg, kd, path) if k == 1
                                         else DispatchCase(cfg, kd, path, k))
  for r in RUNS_PER_PROGRAM[1:]:
    many = _cfg()
    many.seeds = r
    out[f'kd_{r}_runs_per_program'] = JaxCase(many, kd, os.path.join(workdir, f'runs_{r}'))
  for r in RUNS_PER_PROGRAM[1:]:  # tuning candidates: learning rate and temperature per run.
    many = _cfg()
    many.candidates = CANDIDATES[:r]
    out[f'kd_{r}_candidates_per_program'] = JaxCase(many, kd,
                                                    os.path.join(workdir, f'candidates_{r}'))
  return out


def measure_dispatch(workdir: str, peak_tflops: float = 0.0, quick: bool = False) -> dict:
  """The --dispatch rows, interleaved like `measure`'s: images/s (of every student, for the
  runs rows), the ratio to one kd step per dispatch of one student, compile seconds, and
  XLA's FLOPs of one kd step times the images/s as TFLOP/s (and of `peak_tflops`)."""
  steps, repeats = (8, 2) if quick else (32, 3)
  jax_cases = dispatch_cases(workdir)
  for c in jax_cases.values():
    c.run(2)
  samples = {n: [] for n in jax_cases}
  for _ in range(repeats):
    for n, c in jax_cases.items():
      samples[n].append(c.run(steps) * len(c.d.seeds.seeds))
  base = jax_cases['kd_1_steps_per_dispatch']
  kd_flops = base.flops()
  one = statistics.median(samples['kd_1_steps_per_dispatch'])
  rows = []
  for n, c in jax_cases.items():
    img_s = statistics.median(samples[n])
    row = {'case': n, 'jax_img_s': round(img_s, 1), 'ref_img_s': round(one, 1),
           'ratio': round(img_s / one, 3), 'compile_s': round(c.compile_s, 2),
           'samples_img_s': [round(x, 1) for x in samples[n]],
           'note': ('images/s of every student; ratio vs one student, one step per dispatch'
                    if 'per_program' in n else 'ratio vs one step per dispatch')}
    if kd_flops:
      _flop_columns(row, kd_flops, None, peak_tflops)
    rows.append(row)
  return {'machine': f'{platform.machine()}, {os.cpu_count()} CPU cores',
          'device': jax.devices()[0].device_kind, 'jax': jax.__version__, 'torch': None,
          'torch_device': None, 'peak_tflops': peak_tflops or None, 'batch': BATCH,
          'image_shape': list(SHAPE), 'steps_per_sample': steps, 'repeats': repeats,
          'quick': quick, 'mode': 'dispatch',
          'peak_rss_mb': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
          'rows': rows}


def _cost(fn, *args):
  analysis = fn.lower(*args).cost_analysis()
  if isinstance(analysis, list):
    analysis = analysis[0]
  return float(analysis['flops']) if analysis and 'flops' in analysis else None


def cases(quick: bool, workdir: str):
  """name -> JaxCase for every measured JAX step."""
  out = {}
  for net in ('resnet8', 'resnet20'):
    out[f'ce_{net}'] = JaxCase(_cfg(net, 'resnet20'), phases.METHODS['ce'].stage_phases(_cfg(), 3, 0)[0], os.path.join(workdir, f'ce_{net}'))
  cfg = _cfg()
  out['kd_resnet20_resnet8'] = JaxCase(cfg, phases.METHODS['kd'].stage_phases(cfg, 3, 0)[0],
                                       os.path.join(workdir, 'kd'))
  msmgan = phases.stage_phases(cfg, 3)
  for p in (msmgan[:1] + msmgan[-1:] if quick else msmgan):
    out[f'msmgan_{p.name}'] = JaxCase(cfg, p, os.path.join(workdir, p.name))
  for how in ('unroll', 'vmap'):  # 3 seeds' ce_resnet8 steps in one program.
    seeded = _cfg('resnet8', 'resnet20')
    seeded.seeds, seeded.seed_batching = SEEDS, how
    out[f'ce_resnet8_{SEEDS}_seeds_{how}'] = JaxCase(seeded, phases.METHODS['ce'].stage_phases(_cfg(), 3, 0)[0], os.path.join(workdir, f'seeds_{how}'))
  return out


def torch_reference(name: str, threads: int, device: str = 'cpu'):
  """A PyTorch step of the same network, loss and optimizer as `name`, or None."""
  try:
    from msmgan_jax.lab import torch_reference as ref  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  return ref.make(name, BATCH, SHAPE, CLASSES, threads, device)


def torch_device() -> str:
  """Where the PyTorch reference runs: on the GPU when JAX runs on one and PyTorch sees it."""
  if jax.default_backend() != 'gpu':
    return 'cpu'
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    return 'cpu'
  return 'cuda' if torch.cuda.is_available() else 'cpu'


def _has_tensorflow() -> bool:
  return importlib.util.find_spec('tensorflow') is not None


def input_pipeline_img_s(n_batches: int, pipeline: str, dataset: str = 'fashion_mnist') -> float:
  """Images/s of a real training pipeline (`dataset`, crop + flip) alone: `device` (in
  device memory, jitted) or `tfdata`."""
  cfg = config_lib.defaults().dataset
  cfg.name, cfg.pipeline = dataset, pipeline
  _, batches, _ = data.load(cfg, batch_size=BATCH, eval_batch_size=1000)
  it = batches(0)
  for _ in range(10):
    jax.block_until_ready(next(it))
  t0 = time.perf_counter()
  for _ in range(n_batches):
    last = next(it)
  jax.block_until_ready(last)
  return n_batches * BATCH / (time.perf_counter() - t0)


def whole_runs(workdir: str, epochs: int, dataset: str = 'fashion_mnist',
               run_methods=('kd', 'msmgan'), steps_per_dispatch=(1,)) -> list:
  """Wall time of whole `kd` and `msmgan` student runs at the same image budget.

  Full Fashion-MNIST (or `dataset`, its arrays file), `epochs` epochs of student images,
  resnet20 -> resnet8, 3 stages, evaluation after each stage; the three anchors are freshly initialised resnet20s (the
  student's speed does not depend on what the anchors know), so no teacher is trained.
  Each run includes its compilations and evaluations, as a user's run does; each method
  runs once per value of `steps_per_dispatch` (rows `run_<method>`, `run_<method>_k<k>`).
  """
  model = models.create_model('resnet20', CLASSES)
  anchors = []
  for e in range(3):
    v = optim.init_variables(model, jax.random.key(e), SHAPE)
    path = os.path.join(workdir, 'anchors')
    checkpoints.Checkpoints(path).save(e + 1, v, {'model': 'resnet20', 'epoch': e + 1,
                                            'test_accuracy': 0.0})
    anchors.append(os.path.join(path, str(e + 1)))
  rows = []
  for method in run_methods:
    for k in steps_per_dispatch:
      cfg = config_lib.defaults()
      cfg.method, cfg.student.epochs, cfg.dataset.name = method, epochs, dataset
      cfg.teacher.checkpoints, cfg.student.eval_every_phase = tuple(anchors), False
      cfg.steps_per_dispatch = k
      name = f'run_{method}' + (f'_k{k}' if k > 1 else '')
      run_dir = os.path.join(workdir, name)
      shutil.rmtree(run_dir, ignore_errors=True)
      t0 = time.perf_counter()
      summary = train.train_and_evaluate(cfg, run_dir)
      rows.append({'case': name, 'wall_s': round(time.perf_counter() - t0, 1),
                   'student_wall_s': summary['student']['wall_s'], 'epochs': epochs,
                   'steps_per_dispatch': k,
                   'test_accuracy': summary['student']['test_accuracy']})
  kd = rows[0]['wall_s']
  for r in rows:
    r['time_vs_kd'] = round(r['wall_s'] / kd, 3)
  return rows


ACCELERATOR_K = 10  # steps per dispatch of the check's second kd run: divides log_every_steps.


def run_notebook(workdir: str, tiny: bool) -> dict:
  """Executes the Colab notebook top to bottom (nbclient) in `workdir`, as shipped (`tiny`:
  the test suite's small run); {'ok', 'wall_s', 'error' (its last line, when not ok)}."""
  import nbclient  # pylint: disable=g-import-not-at-top
  import nbformat  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  nb = nbformat.read(os.path.join(root, 'notebooks', 'msmgan_colab_tpu.ipynb'), as_version=4)
  os.makedirs(workdir, exist_ok=True)
  old = os.environ.pop('MSMGAN_JAX_NOTEBOOK_TINY', None)
  if tiny:
    os.environ['MSMGAN_JAX_NOTEBOOK_TINY'] = '1'  # the kernel inherits it.
  t0 = time.perf_counter()
  try:
    nbclient.NotebookClient(nb, timeout=600, kernel_name='python3',
                            resources={'metadata': {'path': workdir}}).execute()
    out = {'ok': True}
  except Exception as e:  # pylint: disable=broad-except  (recorded: the check goes on)
    out = {'ok': False, 'error': str(e).strip().splitlines()[-1][:500]}
  finally:
    os.environ.pop('MSMGAN_JAX_NOTEBOOK_TINY', None)
    if old is not None:
      os.environ['MSMGAN_JAX_NOTEBOOK_TINY'] = old
  nbformat.write(nb, os.path.join(workdir, 'executed.ipynb'))  # its outputs, for a look.
  out['wall_s'] = round(time.perf_counter() - t0, 1)
  return out


def accelerator_check(workdir: str, dataset: str = 'fashion_mnist', peak_tflops: float = 0.0,
                      quick: bool = False) -> dict:
  """The prepared check for a GPU or TPU at hand (`--accelerator`, a few minutes there):
  the --dispatch rows (kd at 1, 8, 32 steps per dispatch; 1, 4, 16 students per program),
  the Colab notebook run as shipped, and a whole kd student run (1 epoch of `dataset`, fresh
  anchors) at one and at `ACCELERATOR_K` steps per dispatch. `quick`: the notebook's tiny
  run (what a CPU can do in minutes). Each part's failure is recorded, not raised."""
  t0 = time.perf_counter()
  out = {'device': jax.devices()[0].device_kind, 'platform': jax.devices()[0].platform,
         'devices': jax.device_count(), 'jax': jax.__version__, 'dataset': dataset,
         'machine': f'{platform.machine()}, {os.cpu_count()} CPU cores', 'quick': quick}
  parts = {
      'dispatch': lambda: measure_dispatch(os.path.join(workdir, 'dispatch'), peak_tflops,
                                           quick=True),
      'notebook': lambda: run_notebook(os.path.join(workdir, 'notebook'), tiny=quick),
      'kd_run': lambda: whole_runs(os.path.join(workdir, 'runs'), 1, dataset, ('kd',),
                                   (1, ACCELERATOR_K)),
  }
  for name, part in parts.items():
    t = time.perf_counter()
    try:
      out[name] = part()
    except Exception as e:  # pylint: disable=broad-except  (recorded: the check goes on)
      out[name] = {'error': f'{type(e).__name__}: {str(e).strip()[:500]}'}
    print(f'accelerator check: {name} done in {time.perf_counter() - t:.0f} s', flush=True)
  out['wall_s'] = round(time.perf_counter() - t0, 1)
  return out


def accelerator_markdown(result: dict) -> str:
  """The accelerator check's result as Markdown: the dispatch table, the notebook, kd runs."""
  lines = [f'# Accelerator check: {result["device"]} ({result["platform"]}, '
           f'{result["devices"]} device(s)), JAX {result["jax"]}', '',
           f'`python -m msmgan_jax.benchmark --accelerator`, {result["wall_s"]} s in all.', '']
  d = result.get('dispatch', {})
  lines += (['## Steps per dispatch, students per program', '', markdown(d)] if 'rows' in d
            else [f'Dispatch rows failed: {d.get("error")}', ''])
  nb = result.get('notebook', {})
  lines += ['## The Colab notebook', '',
            (f'Ran top to bottom in {nb.get("wall_s")} s.' if nb.get('ok')
             else f'Failed: {nb.get("error")}'), '']
  runs = result.get('kd_run')
  if isinstance(runs, list):
    lines += ['## A whole kd run (1 epoch, fresh anchors)', '',
              '| run | steps per dispatch | wall s | student s | test accuracy |',
              '|---|---|---|---|---|']
    lines += [f'| {r["case"]} | {r["steps_per_dispatch"]} | {r["wall_s"]} | '
              f'{r["student_wall_s"]} | {r["test_accuracy"]} |' for r in runs]
  else:
    lines.append(f'kd runs failed: {(runs or {}).get("error")}')
  return '\n'.join(lines) + '\n'


def _defaults_config_file(workdir: str) -> str:
  """Writes `workdir/defaults_config.py`, a config file of `config.defaults()` (the
  resnet20 teacher, resnet8 student of configs/default.py; the seed rows set the method, the
  split and the epochs), and returns its path: an installed package has no configs/."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(os.path.abspath(workdir), 'defaults_config.py')
  io.write_text(path, '"""config.defaults(), for the benchmark\'s seed rows."""\n'
                'from msmgan_jax import config\n\n\ndef get_config(arg=None):\n'
                '  return config.finalize(config.defaults(), arg)\n')
  return path


def seed_runs(workdir: str, epochs: int, seeds: int = 3) -> list:
  """`seeds` seeds of one `ce` run (resnet8, 10% of Fashion-MNIST, `epochs` epochs): as
  that many separate commands one after another, and as one command with `seeds` set
  (one program steps every seed). Whole processes, as a user runs them: start-up, data
  loading, compilation and evaluation included."""
  config_file = _defaults_config_file(workdir)

  def command(run_dir, *fields):
    return [sys.executable, '-m', 'msmgan_jax.main', '--config', config_file,
            '--workdir', run_dir, '--overwrite', '--config.method=ce',
            "--config.dataset.train_split=train[:10%]", f'--config.student.epochs={epochs}',
            *fields]
  rows, root = [], os.getcwd()
  t0 = time.perf_counter()
  for seed in range(seeds):
    subprocess.run(command(os.path.join(workdir, f'seed{seed}'), f'--config.seed={seed}'),
                   check=True, cwd=root, capture_output=True)
  separate = time.perf_counter() - t0
  t0 = time.perf_counter()
  subprocess.run(command(os.path.join(workdir, 'together'), f'--config.seeds={seeds}'),
                 check=True, cwd=root, capture_output=True)
  together = time.perf_counter() - t0
  accs = [io.read_json(os.path.join(workdir, f'seed{s}', 'summary.json'))['student'][
      'test_accuracy'] for s in range(seeds)]
  joint = io.read_json(os.path.join(workdir, 'together', 'summary.json'))['student']
  rows.append({'case': f'ce_{seeds}_seeds', 'separate_s': round(separate, 1),
               'together_s': round(together, 1), 'ratio': round(together / separate, 3),
               'separate_accuracies': accs, 'together_accuracies': joint['test_accuracies'],
               'epochs': epochs})
  return rows


def measure(quick: bool, workdir: str, profile: bool = False, runs: int = 0,
            seeds: int = 0, dataset: str = 'fashion_mnist', peak_tflops: float = 0.0,
            teachers_only: bool = False) -> dict:
  threads, ref_device = os.cpu_count(), torch_device()
  steps, repeats = (5, 3) if quick else (20, 5)
  jax_cases = teacher_cases(workdir) if teachers_only else cases(quick, workdir)
  refs = {n: torch_reference(n, threads, ref_device) for n in jax_cases
          if not n.startswith('msmgan_') and '_seeds_' not in n
          and (n == 'kd_resnet20_resnet8' or not teachers_only)}
  samples = {n: [] for n in jax_cases}
  ref_samples = {n: [] for n, r in refs.items() if r is not None}
  for r in refs.values():
    if r is not None:
      r(2)  # warm-up
  for c in jax_cases.values():
    c.run(2)
  for _ in range(repeats):  # interleaved, so drifts in machine load hit every case alike.
    for n, c in jax_cases.items():
      samples[n].append(c.run(steps))
      if n in ref_samples:
        ref_samples[n].append(refs[n](steps))
  for n in samples:  # a step of several seeds trains that many students: count their images.
    if '_seeds_' in n:
      samples[n] = [x * SEEDS for x in samples[n]]
  kd = statistics.median(samples['kd_resnet20_resnet8'])
  flops = {n: c.flops() for n, c in jax_cases.items() if '_seeds_' not in n}  # XLA's, a step.
  flops = {n: f for n, f in flops.items() if f is not None}  # none where the backend can't.
  kd_flops = flops.get('kd_resnet20_resnet8')
  rows = []
  for n, c in jax_cases.items():
    jax_img_s = statistics.median(samples[n])
    ref_img_s = statistics.median(ref_samples[n]) if n in ref_samples else None
    row = {'case': n, 'jax_img_s': round(jax_img_s, 1),
           'ref_img_s': None if ref_img_s is None else round(ref_img_s, 1),
           'ratio': None if ref_img_s is None else round(jax_img_s / ref_img_s, 3),
           'compile_s': round(c.compile_s, 2), 'samples_img_s': [round(x, 1) for x in samples[n]]}
    if '_seeds_' in n:  # against SEEDS single-seed ce_resnet8 steps one after another.
      row['ratio'] = round(jax_img_s / statistics.median(samples['ce_resnet8']), 3)
      row['note'] = f'{SEEDS} seeds in one program, images/s of all seeds; ratio vs ce_resnet8'
    if n.startswith('msmgan_') or n.startswith('kd_'):
      row['time_vs_kd'] = round(kd / jax_img_s, 3)
    if n in flops:
      _flop_columns(row, flops[n], kd_flops, peak_tflops)
    rows.append(row)
  if teachers_only:
    for row in rows[1:]:
      row['note'] = 'the native teacher\'s network and weights from another source'
    pipelines = []
  else:
    pipelines = ['device']
  consumed = max(r['jax_img_s'] for r in rows)
  if pipelines and not data.is_arrays_file(dataset) and _has_tensorflow():  # TFDS only.
    pipelines.append('tfdata')
  for pipeline in pipelines:
    img_s = input_pipeline_img_s(20 if quick else 100, pipeline, dataset)
    rows.append({'case': f'input_pipeline_{pipeline}', 'jax_img_s': round(img_s, 1),
                 'ref_img_s': round(consumed, 1), 'ratio': round(img_s / consumed, 2),
                 'note': f'{pipeline} pipeline images/s against the fastest step above'})
  extra = {}
  if profile:
    from msmgan_jax.lab import op_profile  # pylint: disable=g-import-not-at-top
    extra['ops'] = op_profile.measure(threads, repeats=3 if quick else 5, n=3 if quick else 10)
  if runs:
    extra['runs'] = whole_runs(os.path.join(workdir, 'runs'), runs, dataset)
  if seeds:
    extra['seeds'] = seed_runs(os.path.join(workdir, 'seeds'), seeds)
  return {'machine': f'{platform.machine()}, {os.cpu_count()} CPU cores',
          'device': jax.devices()[0].device_kind, 'jax': jax.__version__,
          'torch': _torch_version(), 'torch_device': ref_device,
          'peak_tflops': peak_tflops or None, 'batch': BATCH, 'image_shape': list(SHAPE),
          'steps_per_sample': steps, 'repeats': repeats, 'quick': quick,
          'peak_rss_mb': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
          'rows': rows, **extra}


def _flop_columns(row: dict, flops: float, kd_flops: float, peak_tflops: float) -> None:
  """Adds a step's FLOPs, the rate its measured images/s get out of them, the fraction of
  `peak_tflops` (when given) and, for kd and msmgan steps, the FLOPs against kd's."""
  row.update({'gflops': round(flops / 1e9, 3),
              'tflop_s': round(flops * row['jax_img_s'] / BATCH / 1e12, 4)})
  if peak_tflops:
    row['of_peak'] = round(row['tflop_s'] / peak_tflops, 5)
  if kd_flops and (row['case'].startswith('msmgan_') or row['case'].startswith('kd_')):
    row['flops_vs_kd'] = round(flops / kd_flops, 3)


def recount(result: dict, workdir: str) -> dict:
  """`result` (a saved benchmark JSON) with its FLOP columns counted again by this version
  (`JaxCase.flops`); its measured speeds are kept. For results whose counts were taken
  from the compiled program, which on a GPU misses the cuDNN convolutions."""
  jax_cases = cases(False, workdir)
  flops = {n: c.flops() for n, c in jax_cases.items() if '_seeds_' not in n}
  if None in flops.values():
    raise ValueError(f'JAX {jax.__version__} on {jax.default_backend()} gives no FLOP count '
                     'of a lowered program; recount on the CPU (the lowered program is the same)')
  missing = [r['case'] for r in result['rows'] if 'gflops' in r and r['case'] not in flops]
  if missing:
    raise ValueError(f'cannot recount {missing}: no such step in this version')
  for row in result['rows']:
    if row['case'] in flops:
      _flop_columns(row, flops[row['case']], flops['kd_resnet20_resnet8'],
                    result.get('peak_tflops') or 0.0)
  result['flops_recounted'] = {'device': jax.devices()[0].device_kind, 'jax': jax.__version__}
  return result


def _torch_version():
  try:
    import torch  # pylint: disable=g-import-not-at-top
    return torch.__version__
  except ImportError:
    return None


def markdown(result: dict) -> str:
  """The table of `result`, with what the columns mean."""
  fmt = lambda v: '-' if v is None else str(v)
  lines = [f'Machine: {result["machine"]}; JAX {result["jax"]} ({result["device"]}), '
           f'PyTorch {fmt(result["torch"])}; batch {result["batch"]}, images '
           f'{"x".join(map(str, result["image_shape"]))}; median of {result["repeats"]} '
           f'interleaved samples of {result["steps_per_sample"]} steps; peak RSS '
           f'{result["peak_rss_mb"]} MB.'
           + (f' PyTorch runs on {result["torch_device"]}.' if result.get('torch_device') else '')
           + (f' Peak taken as {result["peak_tflops"]} TFLOP/s.' if result.get('peak_tflops')
              else ''), '',
           '| case | JAX img/s | reference img/s | ratio | compile s | time vs kd | '
           'GFLOPs/step | FLOPs vs kd | TFLOP/s | of peak |',
           '|---|---|---|---|---|---|---|---|---|---|']
  for r in result['rows']:
    lines.append(f'| {r["case"]} | {r["jax_img_s"]} | {fmt(r["ref_img_s"])} | '
                 f'{fmt(r["ratio"])} | {fmt(r.get("compile_s"))} | {fmt(r.get("time_vs_kd"))} '
                 f'| {fmt(r.get("gflops"))} | {fmt(r.get("flops_vs_kd"))} '
                 f'| {fmt(r.get("tflop_s"))} | {fmt(r.get("of_peak"))} |')
  if result.get('mode') == 'dispatch':
    return '\n'.join(lines + [
        '', 'The kd step (resnet20 -> resnet8) as `steps_per_dispatch` runs it: k steps in '
        'one program (`kd_<k>_steps_per_dispatch`; k = 1 is one step per dispatch), and R '
        'students in one program, one step per dispatch: R seeds (`kd_<R>_runs_per_program`: '
        '`seeds=R`) and R tuning candidates of one seed each, their learning rate and '
        'temperature per-run inputs of the program (`kd_<R>_candidates_per_program`: '
        "`candidates`, core/runs.py). JAX img/s counts every "
        "student's images; ratio: over one student at one step per dispatch (the reference "
        'column). TFLOP/s: XLA\'s FLOPs of one kd step (on the lowered program) times the '
        'steps per second; of peak: over the --peak-tflops given.', ''])
  lines += ['', 'ratio: JAX over the PyTorch reference (> 1: JAX faster); for the input '
            'pipelines, their images/s over the fastest training step; for the seed rows, '
            f'{SEEDS} seeds in one program (images of all seeds per second) over ce_resnet8 '
            'steps one after another. time vs kd: a step of the case takes this many '
            'end-to-end kd steps of time.', '']
  if result.get('runs'):
    lines += ['Whole student runs at the same image budget (compilation and evaluation '
              'included):', '', '| run | wall s | student s | time vs kd |', '|---|---|---|---|']
    lines += [f'| {r["case"]} | {r["wall_s"]} | {r["student_wall_s"]} | {r["time_vs_kd"]} |'
              for r in result['runs']]
    lines.append('')
  if result.get('seeds'):
    lines += ['Several seeds of one run: separate commands one after another against one '
              'command training them together (whole processes):', '',
              '| case | separate s | together s | together / separate |', '|---|---|---|---|']
    lines += [f'| {r["case"]} | {r["separate_s"]} | {r["together_s"]} | {r["ratio"]} |'
              for r in result['seeds']]
    lines.append('')
  if result.get('flops_recounted'):
    r = result['flops_recounted']
    lines += [f'The FLOP columns were counted again (`--recount`) on {r["device"]} with JAX '
              f'{r["jax"]}, from the program JAX lowers; the speeds are as measured.', '']
  if result.get('note'):
    lines += [result['note'], '']
  if result.get('ops'):
    from msmgan_jax.lab import op_profile  # pylint: disable=g-import-not-at-top
    lines += ['The ops of a resnet20 train step, timed alone:', '',
              op_profile.markdown(result['ops'])]
  return '\n'.join(lines)
