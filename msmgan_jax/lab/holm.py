"""Seed-paired intervals corrected for the number of comparisons in a table (Holm, 1979).

A results table compares one method with many others; at 95% each, one interval in twenty
excludes zero by chance. Holm's step-down procedure (S. Holm, "A simple sequentially
rejective multiple test procedure", Scand. J. Statist. 6, 1979) keeps the chance of any
false claim in the table (the family-wise error rate) at `alpha`: order the m paired
t-tests' p-values p_(1) <= ... <= p_(m); reject H_(i) while p_(i) <= alpha / (m - i + 1),
stop at the first that fails (it and every later one are not rejected).

The corrected interval of comparison i is its Student-t interval at the level Holm tests it
at: 1 - alpha / (m - i + 1) for the rejected ones, and for the rest the level of the first
one not rejected, 1 - alpha / (m - k + 1). So a corrected interval excludes zero exactly
when Holm rejects that comparison, and is never narrower than the uncorrected one. (These
are the per-comparison intervals Holm's levels give, not simultaneous confidence
intervals; the verdict reads them only for "above zero or not".)
"""
from typing import Optional, Sequence

import numpy as np
import scipy.stats


def paired_t(d: Sequence[float], level: float) -> dict:
  """{'mean', 'low', 'high', 'p', 'n'}: the Student-t interval at `level` of the mean of the
  paired differences `d` (n >= 2; any unit) and the two-sided p-value of mean zero."""
  d = np.asarray(d, np.float64)
  n, mean = len(d), float(d.mean())
  sd = float(d.std(ddof=1))
  se = sd / np.sqrt(n)
  half = float(scipy.stats.t.ppf(0.5 + level / 2, n - 1) * se)
  if se > 0:
    p = float(2 * scipy.stats.t.sf(abs(mean) / se, n - 1))
  else:
    p = 0.0 if mean != 0 else 1.0
  return {'mean': mean, 'low': mean - half, 'high': mean + half, 'p': p, 'n': n}


def holm_levels(pvalues: Sequence[float], alpha: float = 0.05) -> list:
  """(rejected, level) of each p-value in `pvalues` (their order): whether Holm's step-down
  procedure at family-wise `alpha` rejects it, and the level (1 - the alpha it is tested
  at) of its corrected interval (see the module docstring). Ties keep the given order."""
  m = len(pvalues)
  order = sorted(range(m), key=lambda i: (pvalues[i], i))
  out = [None] * m
  stopped = None  # the rank of the first comparison not rejected.
  for rank, i in enumerate(order):
    if stopped is None and pvalues[i] > alpha / (m - rank):
      stopped = rank
    at = rank if stopped is None else stopped
    out[i] = (stopped is None, 1 - alpha / (m - at))
  return out


def corrected(differences: Sequence[Optional[Sequence[float]]], alpha: float = 0.05) -> list:
  """For a table's family of seed-paired differences (one list per comparison, or None for
  one that cannot be made), each comparison's {'mean', 'low', 'high', 'p', 'n', 'holm_low',
  'holm_high', 'holm_level', 'holm_rejected'}: its 1 - alpha interval and its Holm-corrected
  one over the comparisons that can be made (m = their count); None where None was given."""
  made = [i for i, d in enumerate(differences) if d is not None and len(d) >= 2]
  plain = {i: paired_t(differences[i], 1 - alpha) for i in made}
  levels = holm_levels([plain[i]['p'] for i in made], alpha)
  out = [None] * len(differences)
  for i, (rejected, level) in zip(made, levels):
    wide = paired_t(differences[i], level)
    out[i] = {**plain[i], 'holm_low': wide['low'], 'holm_high': wide['high'],
              'holm_level': level, 'holm_rejected': rejected}
  return out
