"""Teachers from outside the library: a Flax module, a Keras 3 model, a TensorFlow SavedModel.

The trainer sees every teacher through the interface of `core.models.Classifier`:
`apply(variables, x, train=False, start=0, stop=None, with_head=True) -> (logits, feats)`
with `block_channels`, `block_strides`, `num_blocks` and `block_names`. A Flax
`Classifier` (this library's block structure) is used as it is and serves every method.
Any other teacher is wrapped in `External`, which runs the whole network once per call
(inside the jitted step) and returns its logits and the outputs of the layers named in
`teacher.feature_layers` as its block features:

| source (module) | how it runs in the step | block features | upper network (msmgan, srrl) |
|---|---|---|---|
| Flax `Classifier` | `module.apply` | every block | yes |
| other Flax module (`flax_source`) | `module.apply(..., capture_intermediates=...)` | named sub-modules | no |
| Keras 3 `.keras` (`keras_source`) | `Model.stateless_call` on the JAX backend | named layers, any model kind | no |
| TF SavedModel (`saved_model_source`) | `jax2tf.call_tf`, or on the host where it cannot | none (logits only) | no |

So an external teacher serves the logit methods (kd, dkd, rco, ...) and, with feature
layers, the feature methods that compare block maps (fitnets, at, skd); methods that run the
teacher's upper blocks on student maps or train a copy of it (MS-MGANs with its teacher
discriminator or mutual learning, srrl) need a Flax `Classifier`.

A new source is one module with `load(teacher_config, info)` returning `(Given, name)` or
`(model, [variables per anchor], name)` that calls `register(name, load, check)`; it is then
a value of `teacher.source` (docs/extending.md shows one). `check(teacher_config)` raises
ConfigError for a teacher field the source cannot take (`config.validate` calls it).

Inputs: the data pipeline gives images standardised by the dataset's mean and std;
`teacher.inputs` converts them back for a teacher trained on [0, 1] (`unit`), 0..255
(`raw`) or [-1, 1] (`signed`) pixels, or as ImageNet models take them (`caffe`, `torch`:
Keras's `preprocess_input` modes; RGB only). Outputs: `teacher.outputs = 'probabilities'` takes the log of a softmax
output, which gives the same softmax (and so the same KD target) as its logits would;
`teacher.output` picks which of several outputs. Before a teacher teaches, `diagnosis`
checks what it gives on the data (probabilities read as logits, an accuracy near chance,
one class for every image) and stops the run naming the field to change.
"""
from typing import Callable, Optional

from msmgan_jax.core.teachers import flax_source, keras_source, saved_model_source
from msmgan_jax.core.teachers.external import (INPUTS, OUTPUTS, External, Given, Layer,  # noqa: F401
                                               fitting, layer_rows, layer_table, pick_output)
from msmgan_jax.core.teachers.flax_source import (flax_forward, flax_module,  # noqa: F401
                                                  flax_teacher, flax_variables, import_object)
from msmgan_jax.core.teachers.keras_source import (keras_forward, keras_model,  # noqa: F401
                                                   keras_module, keras_teacher, keras_variables)
from msmgan_jax.core.teachers.saved_model_source import saved_model_forward  # noqa: F401
from msmgan_jax.errors import ConfigError


def _require(ok: bool, field: str, msg: str) -> None:
  if not ok:
    raise ConfigError(f'config field {field}: {msg}')


def _no_train_kwarg(t) -> None:
  _require(not t.train_kwarg, 'teacher.train_kwarg',
           f'{t.train_kwarg!r}: only a flax teacher takes it (Keras runs with training=False)')


def _check_flax(t) -> None:
  _require(bool(t.module), 'teacher.module',
           "teacher.source flax needs the module, say 'mynets:Teacher'")


def _check_saved_model(t) -> None:
  _no_train_kwarg(t)
  _require(not t.feature_layers, 'teacher.feature_layers',
           'a SavedModel teacher gives logits only; leave teacher.feature_layers empty')


# teacher.source -> the function that loads it ('msmgan_jax': this library's own anchors,
# loaded by training.teacher), and the check of the teacher fields it reads.
LOADERS = {'flax': flax_source.load, 'keras': keras_source.load,
           'saved_model': saved_model_source.load}
CHECKS = {'flax': _check_flax, 'keras': _no_train_kwarg, 'saved_model': _check_saved_model}
SOURCES = ('msmgan_jax',) + tuple(LOADERS)


def register(name: str, load: Callable, check: Optional[Callable] = None) -> None:
  """Makes `name` a value of `teacher.source`, loaded by `load(teacher_config, info)`
  (returning `(Given, name)` or `(model, [variables per anchor], name)`, see the module
  docstring) and checked by `check(teacher_config)` (ConfigError for a field it cannot
  take; None: the common checks only). Registering a name again replaces it.

  Raises:
    ValueError: `name` is 'msmgan_jax' (this library's own anchors) or not a plain name.
  """
  global SOURCES
  if name == 'msmgan_jax' or not (isinstance(name, str) and name.isidentifier()):
    raise ValueError(f'teacher source name {name!r}: give a plain name (letters, digits, _) '
                     'other than msmgan_jax')
  LOADERS[name] = load
  CHECKS[name] = check
  SOURCES = ('msmgan_jax',) + tuple(LOADERS)


def check(t) -> None:
  """The checks of the teacher fields of `t` (the teacher group) its `teacher.source`
  reads (ConfigError naming the field); nothing for a source without checks."""
  source_check = CHECKS.get(t.source)
  if source_check is not None:
    source_check(t)
