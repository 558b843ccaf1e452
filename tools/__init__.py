"""Maintainer tools and experiments of this repository; not part of the msmgan_jax wheel.

Run from a checkout, either way: `python tools/X.py ...` or `python -m tools.X ...`.

- `equivalence.py`: are two checkouts' behaviours the same (lowered step programs, run
  values)? Stdlib and NumPy only; never imports msmgan_jax.
- `checkout_speed.py`: two checkouts' step times side by side (`msmgan_jax.benchmark
  --quick` of each, alternating).
- `budget_study.py`: the student-budget experiment behind `training.loop.ADVISED_MIN_STEPS`
  (results/budget/).
"""
