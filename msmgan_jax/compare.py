"""`python -m msmgan_jax.compare`, installed also `msmgan-compare`:
the command of `msmgan_jax.lab.compare` (see there).

Importing it loads neither JAX nor TensorFlow: `--help` and bad arguments answer at once.
"""
import sys

from msmgan_jax.lab.compare import main

if __name__ == '__main__':
  sys.exit(main())
