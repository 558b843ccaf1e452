"""Side-by-side speed: `python -m msmgan_jax.benchmark [--quick] [--json FILE] [--md FILE]`.

Measures in one process, on the same cores, with warm-up excluded and the cases
interleaved over repeats (the median is reported), so that ratios hold on a shared, noisy
machine where absolute numbers do not:
- the train step of `ce` (resnet8, resnet20) and of end-to-end `kd` (resnet20 -> resnet8)
  in JAX against a PyTorch reference of the same networks, batch, loss and optimizer
  (`pip install -e '.[bench]'`; without torch these rows have no reference);
- each MS-MGANs phase step (`block_k` with its discriminator update, `head` with the
  mutual teacher copy) against the end-to-end `kd` step: time ratio, and FLOPs from XLA's
  cost analysis;
- the input pipelines alone (the in-memory `device` one and `tfdata`, the run's real
  preprocessing) against what the fastest step consumes;
- compile time of every step and the process's peak memory;
- XLA's FLOPs of every step and the rate they run at (TFLOP/s), and with
  `--peak-tflops P` the fraction of an accelerator's peak P that is;
- with `--runs EPOCHS`: whole `kd` and `msmgan` student runs at the same image budget;
- with `--seeds EPOCHS`: 3 seeds of a `ce` run as 3 commands against one `seeds=3` command;
- with `--profile`: the ops of a resnet20 step timed alone, JAX against PyTorch
  (`op_profile.py`);
- with `--teachers` (only these rows): the kd step (resnet20 -> resnet8) with the teacher
  brought in another form against the native teacher, the same network and weights: its
  Keras 3 twin (`lab/keras_resnet.py`, run by `stateless_call`) and the resnet20 inside a
  Flax module that is not a `Classifier` (run whole, features read by
  `capture_intermediates`); `time_vs_kd` is its step time over the native kd step's;
- with `--dispatch` (only these rows): the kd step at 1, 8 and 32 steps per dispatch
  (`steps_per_dispatch`) and with 1, 4 and 16 students in one program (`seeds`), each
  against one step of one student per dispatch, with TFLOP/s (and with `--peak-tflops`
  the fraction of peak);
- with `--accelerator` (the check to run whenever a GPU or TPU is at hand, a few minutes
  there): the --dispatch rows, the Colab notebook run as shipped, and a whole 1-epoch kd
  run at 1 and 10 steps per dispatch; a part that fails is recorded in the JSON, and the
  others still run.

Every JSON entry carries `case`, `jax_img_s`, `ref_img_s` and `ratio` (JAX over the
reference: > 1 means JAX is faster). The steps are the library's own (`steps.PhaseSteps`
through `student.Distiller`), on random 28x28x1 images, batch 128. On a GPU the PyTorch
reference runs on the GPU too (CUDA, cuDNN autotuned); on a machine without TensorFlow,
`--dataset FILE.npz` (`python -m msmgan_jax.arrays`) feeds the pipeline and run rows.
The measurements are `msmgan_jax.lab.benchmark`'s. Installed, the command is also
`msmgan-benchmark`; `--help` and bad arguments answer before JAX or TensorFlow load.
"""
import argparse
import os
import sys

from msmgan_jax import cli


def main(argv=None) -> int:
  """The command line (`argv` without the program name); returns the exit code."""
  parser = argparse.ArgumentParser(prog='python -m msmgan_jax.benchmark', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--quick', action='store_true', help='fewer steps and phases (a smoke)')
  parser.add_argument('--json', help='write the result here')
  parser.add_argument('--md', help='write the Markdown table here')
  parser.add_argument('--workdir', default='/tmp/msmgan_bench', help='scratch folder')
  parser.add_argument('--profile', action='store_true',
                      help='also time the ops of a resnet20 step alone, JAX against PyTorch')
  parser.add_argument('--seeds', type=int, default=0, metavar='EPOCHS',
                      help='also time 3 seeds of a ce run (10%% of Fashion-MNIST, EPOCHS epochs) '
                      'as 3 commands against one command with seeds=3 (minutes)')
  parser.add_argument('--runs', type=int, default=0, metavar='EPOCHS',
                      help='also time whole kd and msmgan student runs of EPOCHS epochs of '
                      'Fashion-MNIST (minutes)')
  parser.add_argument('--dataset', default='fashion_mnist',
                      help='dataset of the input-pipeline and --runs rows: a TFDS name or an '
                      'arrays .npz (python -m msmgan_jax.arrays), for machines without TensorFlow')
  parser.add_argument('--peak-tflops', type=float, default=0.0,
                      help="the accelerator's peak TFLOP/s, to report each step's fraction of it")
  parser.add_argument('--teachers', action='store_true',
                      help='only the kd step with the teacher as a Keras 3 model and as a Flax '
                      'module against the native teacher (same network and weights)')
  parser.add_argument('--dispatch', action='store_true',
                      help='only the kd step at 1, 8 and 32 steps per dispatch and at 1, 4 '
                      'and 16 students per program (seeds), against one step of one student')
  parser.add_argument('--accelerator', action='store_true',
                      help='the prepared check for a GPU or TPU at hand: the --dispatch rows, '
                      'the Colab notebook as shipped, and a 1-epoch kd run at 1 and 10 steps '
                      'per dispatch (with --quick: the notebook\'s tiny run)')
  parser.add_argument('--recount', metavar='JSON',
                      help='measure nothing: count the FLOP columns of this saved result again '
                      '(its speeds kept) and write it to --json / --md')
  args = parser.parse_args(argv)
  cli.quiet()
  from msmgan_jax.data import datasets as data  # pylint: disable=g-import-not-at-top
  from msmgan_jax.files import io  # pylint: disable=g-import-not-at-top
  from msmgan_jax.lab import benchmark  # pylint: disable=g-import-not-at-top
  if args.recount:
    try:
      if not os.path.isfile(args.recount):
        raise OSError('no such file')
      saved = io.read_json(args.recount)
      if not isinstance(saved, dict) or not isinstance(saved.get('rows'), list):
        raise ValueError('not a benchmark result (a JSON object with "rows")')
      result = benchmark.recount(saved, args.workdir)
    except (OSError, ValueError, KeyError) as e:
      print(f'error: cannot recount {args.recount}: {e}; give the --json file a benchmark '
            'wrote', file=sys.stderr)
      return 2
  else:
    problem = data.check_name(args.dataset)  # before minutes of measuring, not after.
    if problem:
      print(f'error: --dataset {problem}', file=sys.stderr)
      return 2
    if args.accelerator:
      result = benchmark.accelerator_check(args.workdir, args.dataset, args.peak_tflops,
                                           args.quick)
    elif args.dispatch:
      result = benchmark.measure_dispatch(args.workdir, args.peak_tflops, args.quick)
    else:
      result = benchmark.measure(args.quick, args.workdir, args.profile, args.runs,
                                 args.seeds, args.dataset, args.peak_tflops, args.teachers)
  render = benchmark.accelerator_markdown if args.accelerator else benchmark.markdown
  table = render(result)
  print(table)
  if args.json:
    io.write_json(args.json, result)
  if args.md:
    io.write_text(args.md, table)
  return 0


if __name__ == '__main__':
  sys.exit(main())
