"""CIFAR-style image classifiers split into convolution blocks.

Every model is a `Classifier`: K blocks (parameter collections `block1` ...
`blockK`) followed by a head (`head`: global average pool + dense). Calling it
returns `(logits, feats)` with one feature map per block. `start`/`stop` run
only blocks `start..stop-1` (0-based) on an input that is the image when
`start == 0` and the output of block `start` otherwise; the head runs only when
`stop == K`. Greedy block training and the teacher-as-discriminator both rely on
this: the block structure is data (`block_names`, `block_channels`,
`block_strides`), not special cases. (A method's own networks, say MS-MGANs'
discriminators, live with the method.)
"""
import functools
import math
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

ModuleDef = Callable[..., nn.Module]
# The convolution every network here uses: no bias (BatchNorm follows), He-normal (fan out).
conv = functools.partial(nn.Conv, use_bias=False,
                         kernel_init=nn.initializers.variance_scaling(2.0, 'fan_out', 'normal'))


class BasicBlock(nn.Module):
  """ResNet v1 basic block (two 3x3 convs), projection shortcut when shapes change."""
  filters: int
  strides: int
  norm: ModuleDef

  @nn.compact
  def __call__(self, x):
    y = nn.relu(self.norm()(conv(self.filters, (3, 3), self.strides, padding=1)(x)))
    y = self.norm()(conv(self.filters, (3, 3), padding=1)(y))
    if x.shape != y.shape:
      x = self.norm()(conv(self.filters, (1, 1), self.strides)(x))
    return nn.relu(x + y)


class WideBlock(nn.Module):
  """Pre-activation wide-ResNet block; 1x1 projection shortcut when shapes change."""
  filters: int
  strides: int
  norm: ModuleDef

  @nn.compact
  def __call__(self, x):
    o = nn.relu(self.norm()(x))
    shortcut = x
    if x.shape[-1] != self.filters or self.strides != 1:
      shortcut = conv(self.filters, (1, 1), self.strides)(o)
    y = conv(self.filters, (3, 3), self.strides, padding=1)(o)
    y = conv(self.filters, (3, 3), padding=1)(nn.relu(self.norm()(y)))
    return shortcut + y


class Stage(nn.Module):
  """One model block: an optional stem conv, then `depth` residual units."""
  unit: Any
  filters: int
  depth: int
  strides: int
  norm: ModuleDef
  stem: Optional[int] = None
  post_act: bool = False

  @nn.compact
  def __call__(self, x):
    if self.stem is not None:
      x = conv(self.stem, (3, 3), padding=1)(x)
      if self.unit is BasicBlock:
        x = nn.relu(self.norm()(x))
    for i in range(self.depth):
      x = self.unit(self.filters, self.strides if i == 0 else 1, self.norm)(x)
    if self.post_act:
      x = nn.relu(self.norm()(x))
    return x


class ConvBlock(nn.Module):
  """Plain conv-BN-ReLU block (one block of the small CNN)."""
  filters: int
  strides: int
  norm: ModuleDef

  @nn.compact
  def __call__(self, x):
    return nn.relu(self.norm()(conv(self.filters, (3, 3), self.strides, padding=1)(x)))


class Classifier(nn.Module):
  """K blocks then global-average-pool + dense. Subclasses define `make_block`."""
  num_classes: int
  dtype: Any = jnp.float32

  @property
  def block_channels(self) -> Sequence[int]:
    raise NotImplementedError

  @property
  def block_strides(self) -> Sequence[int]:
    """Downsampling factor of each block's output relative to the input image."""
    raise NotImplementedError

  @property
  def num_blocks(self) -> int:
    return len(self.block_channels)

  @property
  def block_names(self) -> Sequence[str]:
    return tuple(f'block{k + 1}' for k in range(self.num_blocks))

  def make_block(self, k: int, norm: ModuleDef) -> nn.Module:
    raise NotImplementedError

  @nn.compact
  def __call__(self, x, train: bool = False, start: int = 0, stop: Optional[int] = None,
               with_head: bool = True):
    stop = self.num_blocks if stop is None else stop
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                             epsilon=1e-5, dtype=self.dtype)
    x = x.astype(self.dtype)
    feats = []
    for k in range(start, stop):
      x = self.make_block(k, norm)(x)
      feats.append(x)
    if stop < self.num_blocks or not with_head:
      return None, feats
    logits = Head(self.num_classes, self.dtype, name='head')(x)
    return logits, feats


class Head(nn.Module):
  """Global average pooling followed by a dense layer (float32 logits)."""
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    return nn.Dense(self.features, dtype=self.dtype)(jnp.mean(x, axis=(1, 2))).astype(jnp.float32)


class ResNet(Classifier):
  """CIFAR ResNet-(6n+2); `widths` = (stem, block1, block2, block3) channels."""
  depth: int = 20
  widths: Sequence[int] = (16, 16, 32, 64)

  @property
  def block_channels(self):
    return tuple(self.widths[1:])

  @property
  def block_strides(self):
    return (1, 2, 4)

  def make_block(self, k, norm):
    n = (self.depth - 2) // 6
    return Stage(BasicBlock, self.widths[k + 1], n, 1 if k == 0 else 2, norm,
                 stem=self.widths[0] if k == 0 else None, name=self.block_names[k])


class WideResNet(Classifier):
  """WRN-depth-widen (pre-activation); the last block ends with BN + ReLU."""
  depth: int = 16
  widen: int = 1

  @property
  def block_channels(self):
    return (16 * self.widen, 32 * self.widen, 64 * self.widen)

  @property
  def block_strides(self):
    return (1, 2, 4)

  def make_block(self, k, norm):
    n = (self.depth - 4) // 6
    return Stage(WideBlock, self.block_channels[k], n, 1 if k == 0 else 2, norm,
                 stem=16 if k == 0 else None, post_act=k == self.num_blocks - 1,
                 name=self.block_names[k])


class PlainCNN(Classifier):
  """A small plain CNN: one conv-BN-ReLU per block, stride 2 from block 2 on."""
  widths: Sequence[int] = (32, 64, 128)

  @property
  def block_channels(self):
    return tuple(self.widths)

  @property
  def block_strides(self):
    return tuple(2 ** k for k in range(len(self.widths)))

  def make_block(self, k, norm):
    return ConvBlock(self.widths[k], 1 if k == 0 else 2, norm, name=self.block_names[k])


MODELS = {
    **{f'resnet{d}': functools.partial(ResNet, depth=d) for d in (8, 14, 20, 32, 44, 56, 110)},
    'resnet8x4': functools.partial(ResNet, depth=8, widths=(32, 64, 128, 256)),
    'resnet32x4': functools.partial(ResNet, depth=32, widths=(32, 64, 128, 256)),
    **{f'wrn_{d}_{w}': functools.partial(WideResNet, depth=d, widen=w)
       for d in (16, 40) for w in (1, 2)},
    'cnn': PlainCNN,
}


class Connector(nn.Module):
  """FitNets regressor C_k: 1x1 conv + BN from student to teacher channels."""
  features: int

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = conv(self.features, (1, 1))(x)
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)(x)


class Connectors(nn.Module):
  """One connector per block (`connector1` ... `connectorK`); `k` picks which to run."""
  features: Sequence[int]

  @nn.compact
  def __call__(self, x, k: int, train: bool = False):
    return Connector(self.features[k], name=f'connector{k + 1}')(x, train)

  def init_all(self, rng, student_feats):
    """Initialises every connector on feature maps shaped like the student's block outputs."""
    def all_(mdl, xs):
      return [mdl(x, k) for k, x in enumerate(xs)]
    return self.init(rng, student_feats, method=all_)


def select_weights(student: dict, teacher: dict) -> tuple:
  """Weight selection (Xu et al., "Initializing Models with Larger Ones", ICLR 2024): the
  student's variables with each array that the teacher has under the same path (by name,
  e.g. resnet8's `block2/BasicBlock_0/Conv_0/kernel` inside resnet20) replaced by the
  teacher's, sliced to the student's shape where the teacher's is larger in some axes (the
  leading elements of each axis, the same ones in every layer, so channel i still feeds
  channel i). Arrays the teacher lacks, or has with another rank or a smaller axis, keep
  their own (random) values.

  `student`, `teacher`: variable trees ({'params': ..., 'batch_stats': ...}) of the two
  models. Returns (the new student tree, its arrays new buffers, never the teacher's own;
  the number of student parameters and statistics taken from the teacher; the student's
  total).
  """
  flat_t = _by_path(teacher)
  taken = [0]

  def pick(path, s):
    t = flat_t.get(_path_key(path))
    if not _selectable(s, t):
      return s
    taken[0] += s.size
    # A copy: a whole-array slice can be the anchor's own buffer, and the student's state is
    # donated to every update step that also reads the anchor.
    return jnp.array(t[tuple(slice(0, n) for n in s.shape)], s.dtype, copy=True)

  out = jax.tree_util.tree_map_with_path(pick, student)
  total = sum(x.size for x in jax.tree_util.tree_leaves(student))
  return out, taken[0], total


def _path_key(path) -> tuple:
  return tuple(str(getattr(k, 'key', k)) for k in path)


def _by_path(tree) -> dict:
  return {_path_key(path): v for path, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _selectable(s, t) -> bool:
  """Whether weight selection takes student array `s` from teacher array `t` (either may be a
  `jax.ShapeDtypeStruct`): the same rank and no axis larger than the teacher's."""
  return t is not None and len(t.shape) == len(s.shape) and all(
      a <= b for a, b in zip(s.shape, t.shape))


def selectable_share(student: dict, teacher: dict) -> float:
  """The share of `student`'s scalars (parameters and statistics) that `select_weights` would
  take from `teacher`: both variable trees, of arrays or `jax.ShapeDtypeStruct`s (shapes are
  all it reads). 0.0 when they share no array by name and shape."""
  t = _by_path(teacher)
  s = _by_path(student)
  total = sum(math.prod(x.shape) for x in s.values())
  taken = sum(math.prod(x.shape) for k, x in s.items() if _selectable(x, t.get(k)))
  return taken / total if total else 0.0


def register_model(name: str, factory: Callable[..., Classifier]) -> None:
  """Adds a model: `factory(num_classes=..., dtype=...)` returns a `Classifier` (its blocks
  named by `block_names`, its `block_channels` and `block_strides` declared)."""
  if name in MODELS:
    raise ValueError(f'model {name!r} is already registered')
  model = factory(num_classes=10, dtype=jnp.float32)
  if not isinstance(model, Classifier):
    raise TypeError(f'{name!r} builds a {type(model).__name__}, not a models.Classifier')
  if len(model.block_strides) != model.num_blocks:
    raise ValueError(f'{name!r} declares {model.num_blocks} block channels but '
                     f'{len(model.block_strides)} block strides')
  MODELS[name] = factory


def create_model(name: str, num_classes: int, dtype: Any = jnp.float32) -> Classifier:
  """Builds the named model (see `MODELS`)."""
  if name not in MODELS:
    raise ValueError(f'unknown model {name!r}; choose one of {sorted(MODELS)}')
  return MODELS[name](num_classes=num_classes, dtype=dtype)
