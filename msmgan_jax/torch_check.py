"""`python -m msmgan_jax.torch_check`: the command of `msmgan_jax.lab.torch_check` (see there)."""
import sys

from msmgan_jax.lab.torch_check import main

if __name__ == '__main__':
  sys.exit(main())
