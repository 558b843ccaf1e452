"""`python -m msmgan_jax.export`: the command of `msmgan_jax.serving.export` (see there)."""
import sys

from msmgan_jax.serving.export import main

if __name__ == '__main__':
  sys.exit(main())
