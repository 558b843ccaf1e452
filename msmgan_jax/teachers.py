"""Bring your own teacher from Python: `flax_teacher`, `keras_teacher` (see `core.teachers`).

    from msmgan_jax import teachers
    from msmgan_jax.training import train
    train.train_and_evaluate(cfg, 'runs/mine', teacher=teachers.flax_teacher(module, variables))
"""
from msmgan_jax.core.teachers import Given, flax_teacher, keras_teacher  # noqa: F401
