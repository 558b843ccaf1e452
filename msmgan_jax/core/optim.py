"""Train states and optimizers, including masked (block-wise) optimizers.

Masks are built from parameter paths: every leaf is labelled by exactly one rule
(asserted), and frozen leaves go through `optax.set_to_zero()`, which keeps no
optimizer state for them.
"""
import re
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import optax
from flax.training import train_state


class TrainState(train_state.TrainState):
  """A Linen train state that also carries BatchNorm statistics."""
  batch_stats: Any = None


def path_str(path) -> str:
  """'block2/Conv_0/kernel' for a jax key path."""
  return '/'.join(str(getattr(k, 'key', getattr(k, 'idx', k))) for k in path)


def label_params(params, rules: Sequence[tuple[str, str]]):
  """Labels each leaf with the label of the single rule (regex, label) matching its path.

  Raises ValueError when a leaf matches no rule or several: coverage is total and exclusive.
  """
  def label(path, _):
    p = path_str(path)
    hits = [lab for pattern, lab in rules if re.fullmatch(pattern, p)]
    if len(hits) != 1:
      raise ValueError(f'parameter {p!r} matches {len(hits)} optimizer rules {rules}; '
                       'each parameter must match exactly one')
    return hits[0]
  return jax.tree_util.tree_map_with_path(label, params)


def lr_schedule(lr: float, total_steps: int, warmup_steps: int) -> optax.Schedule:
  """Linear warmup to `lr`, then cosine decay to 0 at `total_steps`."""
  warmup_steps = min(warmup_steps, total_steps - 1)
  if warmup_steps <= 0:
    return optax.cosine_decay_schedule(lr, max(total_steps, 1))
  return optax.warmup_cosine_decay_schedule(0.0, lr, warmup_steps, total_steps)


def start_at(opt_state, step: int):
  """`opt_state` with every schedule's step count (`optax.ScaleByScheduleState.count`) set
  to `step`: a fresh optimizer that continues a schedule begun in earlier phases (the
  schedule stays a static part of the optimizer, so its compiled steps are shared by every
  phase of the same kind). Other counts, such as Adam's for its bias correction, keep their
  own value: they count this optimizer's updates, not the run's."""
  is_schedule = lambda n: isinstance(n, optax.ScaleByScheduleState)
  return jax.tree.map(lambda n: n._replace(count=jnp.full_like(n.count, step)) if is_schedule(n)
                      else n, opt_state, is_leaf=is_schedule)  # a buffer each: steps donate them.


def sgd(schedule, momentum: float, weight_decay: float) -> optax.GradientTransformation:
  """Nesterov SGD with L2 decay on kernels (not on BatchNorm scales or biases)."""
  decay_mask = lambda p: jax.tree_util.tree_map_with_path(
      lambda path, _: path_str(path).endswith('kernel'), p)
  return optax.chain(optax.add_decayed_weights(weight_decay, decay_mask),
                     optax.sgd(schedule, momentum=momentum, nesterov=True))


def masked(params, rules: Sequence[tuple[str, str]],
           transforms: Mapping[str, optax.GradientTransformation]) -> optax.GradientTransformation:
  """`optax.multi_transform` over labels from `label_params`; label 'frozen' = set_to_zero."""
  labels = label_params(params, rules)
  transforms = dict(transforms)
  transforms.setdefault('frozen', optax.set_to_zero())
  return optax.multi_transform(transforms, labels)


def create_state(model, rng, image_shape, tx) -> TrainState:
  """Initialises `model` on a dummy batch and wraps it in a TrainState."""
  variables = init_variables(model, rng, image_shape)
  return TrainState.create(apply_fn=model.apply, params=variables['params'],
                           batch_stats=variables.get('batch_stats', {}), tx=tx)


def init_variables(model, rng, image_shape):
  """Model variables for inputs of `image_shape` (H, W, C)."""
  return jax.jit(model.init, static_argnames='train')(
      rng, jnp.zeros((1,) + tuple(image_shape), jnp.float32), train=False)


def count_params(params) -> int:
  """Number of scalars in a parameter tree."""
  return int(sum(x.size for x in jax.tree.leaves(params)))
