"""msmgan_jax: knowledge distillation for image classifiers in JAX/Flax (MS-MGANs and baselines)."""
__version__ = '0.1.0'
