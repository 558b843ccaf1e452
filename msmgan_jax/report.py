"""`python -m msmgan_jax.report`: the command of `msmgan_jax.lab.report` (see there)."""
import sys

from msmgan_jax.lab.report import main

if __name__ == '__main__':
  sys.exit(main())
