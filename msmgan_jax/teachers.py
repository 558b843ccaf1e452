"""Bring your own teacher: the Python API, and a command that shows what a teacher offers.

From Python (see `core.teachers`):

    from msmgan_jax import teachers
    from msmgan_jax.training import train
    train.train_and_evaluate(cfg, 'runs/mine', teacher=teachers.flax_teacher(module, variables))

From the command line, the layers of the teacher a config names (`teacher.source`,
`teacher.checkpoints`, ...), each with its output shape for one image and its downsampling,
and the `teacher.feature_layers` that line up with the student's blocks:

    python -m msmgan_jax.teachers --config configs/X.py [--config.teacher.checkpoints=...]

Exit 0, or 2 when the teacher cannot be read (the message says why). Installed, the command
is also `msmgan-teachers --config ...`.

The API names (`External`, `Given`, `flax_teacher`, `keras_teacher`, from `core.teachers`)
load on first use, so that the command answers `--help` and a bad argument without loading
JAX or TensorFlow.
"""
import importlib
import sys

from msmgan_jax import cli

_API = ('External', 'Given', 'flax_teacher', 'keras_teacher')  # from msmgan_jax.core.teachers.


def __getattr__(name: str):
  """`teachers.flax_teacher` and the other `_API` names: `core.teachers`' (PEP 562)."""
  if name in _API:
    return getattr(importlib.import_module('msmgan_jax.core.teachers'), name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
  return sorted(list(globals()) + list(_API))

USAGE = 'usage: python -m msmgan_jax.teachers --config configs/X.py [--config.FIELD=VALUE ...]'


def main(argv=None) -> int:
  """The command line `argv` (argv[0] is the program); returns the exit code."""
  argv = list(sys.argv if argv is None else argv)
  if any(a in ('-h', '--help') for a in argv[1:]):
    print(f'{__doc__}\n{USAGE}')
    return 0
  parsed = []
  code = cli.run_command(lambda: parsed.append(cli.parse(argv, USAGE)[0]))
  if code:
    return code
  cli.quiet()  # TensorFlow and the JAX backend, once the arguments are good.
  return cli.run_command(lambda: print(describe(parsed[0])))


def describe(cfg) -> str:
  """The text `main` prints for config `cfg`: the teacher's layers and the student's fit."""
  from msmgan_jax.core import models, sharding  # pylint: disable=g-import-not-at-top
  from msmgan_jax.core.teachers import External  # pylint: disable=g-import-not-at-top
  from msmgan_jax.data import datasets as data  # pylint: disable=g-import-not-at-top
  from msmgan_jax.training import teacher as teacher_lib  # pylint: disable=g-import-not-at-top
  from msmgan_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  config_lib.import_modules(cfg.get('imports', ()))  # the sources of yours it may name.
  info, _, _ = data.load(cfg.dataset, batch_size=cfg.batch_size,
                         eval_batch_size=cfg.eval_batch_size, mesh=sharding.mesh())
  student = models.create_model(cfg.student.model, info.num_classes)
  strides = tuple(student.block_strides)
  head = (f'student {cfg.student.model}: {student.num_blocks} blocks downsampled by {strides} '
          f'on {info.name} ({info.image_shape[0]}x{info.image_shape[1]}x'
          f'{info.image_shape[2]} images)')
  if cfg.teacher.source == 'msmgan_jax':
    model = models.create_model(cfg.teacher.model, info.num_classes)
    return (f'{head}\nteacher {cfg.teacher.model} (this library\'s): blocks '
            f'{tuple(model.block_names)} downsampled by {tuple(model.block_strides)}; its '
            'block features serve every method (no teacher.feature_layers)')
  cfg.teacher.feature_layers = ()  # list every layer, whatever the config names.
  model, _, name = teacher_lib.external(cfg, info)
  if not isinstance(model, External):
    return f'{head}\nteacher {name}: a Classifier; its blocks serve every method'
  return (f'{head}\nteacher {name}, {model.num_classes} outputs; its layers (path, output '
          f'shape for one image, downsampling):\n{model.layer_table(strides)}')


if __name__ == '__main__':
  sys.exit(main())
