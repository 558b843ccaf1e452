"""Several students in one program: stacking, mapping a step over the run axis, and each
run's own data order.

The runs of a program are its seeds, for every one of its `candidates` (`core.runs`):
candidate by candidate, the seeds inside. With more than one run every state and batch
carries a leading run axis; a step runs over it with `jax.vmap`, or unrolled (one copy of
the step per run) where `seed_batching` says so. A run's states hold its candidate's
per-run values under `hp` ({field: float32 scalar}), which its step binds (`core.runs`).
"""
import jax
import jax.numpy as jnp

from msmgan_jax.core import sharding


def stack(trees: list):
  """Trees of equal structure stacked leaf by leaf on a new leading (seed) axis."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


class Seeds:
  """The runs of one program on `mesh`: the seeds `cfg.seed` .. `cfg.seed + cfg.seeds - 1`,
  for each candidate of `values` (per candidate, {field: value} of its per-run fields,
  `config.candidate_values`; none: one candidate, the config itself). `seeds[j]` is run j's
  seed and `candidates[j]` its candidate's index (None without candidates)."""

  def __init__(self, cfg, mesh, values=(), settings=()):
    self.cfg, self.mesh = cfg, mesh
    seeds = [cfg.seed + s for s in range(cfg.seeds)]
    self.values, self.settings = list(values), tuple(settings)
    n = max(len(self.values), 1)
    self.seeds = seeds * n
    self.candidates = [c for c in range(n) for _ in seeds] if self.values else None
    self.multi = len(self.seeds) > 1

  def tag(self, j: int) -> str:
    """Run j's name in file names: its seed, or 'c<candidate>_s<seed>' with candidates."""
    if self.candidates is None:
      return str(self.seeds[j])
    return f'c{self.candidates[j]}_s{self.seeds[j]}'

  def hp(self, j: int):
    """Run j's per-run values, {field: float32 scalar} (None without candidates)."""
    if self.candidates is None:
      return None
    return {f: jnp.asarray(v, jnp.float32) for f, v in self.values[self.candidates[j]].items()}

  def batching(self) -> str:
    """'vmap' or 'unroll': `seed_batching`, with `auto` unrolling on CPU."""
    how = self.cfg.seed_batching
    if how == 'auto':
      how = 'unroll' if jax.devices()[0].platform == 'cpu' else 'vmap'
    return how

  def over(self, fn, in_axes):
    """`fn` over the leading seed axis of the arguments whose `in_axes` is 0, in one
    program: `jax.vmap`, or one copy of `fn` per seed (`unroll`) where `seed_batching`
    says so. `auto` unrolls on CPU, where a vmapped convolution becomes a grouped one that
    XLA:CPU runs several times slower than the seeds one after another, while unrolled
    steps cost a little less than that (measured by the benchmark's seed rows, see
    PERFORMANCE.md)."""
    if self.batching() == 'vmap':
      return jax.vmap(fn, in_axes=in_axes)

    def unrolled(*args):
      return stack([fn(*(jax.tree.map(lambda x, j=j: x[j], a) if ax == 0 else a
                         for a, ax in zip(args, in_axes))) for j in range(len(self.seeds))])
    return unrolled

  def eval_step(self, eval_step):
    """`eval_step(variables, batch)` for every seed's variables on the same eval batch."""
    if not self.multi:
      return eval_step
    over = self.over(eval_step, in_axes=(0, None))
    if self.batching() == 'vmap':  # the batch replicated for vmap.
      rep = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())
      return jax.jit(lambda v, b: over(v, jax.sharding.reshard(b, rep)))
    return jax.jit(over)

  def build(self, make, carry):
    """`make(carry_of_one_run, seed)` for every run, with its per-run values under 'hp'
    (with candidates), stacked (one run: as it is)."""
    def one(c, j):
      states = make(c, self.seeds[j])
      if self.candidates is not None:
        states['hp'] = self.hp(j)
      return states
    if not self.multi:
      return one(carry, 0)
    return stack([one(jax.tree.map(lambda x, j=j: x[j], carry), j)
                  for j in range(len(self.seeds))])

  def first(self, states):
    """The states of the first seed (all of `states` with one seed)."""
    return jax.tree.map(lambda x: x[0], states) if self.multi else states

  def split(self, tree) -> list:
    """One tree per seed."""
    if not self.multi:
      return [tree]
    return [jax.tree.map(lambda x: x[j], tree) for j in range(len(self.seeds))]

  def batches(self, batches, states, skip):
    """The phase's training batches from step `skip` on: each seed's own data order, drawn
    from its checkpointed key (a resume replays it); several seeds' batches stacked."""
    keys = jax.device_get(states['rng'])
    data_seed = lambda k: int(jax.random.randint(jax.random.wrap_key_data(k), (), 0, 2 ** 31 - 1))
    if not self.multi:
      return batches(data_seed(keys), skip=skip)
    its = [batches(data_seed(k), skip=skip) for k in keys]
    # Unrolled, each seed's batch is a slice sharded on 'data'; vmap's batched convolutions
    # reshape the seed axis into the batch, which a 'data'-sharded batch axis forbids.
    spec = (None, 'data') if self.batching() == 'unroll' else ()
    placed = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec(*spec))

    def stacked():
      while True:
        parts = [sharding.shard_batch(next(it), self.mesh) for it in its]
        yield {k: jax.device_put(jnp.stack([p[k] for p in parts]), placed) for k in parts[0]}
    return stacked()
