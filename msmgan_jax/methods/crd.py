"""`crd`: contrastive representation distillation (Tian, Krishnan and Isola, ICLR 2020).

The student's and the final teacher's penultimate features (their last block's maps,
globally average-pooled: what each network's classifier head reads) go through linear
embedding heads and L2 normalisation (`crd.feat_dim`, 128). Two memory banks, one per
network, hold an embedding for each of the N training examples. For each example of the
batch (its `index` in the training split) and `crd.nce_k` negatives drawn uniformly from
the other N - 1 examples, the noise-contrastive estimate of the paper's critic (their eq.
18, RepDistiller's `crd/criterion.py` `ContrastLoss`) is taken twice: the student's
embedding against the teacher's bank, and the teacher's embedding against the student's
bank. The student learns

  CE + crd.beta (L_student + L_teacher)

(RepDistiller's `train_student.py` for CRD alone: `-r 1 -a 0 -b 0.8`). Both embedding heads
train with the student, on that loss's gradient (the teacher itself is frozen). After the
loss has read them, the batch's rows of each bank move towards the batch's embeddings with
momentum `crd.nce_m` and are renormalised (RepDistiller's `crd/memory.py`).

The NCE form, for one anchor embedding v, its positive bank row w_0 and negatives w_1..w_K
of the other network's bank (B examples per batch, N training examples):

  P_k = exp(w_k . v / nce_t) / Z
  L = -(1/B) sum_b [ log(P_0 / (P_0 + K/N + eps)) + sum_{k>=1} log((K/N) / (P_k + K/N + eps)) ]

with eps = 1e-7 and Z = mean over the first batch of exp(w . v / nce_t), times N, then
fixed for the rest of the run (their code; one Z per direction). The NCE form, not the
softmax (InfoNCE) variant, because it is what the paper's results were made with.

Departures from RepDistiller, each forced by this project or a choice made here:
- negatives are drawn uniformly from the other examples (their `ContrastMemory`'s own
  sampler, with replacement), not from the other classes as their CIFAR-100 loader's
  'exact' mode does: the bank knows no labels before every example has been seen;
- K = min(crd.nce_k, N - 1) (their 16384 was sized for CIFAR's 50,000 examples; 4096 here
  keeps the (B, K + 1, feat_dim) gathers small on the low-data slices compared);
- the embedding heads are Flax `Dense` layers (LeCun-normal kernels, zero biases, where
  PyTorch's `nn.Linear` draws both uniformly) trained by their own SGD with the student's
  schedule, momentum and weight decay (RepDistiller puts them in the student's optimizer:
  the same update);
- the banks start uniform in [-s, s], s = 1 / sqrt(feat_dim / 3) (rows of unit expected
  norm), from the run's seed; the negatives of a step are drawn from a key of the seed
  folded with the step, so a resumed run draws the same ones.
The banks, the two Z and the key are the method state's buffers (`core.phase.MethodState`):
carried, checkpointed and restored with the phase.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from msmgan_jax.core import losses, optim
from msmgan_jax.core.phase import ANCHOR, MethodState, OwnedState, whole_student
from msmgan_jax.methods.registry import check_finite, register_group, register_method, require

EPS = 1e-7  # RepDistiller's eps in the NCE terms.


def defaults(c: ml_collections.ConfigDict) -> None:
  c.crd = cr = ml_collections.ConfigDict()
  cr.beta = 0.8                   # crd: weight of the contrastive loss (CE gets 1).
  cr.feat_dim = 128               # crd: embedding dimension of both heads and banks.
  cr.nce_k = 4096                 # crd: negatives per example (at most N - 1 of N examples).
  cr.nce_t = 0.07                 # crd: temperature of the critic exp(w . v / nce_t).
  cr.nce_m = 0.5                  # crd: momentum of the memory banks' update.


def check(cfg) -> None:
  check_finite(cfg, ('crd.beta', 'crd.nce_t', 'crd.nce_m'), positive=('crd.nce_t',))
  require(cfg.crd.nce_m < 1, 'crd.nce_m', f'must be in [0, 1), got {cfg.crd.nce_m}')
  for field in ('feat_dim', 'nce_k'):
    v = cfg.crd[field]
    require(isinstance(v, int) and not isinstance(v, bool) and v >= 1, f'crd.{field}',
            f'must be an integer >= 1, got {v!r}')


def normalize(x):
  """Rows of `x` (..., D) over their L2 norm, a norm under 1e-12 taken as 1e-12 (as
  PyTorch's `F.normalize`; a zero row stays zero, with a finite gradient)."""
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), 1e-24))


class Embed(nn.Module):
  """A linear map to `features` dimensions, then L2 normalisation: (B, C) -> (B, features)."""
  features: int

  @nn.compact
  def __call__(self, f):
    return normalize(nn.Dense(self.features)(f.astype(jnp.float32)))


def pooled(feature_map):
  """A block's (B, H, W, C) map averaged over H and W: (B, C) float32."""
  return jnp.mean(feature_map.astype(jnp.float32), axis=(1, 2))


def num_negatives(nce_k: int, num_train: int) -> int:
  """K: `nce_k`, at most the num_train - 1 other examples (at least 1)."""
  return max(1, min(nce_k, num_train - 1))


def sample_negatives(key, index, num_train: int, k: int):
  """(B, k) int32 indices drawn uniformly, with replacement, from the num_train examples
  other than each row's own `index` (B,)."""
  r = jax.random.randint(key, (index.shape[0], k), 0, num_train - 1)
  return r + (r >= index[:, None]).astype(r.dtype)


def nce_loss(v, bank, index, negatives, z, tau: float):
  """The NCE loss of anchors `v` (B, D) against `bank` (N, D) (see the module docstring).

  `index` (B,) are the positives' rows, `negatives` (B, K) the negatives' rows; `z` the
  normalisation constant, or < 0 for none yet: then it is set from this batch, mean of
  exp(w . v / tau) over its B (K + 1) pairs times N (a constant to the gradient). Returns
  (loss, the Z used). The bank is not differentiated.
  """
  n, k = bank.shape[0], negatives.shape[1]
  rows = jnp.concatenate([index[:, None], negatives], axis=1)          # (B, K + 1).
  w = jax.lax.stop_gradient(bank)[rows]                                # (B, K + 1, D).
  e = jnp.exp(jnp.einsum('bkd,bd->bk', w, v) / tau)
  z = jnp.where(z < 0, jax.lax.stop_gradient(jnp.mean(e)) * n, z)
  p = e / z
  noise = k / n                                                        # K P_n, P_n = 1 / N.
  log_d1 = jnp.log(p[:, 0] / (p[:, 0] + noise + EPS))
  log_d0 = jnp.log(noise / (p[:, 1:] + noise + EPS))
  return -(jnp.sum(log_d1) + jnp.sum(log_d0)) / v.shape[0], z


def update_bank(bank, index, v, momentum: float):
  """`bank` (N, D) with rows `index` (B,) set to momentum x row + (1 - momentum) x `v`
  (B, D), renormalised to unit length (no gradient flows into it)."""
  rows = bank[index] * momentum + jax.lax.stop_gradient(v) * (1 - momentum)
  return bank.at[index].set(normalize(rows))


def crd_loss(view):
  """CE + crd.beta (L_student + L_teacher) (module docstring) on the last block's maps of
  the student (training mode) and of the anchor; replaces the banks and Z through
  `view.set_buffers`. Raises ValueError when the batches carry no 'index'."""
  if view.index is None:
    raise ValueError("crd reads each example's index: its batches must carry 'index'")
  cfg, b = view.cfg.crd, view.buffers
  embed = Embed(cfg.feat_dim)
  v_s = embed.apply({'params': view.params['embed_s']}, pooled(view.s_feats[-1]))
  v_t = embed.apply({'params': view.params['embed_t']},
                    jax.lax.stop_gradient(pooled(view.t_feats[-1])))
  n = b['memory_s'].shape[0]
  key = jax.random.fold_in(jax.random.wrap_key_data(b['key']), view.step)
  negatives = sample_negatives(key, view.index, n, num_negatives(cfg.nce_k, n))
  # The student's embedding against the teacher's bank, and the teacher's against the student's.
  l_s, z_s = nce_loss(v_s, b['memory_t'], view.index, negatives, b['z'][0], cfg.nce_t)
  l_t, z_t = nce_loss(v_t, b['memory_s'], view.index, negatives, b['z'][1], cfg.nce_t)
  view.set_buffers({'memory_s': update_bank(b['memory_s'], view.index, v_s, cfg.nce_m),
                    'memory_t': update_bank(b['memory_t'], view.index, v_t, cfg.nce_m),
                    'z': jnp.stack([z_s, z_t]), 'key': b['key']})
  return losses.cross_entropy(view.s_logits, view.labels) + cfg.beta * (l_s + l_t)


class Contrast(MethodState):
  """CRD's state (`crd`): the two embedding heads (params `embed_s`, `embed_t`) and the
  buffers `memory_s`, `memory_t` (N, feat_dim), `z` (2,) (Z of the student's and the
  teacher's term, -1 until the first batch sets them) and `key` (the negatives' key)."""
  state = 'crd'
  record_key = 'embed_params'

  def init_state(self, ctx) -> OwnedState:
    """Fresh heads and banks for the phase (seeded by `ctx.seed`); the heads' SGD follows
    the student's schedule (its global one, or the phase's warmup + cosine)."""
    cfg, n = ctx.cfg, ctx.num_train
    s_dim, t_dim = ctx.student.block_channels[-1], tuple(ctx.t_model.block_channels)[-1:]
    if not t_dim:
      raise ValueError('crd needs a teacher with block features (its penultimate layer)')
    k_s, k_t, k_ms, k_mt, k_neg = jax.random.split(jax.random.key(ctx.seed + 5), 5)
    embed = Embed(cfg.crd.feat_dim)
    init = ctx.cache.setdefault('crd_init', jax.jit(embed.init))
    params = {'embed_s': init(k_s, jnp.zeros((1, s_dim)))['params'],
              'embed_t': init(k_t, jnp.zeros((1, t_dim[0])))['params']}
    bound = 1 / (cfg.crd.feat_dim / 3) ** 0.5
    bank = lambda key: jax.random.uniform(key, (n, cfg.crd.feat_dim), jnp.float32, -bound, bound)
    buffers = {'memory_s': bank(k_ms), 'memory_t': bank(k_mt),
               'z': -jnp.ones((2,), jnp.float32), 'key': jax.random.key_data(k_neg)}
    lr_fn = ctx.student_lr_fn()
    tx = ctx.tx(('crd',) + ctx.g_key[1:], lambda: optim.sgd(
        lr_fn, cfg.student.momentum, cfg.student.weight_decay))
    state = OwnedState.create(apply_fn=None, params=params, tx=tx, buffers=buffers)
    if ctx.offset:
      state = state.replace(opt_state=ctx.start_at(state.opt_state, ctx.offset))
    return state


CONTRAST = Contrast()
PHASE = whole_student('crd', crd_loss, ANCHOR, method_state=CONTRAST)
register_group('crd', defaults, check)
register_method('crd', lambda cfg, k: [PHASE], all_anchors=False, needs_features=True,
                needs_index=True)
