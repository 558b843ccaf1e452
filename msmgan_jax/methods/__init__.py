"""Distillation methods, one module each, registered on import (see `registry`).

Every module of this package is imported here (so a new method is one new file, nothing
else edited): `ce`, `kd` and `rco`, `msmgan`, `fitnets`, `at`, `dml`, `skd`, and whatever
else lies beside them. A method defined elsewhere is a module that calls
`registry.register_method` (the README's "Extending it"); import it before building the
config.
"""
import importlib
import pkgutil

from msmgan_jax.methods.registry import METHODS, register_group, register_method  # noqa: F401

# The built-in methods first, in the order their config groups have always had (a config
# dump keeps its order); any other module of this folder after them, by name.
_FIRST = ('ce', 'kd', 'msmgan', 'fitnets', 'at', 'dml', 'skd')
for _module in _FIRST + tuple(sorted(
    m.name for m in pkgutil.iter_modules(__path__) if m.name not in _FIRST + ('registry',))):
  importlib.import_module(f'{__name__}.{_module}')
