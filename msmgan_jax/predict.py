"""`python -m msmgan_jax.predict`: the command of `msmgan_jax.serving.predict` (see there)."""
import sys

from msmgan_jax.serving.predict import main

if __name__ == '__main__':
  sys.exit(main())
