"""Where a ResNet train step spends its time: its ops timed alone, JAX against PyTorch.

The benchmark's `--profile` rows. For each 3x3 convolution shape of resnet20 on 28x28
inputs (batch 128) it times, side by side and interleaved, the forward convolution, the
gradient with respect to the input and the one with respect to the kernel; and the
BatchNorm + ReLU forward and backward (training mode) at each width; and, for the lead
the performance issue named, the kernel gradient as one matmul over im2col patches
(`conv_dkernel_one_matmul`, not counted in the step). Multiplied by how
often resnet20 runs each, the rows add up to an estimate of the step, op by op, which
shows which op holds the JAX step back against PyTorch's.
"""
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

BATCH = 128
# (height = width, channels, stride-1 3x3 convs of that shape in resnet20, BatchNorms there);
# the stem, the two stride-2 convs and the 1x1 projections are left out.
SHAPES = ((28, 16, 6, 7), (14, 32, 5, 7), (7, 64, 5, 7))


def _timeit(fn, n):
  fn()
  t0 = time.perf_counter()
  for _ in range(n):
    fn()
  return (time.perf_counter() - t0) / n * 1e3


def conv3x3(x, w):
  """A stride-1, 'SAME' 3x3 convolution, NHWC x HWIO."""
  return jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)),
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def kernel_grad_one_matmul(x, dy):
  """The kernel gradient of `conv3x3` as one matmul: im2col patches of x (the contracted
  batch x pixel dimension leading) against dy. The lead the performance issue named."""
  _, h, w, c = x.shape
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  p = jnp.concatenate([xp[:, i:i + h, j:j + w, :] for i in range(3) for j in range(3)], -1)
  return (p.reshape(-1, 9 * c).T @ dy.reshape(-1, dy.shape[-1])).reshape(3, 3, c, dy.shape[-1])


def _jax_ops(h, c):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(BATCH, h, h, c)).astype(np.float32))
  w = jnp.asarray(rng.normal(size=(3, 3, c, c)).astype(np.float32) * 0.1)
  conv = conv3x3
  dy = conv(x, w)
  fwd = jax.jit(conv)
  dx = jax.jit(lambda x, w, dy: jax.vjp(lambda a: conv(a, w), x)[1](dy)[0])
  dw = jax.jit(lambda x, w, dy: jax.vjp(lambda b: conv(x, b), w)[1](dy)[0])
  dw_mm = jax.jit(kernel_grad_one_matmul)
  gamma, beta = jnp.ones(c), jnp.zeros(c)

  def bn_relu(x, g, b):
    m = x.mean((0, 1, 2))
    v = x.var((0, 1, 2))
    return jax.nn.relu((x - m) * jax.lax.rsqrt(v + 1e-5) * g + b)
  bn = jax.jit(lambda x, g, b, dy: jax.vjp(bn_relu, x, g, b)[1](dy))
  block = lambda f: (lambda: jax.block_until_ready(f()))
  return {'conv_fwd': block(lambda: fwd(x, w)), 'conv_dinput': block(lambda: dx(x, w, dy)),
          'conv_dkernel': block(lambda: dw(x, w, dy)),
          'conv_dkernel_one_matmul': block(lambda: dw_mm(x, dy)),
          'bn_relu_fwd_bwd': block(lambda: bn(x, gamma, beta, dy))}


def _torch_ops(h, c, threads):
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(threads)
  g = torch.Generator().manual_seed(0)
  x = torch.randn(BATCH, c, h, h, generator=g)
  w = torch.randn(c, c, 3, 3, generator=g) * 0.1
  dy = torch.nn.functional.conv2d(x, w, padding=1)
  bn = torch.nn.BatchNorm2d(c)
  xg = x.clone().requires_grad_(True)

  def bn_relu():
    xg.grad = None
    torch.relu(bn(xg)).backward(dy)
  gi = torch.nn.grad.conv2d_input
  gw = torch.nn.grad.conv2d_weight
  with torch.no_grad():
    ops = {'conv_fwd': lambda: torch.nn.functional.conv2d(x, w, padding=1),
           'conv_dinput': lambda: gi(x.shape, w, dy, padding=1),
           'conv_dkernel': lambda: gw(x, w.shape, dy, padding=1)}
  ops = {k: _no_grad(v) for k, v in ops.items()}
  ops['bn_relu_fwd_bwd'] = bn_relu
  return ops


def _no_grad(fn):
  def run():
    import torch  # pylint: disable=g-import-not-at-top
    with torch.no_grad():
      return fn()
  return run


def measure(threads: int, repeats: int = 5, n: int = 10) -> list:
  """One row per (op, shape): milliseconds in JAX and PyTorch, the ratio, the step share."""
  try:
    import torch  # pylint: disable=g-import-not-at-top,unused-import  # noqa: F401 (is it there?)
    have_torch = True
  except ImportError:
    have_torch = False
  rows = []
  for h, c, n_conv, n_bn in SHAPES:
    jax_ops = _jax_ops(h, c)
    ref_ops = _torch_ops(h, c, threads) if have_torch else {}
    for op, fn in jax_ops.items():
      js, rs = [], []
      for _ in range(repeats):
        js.append(_timeit(fn, n))
        if op in ref_ops:
          rs.append(_timeit(ref_ops[op], n))
      jm = statistics.median(js)
      rm = statistics.median(rs) if rs else None
      # The one-matmul kernel gradient is an alternative, not a part of the step.
      count = 0 if op.endswith('one_matmul') else n_bn if op.startswith('bn') else n_conv
      rows.append({'case': f'op {op} {h}x{h}x{c}', 'jax_ms': round(jm, 3),
                   'ref_ms': None if rm is None else round(rm, 3),
                   'ratio': None if rm is None else round(rm / jm, 3),
                   'per_step': count, 'jax_ms_per_step': round(jm * count, 1),
                   'ref_ms_per_step': None if rm is None else round(rm * count, 1)})
  return rows


def markdown(rows: list) -> str:
  """The op table, with the JAX and PyTorch totals per step."""
  fmt = lambda v: '-' if v is None else str(v)
  lines = ['| op (batch 128, NHWC) | JAX ms | PyTorch ms | ratio | per resnet20 step | '
           'JAX ms/step | PyTorch ms/step |', '|---|---|---|---|---|---|---|']
  for r in rows:
    lines.append(f'| {r["case"][3:]} | {r["jax_ms"]} | {fmt(r["ref_ms"])} | {fmt(r["ratio"])} | '
                 f'{r["per_step"]} | {r["jax_ms_per_step"]} | {fmt(r["ref_ms_per_step"])} |')
  step = [r for r in rows if r['per_step']]
  jt = sum(r['jax_ms_per_step'] for r in step)
  rt = None if any(r['ref_ms_per_step'] is None for r in step) else round(
      sum(r['ref_ms_per_step'] for r in step), 1)
  lines.append(f'| **sum** | | | {fmt(None if rt is None else round(rt / jt, 3))} | | '
               f'**{round(jt, 1)}** | **{fmt(rt)}** |')
  return '\n'.join(lines) + '\n\nratio: PyTorch time over JAX time (> 1: JAX faster).\n'
