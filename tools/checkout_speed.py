"""Two checkouts' step times, side by side: `python tools/checkout_speed.py
--base DIR [--new DIR] [--rounds R] [--out results/refactor]`.

Two versions of this package cannot share one process, so one run alternates them:
round after round, `python -m msmgan_jax.benchmark --quick` of the base checkout, then of
the new one (each with PYTHONPATH at its checkout), on the same cores, one at a time. Each
case's images/s is the median over the rounds; the ratio new / base (> 1: the new
checkout is faster) comes with the range of the per-round ratios, which is the noise a
reader should hold it against. Writes speed.json and speed.md under --out.

A maintainer tool (tools/, not in the wheel): `python -m tools.checkout_speed` works too;
results/refactor/README.md names its earlier path, `python -m msmgan_jax.lab.checkout_speed`.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


def _bench(checkout: str, out_json: str, workdir: str) -> float:
  env = {**os.environ, 'PYTHONPATH': os.path.abspath(checkout), 'JAX_PLATFORMS': 'cpu'}
  t0 = time.time()
  subprocess.run([sys.executable, '-m', 'msmgan_jax.benchmark', '--quick', '--json', out_json,
                  '--workdir', workdir], env=env, cwd=os.path.abspath(checkout), check=True,
                 stdout=subprocess.DEVNULL)
  return time.time() - t0


def measure(base: str, new: str, rounds: int, after_run=None) -> dict:
  """{case: {'base': [img/s per round], 'new': [...]}} and the wall time of each run;
  `after_run(result so far)` is called after every benchmark run (so that what was
  measured is written even if the comparison is stopped)."""
  samples, walls = {}, {'base': [], 'new': []}
  with tempfile.TemporaryDirectory() as tmp:
    for r in range(rounds):
      for side, checkout in (('base', base), ('new', new)):
        path = os.path.join(tmp, f'{side}{r}.json')
        walls[side].append(round(_bench(checkout, path, os.path.join(tmp, f'w_{side}{r}')), 1))
        with open(path) as f:
          for row in json.load(f)['rows']:
            if row.get('jax_img_s'):
              samples.setdefault(row['case'], {'base': [], 'new': []})[side].append(
                  row['jax_img_s'])
        print(f'round {r + 1}/{rounds} {side}: {walls[side][-1]} s', flush=True)
        if after_run:
          after_run({'samples': samples, 'walls': walls})
  return {'samples': samples, 'walls': walls}


def summarise(result: dict) -> list:
  rows = []
  for case, s in result['samples'].items():
    if not (s['base'] and s['new']):
      continue
    per_round = [n / b for b, n in zip(s['base'], s['new'])]
    rows.append({'case': case, 'base_img_s': round(statistics.median(s['base']), 1),
                 'new_img_s': round(statistics.median(s['new']), 1),
                 'ratio': round(statistics.median(s['new']) / statistics.median(s['base']), 3),
                 'round_ratio_min': round(min(per_round), 3),
                 'round_ratio_max': round(max(per_round), 3)})
  return rows


def markdown(rows: list, meta: dict) -> str:
  lines = [f'# Step speed: {meta["new"]} against {meta["base"]}', '',
           f'{meta["rounds"]} rounds of `python -m msmgan_jax.benchmark --quick`, the two '
           f'checkouts alternating, on {meta["machine"]}. images/s are medians over the rounds; '
           'ratio = new / base (> 1: the new checkout is faster), with the range of the '
           'per-round ratios.', '',
           '| case | base img/s | new img/s | ratio | per-round range |', '|---|---|---|---|---|']
  lines += [f'| {r["case"]} | {r["base_img_s"]} | {r["new_img_s"]} | {r["ratio"]} | '
            f'{r["round_ratio_min"]} - {r["round_ratio_max"]} |' for r in rows]
  return '\n'.join(lines) + '\n'


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python tools/checkout_speed.py',
                                   description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--base', required=True, help='the other checkout (a git work tree)')
  parser.add_argument('--new', default=os.getcwd(), help='this checkout (default: here)')
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--out', default=os.path.join('results', 'refactor'))
  args = parser.parse_args(argv)
  for path in (args.base, args.new):
    if not os.path.isdir(os.path.join(path, 'msmgan_jax')):
      print(f'error: {path} holds no msmgan_jax package; give a checkout of this repository',
            file=sys.stderr)
      return 2
  import platform  # pylint: disable=g-import-not-at-top
  rev = lambda p: subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=p,
                                 capture_output=True, text=True).stdout.strip() or p
  meta = {'base': rev(args.base), 'new': rev(args.new), 'rounds': args.rounds,
          'machine': f'{platform.machine()}, {os.cpu_count()} cores'}
  os.makedirs(args.out, exist_ok=True)

  def write(result):
    done = min(len(result['walls']['base']), len(result['walls']['new']))
    info = {**meta, 'rounds_done': done}
    rows = summarise(result)
    with open(os.path.join(args.out, 'speed.json'), 'w') as f:
      json.dump({**info, 'rows': rows, **result}, f, indent=2)
    with open(os.path.join(args.out, 'speed.md'), 'w') as f:
      f.write(markdown(rows, {**meta, 'rounds': done}))
    return rows
  result = measure(args.base, args.new, args.rounds, after_run=write)
  print(markdown(write(result), meta))
  return 0


if __name__ == '__main__':
  sys.exit(main())
