"""Runs one phase of the student: its steps through the training loop, its logs, mid-phase
checkpoints, evaluations, the method's monitor of its metrics (`core.phase.Monitor`, from
the registry) and the phase's record for the summary."""
import time

import jax
import numpy as np

from msmgan_jax.core import optim
from msmgan_jax.methods import registry
from msmgan_jax.training import loop
from msmgan_jax.training import summary as summary_lib
from msmgan_jax.training.states import rules, student_groups


class PhaseRunner:
  """Runs phases of one student run. `states` is its `training.states.StateBuilder`,
  `seeds` its `training.seeds.Seeds`; `step_fn(phase, anchor)` gives the step of a phase,
  `evaluate(g_state)` the test metrics, `batches(seed, skip=)` a training batch iterator."""

  def __init__(self, cfg, wd, info, mesh, ckpt, states, seeds, step_fn, evaluate, batches,
               multi_step_fn=None):
    self.cfg, self.wd, self.info, self.mesh, self.ckpt = cfg, wd, info, mesh, ckpt
    self.states, self.seeds, self.step_fn = states, seeds, step_fn
    self.multi_step_fn = multi_step_fn
    self.evaluate, self.batches = evaluate, batches

  def meta(self, position, records, t_start, phase_wall, states, log_window=(), watch=None,
            phase_done=False) -> dict:
    """A checkpoint's metadata: where it is, the records so far, the names of its `states`,
    and the phase's monitor state under the monitor's key. `phase_done`: the phase was
    evaluated and recorded; a checkpoint after its last step without it (a stop request
    there) resumes with zero steps left, then evaluates and records the phase."""
    out = {'position': list(position), 'records': records, 'wall_s': time.time() - t_start,
           'phase_wall_s': phase_wall, 'metrics_offset': self.wd.metrics.offset(),
           'log_window': list(log_window), 'phase_done': phase_done, 'states': sorted(states)}
    if watch is not None:
      out[watch.key] = watch.state()
    return out

  def run_phase(self, m, i, states, start, resume, records, t_start):
    """Runs steps start..n-1 of phase i of stage m, then evaluates the student.

    `resume` is the meta of the mid-phase checkpoint the states come from (None when the
    phase starts fresh). Returns the final states and the phase's record for the summary.
    `wall_s` adds the time spent before a resume; `images_per_s` leaves out the first step
    (compilation).
    """
    wall_before = resume['phase_wall_s'] if resume else 0.0
    cfg, phase, anchor = self.cfg, self.states.phases[m][i], self.states.anchors[m]
    n = self.states.num_steps(phase, m)
    one = self.seeds.first(states)
    labels = optim.label_params(one['g'].params, rules(student_groups(
        phase, self.states.student.num_blocks)))
    trainable = optim.count_params(jax.tree.map(
        lambda x, lab: x if lab != 'frozen' else None, one['g'].params, labels))
    images_before = sum(r['steps'] for r in records) * cfg.batch_size

    def log(split, step, metrics):
      """One metrics.jsonl record; with several runs, one per run (with its `seed`, and with
      candidates its `candidate`)."""
      summary_lib.LOAD.sample()  # the machine's load while this run trains (summary.json).
      where = dict(step=step, epoch=(images_before + step * cfg.batch_size) / self.info.num_train,
                   stage=m + 1, phase=phase.name, split=split)
      if not self.seeds.multi:
        self.wd.metrics.write(**where, **metrics)
        return
      cands = self.seeds.candidates
      for j, seed in enumerate(self.seeds.seeds):
        run = {'seed': seed} if cands is None else {'seed': seed, 'candidate': cands[j]}
        self.wd.metrics.write(**where, **run, **{
            k: v[j] if isinstance(v, list) else v for k, v in metrics.items()})
    t0 = time.time()

    def save(step, states, log_window):
      self.ckpt.save((self.ckpt.latest_step() or 0) + 1, states, self.meta(
          (m, i, step), records, t_start, wall_before + time.time() - t0, states, log_window,
          watch), where=f'in {where} by training step {step}')

    where = f'stage {m + 1} phase {phase.name}'
    monitor = registry.METHODS[cfg.method].monitor
    watch = None if monitor is None else monitor(
        cfg, where, resume.get(monitor.key) if resume else None)

    def log_train(step, metrics):
      log('train', step, metrics)
      if watch is not None:
        watch.update(metrics)

    per = cfg.student.eval_every_epochs * self.info.num_train  # images between evaluations.

    def evaluating(step) -> bool:
      """Within the phase, a test evaluation each time another `per` images are seen."""
      seen = images_before + step * cfg.batch_size
      return per > 0 and step < n and seen // per > (seen - cfg.batch_size) // per

    def after_step(step, states):
      if evaluating(step):
        t = time.time()
        log('test', step, {**self.evaluate(states['g']), 'wall_s': t - t_start})
        eval_s[0] += time.time() - t
      return states
    eval_s = [0.0]  # left out of the phase's images/s.

    k = cfg.steps_per_dispatch
    states, first_step_s, first_steps = loop.train_loop(
        states, self.step_fn(phase, anchor),
        batches=self.seeds.batches(self.batches, states, start), start=start, stop=n,
        mesh=self.mesh, batch_size=cfg.batch_size, log_every=cfg.log_every_steps,
        log=log_train, after_step=after_step, save=save,
        save_at=lambda step: step % cfg.checkpoint_every_steps == 0 and step < n, where=where,
        window=resume.get('log_window', ()) if resume else (), event_at=evaluating,
        multi_step=(self.multi_step_fn(phase, anchor) if k > 1 and self.multi_step_fn
                    else None), steps_per_dispatch=k)
    wall = time.time() - t0
    steady = n - start - first_steps
    result = None
    if cfg.student.eval_every_phase or i == len(self.states.phases[m]) - 1:
      result = self.evaluate(states['g'])
      log('test', n, {**result, 'wall_s': time.time() - t_start})
    print(f'stage {m + 1} phase {phase.name}: {n} steps, {wall_before + wall:.1f}s' + (
        f', student {eval_label(cfg)} {_fmt(result["accuracy"], self.seeds.candidates)}' if result else ''),
          flush=True)
    record = {'name': phase.name, 'trainable_params': trainable, 'steps': n,
              'wall_s': round(wall_before + wall, 2), 'first_step_s': round(first_step_s, 2),
              'images_per_s': round(
                  steady * cfg.batch_size / max(wall - first_step_s - eval_s[0], 1e-9)
                  if steady > 0
                  else (n - start) * cfg.batch_size / max(wall, 1e-9), 1),
              'stage': m + 1}
    if result is not None:
      record['test_accuracy'] = result['accuracy']
    for name, hook in phase.states.items():
      if one.get(name) is not None:
        record[hook.record_key] = optim.count_params(one[name].params)
    if watch is not None and watch.warnings:
      record['warnings'] = watch.warnings
    return states, record


def eval_label(cfg) -> str:
  """'test accuracy', or 'accuracy on <split>' where the run evaluates on another split (a
  comparison's tuning runs score on a validation slice of the training split)."""
  split = cfg.dataset.test_split
  return 'test accuracy' if split.split('[')[0] == 'test' else f'accuracy on {split}'


def _fmt(accuracy, candidates=None) -> str:
  """An accuracy for the console: with several runs their mean +- population std, with
  candidates (`candidates[j]`, run j's) each candidate's mean."""
  if isinstance(accuracy, list) and candidates is not None:
    per = {}
    for c, a in zip(candidates, accuracy):
      per.setdefault(c, []).append(a)
    n = len(next(iter(per.values())))
    return ', '.join(f'candidate {c} {np.mean(v):.4f}' for c, v in per.items()) + (
        f' (mean of {n} seeds each)' if n > 1 else '')
  if isinstance(accuracy, list):
    return f'{np.mean(accuracy):.4f} +- {np.std(accuracy):.4f} over {len(accuracy)} seeds'
  return f'{accuracy:.4f}'
