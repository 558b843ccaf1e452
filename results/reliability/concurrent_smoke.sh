#!/usr/bin/env bash
# Starts N smoke runs (default 4) at the same moment on different workdirs, against a TFDS
# data dir where nothing is prepared yet, and records how each ended.
#   bash results/reliability/concurrent_smoke.sh [N]   (from the repository root)
# Writes results/reliability/concurrent_smoke.{json,md}. Takes about 10 minutes on 2 cores.
set -uo pipefail
cd "$(dirname "$0")/../.."
N=${1:-4}
TMP=$(mktemp -d)
export TFDS_DATA_DIR="$TMP/tfds"   # nothing prepared here: every run meets an unprepared dataset.
for i in $(seq 1 "$N"); do
  ( s=$(date +%s.%N)
    python -m msmgan_jax.main --config configs/default.py:smoke --workdir "$TMP/run$i" \
      > "$TMP/out$i" 2> "$TMP/err$i"
    echo "$? $s $(date +%s.%N)" > "$TMP/rc$i" ) &
done
wait
python - "$TMP" "$N" <<'PY'
import json, os, sys
tmp, n = sys.argv[1], int(sys.argv[2])
runs = []
for i in range(1, n + 1):
  rc, t0, t1 = open(f'{tmp}/rc{i}').read().split()
  wall = float(t1) - float(t0)
  summary = f'{tmp}/run{i}/summary.json'
  s = json.load(open(summary)) if os.path.exists(summary) else None
  runs.append({'run': i, 'exit_code': int(rc), 'wall_s': round(float(wall), 1),
               'teacher_test_accuracy': s and s['teacher']['test_accuracy'],
               'student_test_accuracy': s and s['student']['test_accuracy'],
               'stderr_tail': open(f'{tmp}/err{i}').read()[-500:] if int(rc) else ''})
env = s and s['environment']
out = {'command': 'python -m msmgan_jax.main --config configs/default.py:smoke '
                  '--workdir RUN_i, N at once, TFDS_DATA_DIR empty',
       'machine': f'{os.uname().machine}, {os.cpu_count()} CPU cores', 'environment': env,
       'all_finished': all(r['exit_code'] == 0 for r in runs),
       'identical_results': len({(r['teacher_test_accuracy'], r['student_test_accuracy'])
                                 for r in runs}) == 1, 'runs': runs}
json.dump(out, open('results/reliability/concurrent_smoke.json', 'w'), indent=2)
lines = [f'{n} smoke runs started at the same moment on an empty TFDS data dir '
         f'({out["machine"]}). They share the cores with each other and with whatever else runs: '
         'the wall times show that they finished, not how fast.', '',
         '| run | exit code | wall s | teacher test acc | student test acc |', '|---|---|---|---|---|']
lines += [f'| {r["run"]} | {r["exit_code"]} | {r["wall_s"]} | {r["teacher_test_accuracy"]} | '
          f'{r["student_test_accuracy"]} |' for r in runs]
lines += ['', f'All finished: {out["all_finished"]}. Same numbers in every run (same config '
          f'and seed): {out["identical_results"]}.', '']
open('results/reliability/concurrent_smoke.md', 'w').write('\n'.join(lines))
print('\n'.join(lines))
PY
rm -rf "$TMP"
