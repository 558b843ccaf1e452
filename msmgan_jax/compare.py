"""`python -m msmgan_jax.compare`: the command of `msmgan_jax.lab.compare` (see there)."""
import sys

from msmgan_jax.lab.compare import main

if __name__ == '__main__':
  sys.exit(main())
