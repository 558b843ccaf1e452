"""The student's summary (summary.json's `student`) and its final checkpoints."""
import numpy as np

from msmgan_jax.core import optim
from msmgan_jax.files import checkpoints


def summary(cfg, wd, seeds, anchors, teacher, carry, records, wall) -> dict:
  """The student's summary. With several seeds: `test_accuracy` is their mean (with
  `test_accuracy_std` and the per-seed `test_accuracies`), per-phase accuracies are lists,
  and each seed's final student is saved (`student_final` the first, `student_final_<seed>`
  the others)."""
  params, batch_stats = carry
  finals = [{'params': params['student'], 'batch_stats': batch_stats['student']}]
  finals = seeds.split(finals[0])
  for j, (seed, final) in enumerate(zip(seeds.seeds, finals)):
    checkpoints.Checkpoints(wd.file('checkpoints', 'student_final' + (f'_{seed}' if j else ''))
                      ).save(0, final, {'model': cfg.student.model, 'seed': seed})
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
  if seeds.multi:
    accs = out['test_accuracy']
    out.update({'test_accuracy': float(np.mean(accs)), 'test_accuracy_std': float(np.std(accs)),
                'test_accuracies': accs, 'seeds': seeds.seeds})
  return out
