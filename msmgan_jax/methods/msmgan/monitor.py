"""MS-MGANs' monitor of its discriminators (a `core.phase.Monitor`, given to the registry)."""
import re
import sys

import numpy as np

from msmgan_jax.core.phase import Monitor


class DiscWatch(Monitor):
  """Warns when a discriminator's accuracy on real or on fake (the d_acc_real_b<k> and
  d_acc_fake_b<k> metrics) sits at 0 or 1 for `disc.stuck_logs` logged intervals in a row
  (it has won or lost outright and no longer teaches the student). Each block and side
  warns once per phase; `disc.stuck_logs` 0 turns it off. Its state is kept in a
  checkpoint's metadata under 'disc_watch', so a resumed phase warns as an uninterrupted
  one would."""
  key = 'disc_watch'
  LOW, HIGH = 0.02, 0.98

  def __init__(self, cfg, where: str, state=None):
    super().__init__(cfg, where, state)
    self.limit, self.log_every = cfg.disc.stuck_logs, cfg.log_every_steps
    state = state or {'runs': {}, 'warnings': [], 'warned': []}
    self.runs, self.warnings = dict(state['runs']), list(state['warnings'])
    self.warned = set(state['warned'])

  def state(self) -> dict:
    return {'runs': dict(self.runs), 'warnings': list(self.warnings),
            'warned': sorted(self.warned)}

  def update(self, metrics: dict) -> None:
    for key, v in sorted(metrics.items()):
      if not re.fullmatch(r'd_acc_(real|fake)_b\d+', key) or self.limit <= 0:
        continue
      v = np.asarray(v)  # one value, or one per seed: stuck when every seed is.
      stuck = bool(np.all((v <= self.LOW) | (v >= self.HIGH)))
      self.runs[key] = self.runs.get(key, 0) + 1 if stuck else 0
      if self.runs[key] >= self.limit and key not in self.warned:
        self.warned.add(key)
        msg = (f'{self.where}: {key} has been {np.round(v).astype(int).tolist()} for {self.limit} logs '
               f'({self.limit * self.log_every} steps): discriminator {key.rsplit("_b", 1)[1]} '
               'has stopped learning; see disc.lr, disc.steps_per_g and gan.loss')
        self.warnings.append(msg)
        sys.stderr.write(f'warning: {msg}\n')
