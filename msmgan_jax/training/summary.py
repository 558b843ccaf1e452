"""The student's summary (summary.json's `student`) and its final checkpoints."""
import os
import time

import numpy as np

from msmgan_jax.core import optim
from msmgan_jax.files import checkpoints


class LoadWatch:
  """The machine's 1-minute load average (`os.getloadavg`), sampled while a student trains,
  so that a report can tell a run that shared the machine (slower wall times) from one that
  ran alone (`lab.report.machine_share`). `LOAD.sample()` is for each log and evaluation
  of the run (the runner's); `summary` takes one more sample at the end and records
  `LOAD.record(since=the run's start)` as summary.json's `student.machine`: `cores`
  (`os.cpu_count()`), `load_1min_mean` and `load_1min_max` over the samples taken since
  `since` (so samples of an earlier run of this process are left out), and `load_samples`,
  how many (1: only the one at the end). A resumed run has the samples of its last process
  only. `record` is None where the platform has no load average."""

  def __init__(self):
    self.samples = []  # (unix time, 1-minute load average).

  def sample(self) -> None:
    try:
      self.samples.append((time.time(), os.getloadavg()[0]))
    except (AttributeError, OSError):  # no load average here (Windows).
      pass

  def record(self, since: float = 0.0):
    loads = [v for t, v in self.samples if t >= since]
    if not loads:
      return None
    return {'cores': os.cpu_count(), 'load_1min_mean': round(float(np.mean(loads)), 2),
            'load_1min_max': round(float(np.max(loads)), 2), 'load_samples': len(loads)}


LOAD = LoadWatch()  # this process's samples; `summary` records and then clears them.


def summary(cfg, wd, seeds, anchors, teacher, carry, records, wall) -> dict:
  """The student's summary. With several seeds: `test_accuracy` is their mean (with
  `test_accuracy_std` and the per-seed `test_accuracies`), per-phase accuracies are lists,
  and each seed's final student is saved (`student_final` the first, `student_final_<seed>`
  the others; with `candidates`, `student_final_c<candidate>_s<seed>`), and `candidates`
  lists each candidate's setting, runs, seeds, accuracies (their mean and population std) and
  final checkpoints (`run_candidates`: each run's candidate). `machine`: the machine's load
  during the run (see `LoadWatch`; None where it has no load average)."""
  params, batch_stats = carry
  finals = [{'params': params['student'], 'batch_stats': batch_stats['student']}]
  finals = seeds.split(finals[0])
  for j, (seed, final) in enumerate(zip(seeds.seeds, finals)):
    meta = {'model': cfg.student.model, 'seed': seed}
    if seeds.candidates is not None:
      meta.update(candidate=seeds.candidates[j], setting=seeds.settings[seeds.candidates[j]])
    checkpoints.Checkpoints(wd.file('checkpoints', 'student_final' + (
        f'_{seeds.tag(j)}' if j else ''))).save(0, final, meta)
  n_params = optim.count_params(finals[0]['params'])
  stages = []
  for m, anchor in enumerate(anchors):
    stages.append({
        'stage': m + 1,
        'anchor': None if anchor is None else {'epoch': anchor.epoch, 'path': anchor.path,
                                               'test_accuracy': anchor.test_accuracy},
        'phases': [{k: v for k, v in r.items() if k != 'stage'}
                   for r in records if r['stage'] == m + 1]})
  out = {'model': cfg.student.model, 'params': n_params,
         'test_accuracy': records[-1]['test_accuracy'],
         'compression': round(teacher.params / n_params, 3) if teacher else None,
         'wall_s': round(wall, 2), 'stages': stages,
         'checkpoint': wd.file('checkpoints', 'student_final', '0')}
  LOAD.sample()
  out['machine'] = LOAD.record(since=time.time() - wall)
  LOAD.samples.clear()
  if seeds.multi:
    accs = out['test_accuracy']
    out.update({'test_accuracy': float(np.mean(accs)), 'test_accuracy_std': float(np.std(accs)),
                'test_accuracies': accs, 'seeds': seeds.seeds})
  if seeds.candidates is not None:
    accs = out['test_accuracies'] if seeds.multi else [out['test_accuracy']]
    out['run_candidates'] = seeds.candidates
    out['candidates'] = []
    for c, setting in enumerate(seeds.settings):
      js = [j for j, k in enumerate(seeds.candidates) if k == c]
      mine = [accs[j] for j in js]
      out['candidates'].append({
          'setting': setting, 'runs': js, 'seeds': [seeds.seeds[j] for j in js],
          'test_accuracies': mine, 'test_accuracy': float(np.mean(mine)),
          'test_accuracy_std': float(np.std(mine)),
          'checkpoints': [wd.file('checkpoints', 'student_final' + (
              f'_{seeds.tag(j)}' if j else ''), '0') for j in js]})
  return out
