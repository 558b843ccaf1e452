"""msmgan_jax: knowledge distillation for image classifiers in JAX/Flax (MS-MGANs and baselines)."""
import os as _os

__version__ = '0.1.0'
# Keras 3 teachers (teacher.source keras) run inside jitted JAX steps: Keras must load on
# the JAX backend, and TensorFlow (imported by TFDS) may import Keras first.
_os.environ.setdefault('KERAS_BACKEND', 'jax')
