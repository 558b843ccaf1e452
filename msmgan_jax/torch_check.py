"""`python -m msmgan_jax.torch_check`, installed also `msmgan-torch-check`:
the command of `msmgan_jax.lab.torch_check` (see there).

Importing it loads neither JAX nor TensorFlow: `--help` and bad arguments answer at once.
"""
import sys

from msmgan_jax.lab.torch_check import main

if __name__ == '__main__':
  sys.exit(main())
