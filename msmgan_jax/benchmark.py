"""`python -m msmgan_jax.benchmark`: the command of `msmgan_jax.lab.benchmark` (see there)."""
import sys

from msmgan_jax.lab.benchmark import main

if __name__ == '__main__':
  sys.exit(main())
