"""`python -m msmgan_jax.report`, installed also `msmgan-report`:
the command of `msmgan_jax.lab.report` (see there).

Importing it loads neither JAX nor TensorFlow: `--help` and bad arguments answer at once.
"""
import sys

from msmgan_jax.lab.report import main

if __name__ == '__main__':
  sys.exit(main())
