"""Holm-corrected seed-paired intervals (msmgan_jax.lab.holm) against hand-worked values."""
import itertools

import numpy as np
import pytest

from msmgan_jax.lab import holm


def test_paired_t_by_hand():
  """d = (1, 2, 3): mean 2, sd 1, se 1/sqrt(3); t_{0.975, 2} = 4.302653 gives a half-width
  of 2.484138; t = 2 sqrt(3) = 3.4641 on 2 degrees of freedom gives p = 0.074180."""
  r = holm.paired_t([1.0, 2.0, 3.0], 0.95)
  assert r['mean'] == 2.0 and r['n'] == 3
  assert r['low'] == pytest.approx(2 - 2.484138, abs=1e-6)
  assert r['high'] == pytest.approx(2 + 2.484138, abs=1e-6)
  assert r['p'] == pytest.approx(0.074180, abs=1e-6)
  assert holm.paired_t([0.5, 0.5], 0.95)['p'] == 0.0  # no spread, not zero: certain.
  assert holm.paired_t([0.0, 0.0], 0.95)['p'] == 1.0


def test_holm_steps_down_and_stops_at_the_first_failure():
  """m = 3, p = (0.01, 0.04, 0.03): 0.01 <= 0.05/3 is rejected; 0.03 > 0.05/2 stops the
  procedure, so 0.04 is not rejected either, although 0.04 <= 0.05/1."""
  assert holm.holm_levels([0.01, 0.04, 0.03]) == [
      (True, pytest.approx(1 - 0.05 / 3)), (False, pytest.approx(0.975)),
      (False, pytest.approx(0.975))]
  # Every one rejected: levels 1 - alpha/m, 1 - alpha/(m-1), ..., 1 - alpha.
  assert holm.holm_levels([0.001, 0.02, 0.012]) == [
      (True, pytest.approx(1 - 0.05 / 3)), (True, pytest.approx(0.95)),
      (True, pytest.approx(0.975))]
  assert holm.holm_levels([]) == []


@pytest.mark.parametrize('seed', range(5))
def test_a_corrected_interval_excludes_zero_exactly_when_holm_rejects_and_is_never_narrower(
    seed):
  rng = np.random.RandomState(seed)
  family = [rng.normal(rng.uniform(-1, 1), rng.uniform(0.1, 1), 5) for _ in range(8)]
  family[3] = None  # a comparison that cannot be made is left out of m.
  out = holm.corrected(family)
  assert out[3] is None
  made = [r for r in out if r is not None]
  for r in made:
    assert r['holm_low'] <= r['low'] <= r['mean'] <= r['high'] <= r['holm_high']
    assert (r['holm_low'] > 0 or r['holm_high'] < 0) == r['holm_rejected']
    assert r['holm_rejected'] <= (r['p'] < 0.05)  # correction never adds a claim.
  # Holm's own rule, applied by hand to the p-values.
  ps = sorted(r['p'] for r in made)
  m = len(ps)
  rejected = list(itertools.takewhile(lambda ip: ip[1] <= 0.05 / (m - ip[0]), enumerate(ps)))
  assert sum(r['holm_rejected'] for r in made) == len(rejected)


def test_a_tables_family_counts_each_pair_once_and_corrects_them_together():
  """compare.family: the comparisons a table shows (vs kd, vs the best baseline), a pair
  shown in two rows (kd vs dkd, dkd vs kd) counted once and mirrored, corrected together by
  `corrected`; the tables' +- is the sample std (n - 1)."""
  from msmgan_jax.lab import compare  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  row = lambda name, accs: {'name': name, 'method': name, 'ablation': None, 'budget': None,
                            'seeds': list(range(len(accs))), 'accuracies': accs,
                            'mean': float(np.mean(accs))}
  ce, kd = row('ce', [0.80, 0.82, 0.81]), row('kd', [0.84, 0.85, 0.85])
  dkd, ms = row('dkd', [0.86, 0.86, 0.88]), row('msmgan', [0.85, 0.87, 0.86])
  cc = ml_collections.ConfigDict({'ours': 'msmgan'})
  fam = compare.family(cc, [ce, kd, dkd, ms])
  pairs = [('ce', 'kd'), ('ce', 'dkd'), ('kd', 'dkd'), ('msmgan', 'kd'), ('msmgan', 'dkd')]
  want = holm.corrected([compare.paired_differences(a, b) for a, b in
                    [({'ce': ce, 'kd': kd, 'dkd': dkd, 'msmgan': ms}[x],
                      {'kd': kd, 'dkd': dkd}[y]) for x, y in pairs]])
  for (x, y), w in zip(pairs, want):
    got = fam[(x, y)]
    assert got['m'] == 5
    for k in ('mean', 'low', 'high', 'holm_low', 'holm_high'):
      assert got[k] == pytest.approx(w[k])
    mirror = fam[(y, x)]
    assert (mirror['mean'], mirror['holm_low'], mirror['holm_high']) == pytest.approx(
        (-w['mean'], -w['holm_high'], -w['holm_low']))
  assert compare.sample_std([0.80, 0.82, 0.81]) == pytest.approx(0.01)
  assert compare.sample_std([0.8]) == 0.0
