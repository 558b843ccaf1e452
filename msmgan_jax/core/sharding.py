"""The device mesh and placement of arrays on it (pure JAX)."""
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P


def abstract_variables(model, image_shape, m):
  """Shapes, dtypes and (replicated) shardings of `model`'s variables, computing nothing."""
  shapes = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1,) + tuple(image_shape)), train=False))
  sharding = NamedSharding(m, P())
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
                      dict(shapes))


def mesh() -> jax.sharding.Mesh:
  """A 1-D ('data',) mesh over all devices.

  Its axis is `Auto`: shardings propagate through the steps as XLA chooses (our steps are
  written for that). Newer JAX makes `Explicit` axes the default, under which the
  gradient of an integer-label gather (`optax.softmax_cross_entropy_with_integer_labels`)
  fails to resolve its sharding.
  """
  axis_type = getattr(jax.sharding, 'AxisType', None)
  if axis_type is None:  # JAX before axis types: every axis is automatic.
    return jax.make_mesh((jax.device_count(),), ('data',))
  return jax.make_mesh((jax.device_count(),), ('data',), axis_types=(axis_type.Auto,))


def replicate(tree, m):
  """Places a pytree replicated on every device of mesh `m`."""
  return jax.device_put(tree, NamedSharding(m, P()))


def put(x, sharding) -> jax.Array:
  """A global array of the host value `x` (NumPy or scalar, the same on every process)
  placed with `sharding`: each process fills only the shards its own devices hold, so this
  works on several hosts, where `jax.device_put` of host data to devices of other processes
  does not. On one host it is `jax.device_put`."""
  x = np.asarray(x)
  if sharding.is_fully_addressable:
    return jax.device_put(x, sharding)
  return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def shard_batch(batch: dict, m) -> dict:
  """Assembles this host's share of a global batch into arrays sharded on 'data'. Arrays
  already on the device (the device pipeline's batches, several seeds' stacked batches)
  are global and placed: they pass unchanged."""
  sharding = NamedSharding(m, P('data'))
  return {k: v if isinstance(v, jax.Array)
          else jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in batch.items()}
