"""An independent check of our `ce` and `kd` numbers in PyTorch (the `[bench]` extra).

    python -m msmgan_jax.torch_check --config configs/compare_lowdata.py [--seeds 3]

Trains the comparison's student network with PyTorch's own convolutions, BatchNorm and
SGD (`torch_reference.ResNet`, parameter counts equal to ours) on the same training
slice, with the same recipe: batch size, Nesterov SGD with L2 on kernels, warmup + cosine
per step, random crop after zero padding + horizontal flip, the dataset's normalisation,
the epoch-exact example order, the same start (a student that starts from a teacher
anchor, `student.init`, starts from our very initial weights, converted), and the
comparison's chosen settings of `ce` and `kd` (from its compare.json; it refuses, exit 2, until their tuning has finished). `kd` distils from our
final teacher anchor, its weights converted to PyTorch; the conversion is checked by
comparing both networks' logits on test images (the largest difference is recorded).
Only the implementation differs, so the accuracies should agree within the seeds' spread.

Writes `<out>/torch_check.json` after every seed (a rerun keeps the seeds already there for
the same method and setting), which `python -m msmgan_jax.compare --report` puts in
the comparison table next to our numbers.
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np

from msmgan_jax.data import recipe


def flax_to_torch(variables: dict, net) -> None:
  """Copies a `models.ResNet`'s variables into a `torch_reference.ResNet` of equal shape."""
  import torch  # pylint: disable=g-import-not-at-top
  p, s = variables['params'], variables['batch_stats']
  t = lambda a: torch.from_numpy(np.asarray(a, np.float32).copy())

  def conv(module, kernel):  # HWIO -> OIHW.
    module.weight.data.copy_(t(kernel).permute(3, 2, 0, 1))

  def bn(module, params, stats):
    module.weight.data.copy_(t(params['scale']))
    module.bias.data.copy_(t(params['bias']))
    module.running_mean.copy_(t(stats['mean']))
    module.running_var.copy_(t(stats['var']))

  conv(net.stem[0], p['block1']['Conv_0']['kernel'])
  bn(net.stem[1], p['block1']['BatchNorm_0'], s['block1']['BatchNorm_0'])
  units = [(b, u) for b in sorted(k for k in p if k.startswith('block'))
           for u in sorted((k for k in p[b] if k.startswith('BasicBlock_')),
                           key=lambda k: int(k.split('_')[1]))]
  assert len(units) == len(net.blocks), (len(units), len(net.blocks))
  for (b, u), unit in zip(units, net.blocks):
    pu, su = p[b][u], s[b][u]
    conv(unit.conv1, pu['Conv_0']['kernel'])
    bn(unit.bn1, pu['BatchNorm_0'], su['BatchNorm_0'])
    conv(unit.conv2, pu['Conv_1']['kernel'])
    bn(unit.bn2, pu['BatchNorm_1'], su['BatchNorm_1'])
    if unit.short is not None:
      conv(unit.short[0], pu['Conv_2']['kernel'])
      bn(unit.short[1], pu['BatchNorm_2'], su['BatchNorm_2'])
  net.fc.weight.data.copy_(t(p['head']['Dense_0']['kernel']).T)
  net.fc.bias.data.copy_(t(p['head']['Dense_0']['bias']))


def lr_at(step: int, peak: float, total: int, warmup: int) -> float:
  """`optim.lr_schedule`: linear warmup from 0, then cosine to 0 at `total`."""
  warmup = min(warmup, total - 1)
  if warmup <= 0:
    return peak * 0.5 * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))
  if step < warmup:
    return peak * step / warmup
  return peak * 0.5 * (1 + math.cos(math.pi * min(step - warmup, total - warmup) / (total - warmup)))


def schedule(cfg, num_train: int) -> tuple:
  """(total steps, warmup steps, peak learning rate) of a one-phase student (`ce`, `kd`)
  on `num_train` training images, as our trainer counts them: `student.epochs` after the
  `student.min_steps` floor (`registry.student_epochs`), `student.warmup_epochs` of whole
  batches, `student.lr` scaled by batch_size / 128."""
  from msmgan_jax.methods import registry  # pylint: disable=g-import-not-at-top
  bs = cfg.batch_size
  total = max(1, round(registry.student_epochs(cfg, num_train) * num_train / bs))
  warmup = int(cfg.student.warmup_epochs * max(1, num_train // bs))
  return total, warmup, cfg.student.lr * bs / 128


class Batches:
  """The epoch-exact stream of augmented batches (crop after padding + flip), as NCHW."""

  def __init__(self, images, labels, mean, std, batch, pad, flip, seed):
    self.x = recipe.to_unit(images)
    self.y, self.mean, self.std = labels, mean, std
    self.batch, self.pad, self.flip = batch, pad, flip
    self.rng = np.random.default_rng(seed)
    self.stream = np.zeros(0, np.int64)

  def __next__(self):
    while len(self.stream) < self.batch:
      self.stream = np.concatenate([self.stream, self.rng.permutation(len(self.y))])
    idx, self.stream = self.stream[:self.batch], self.stream[self.batch:]
    x = self.x[idx]
    n = x.shape[0]
    if self.pad:
      p = self.pad
      ys, xs = self.rng.integers(0, 2 * p + 1, n), self.rng.integers(0, 2 * p + 1, n)
      x = recipe.pad_crop(x, np.stack([ys, xs], axis=1), p)
    if self.flip:
      x = recipe.flip(x, self.rng.random(n) < 0.5)
    x = recipe.normalise(x, self.mean, self.std)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)), self.y[idx]


def jax_start(cfg, seed: int, anchor_variables, image_shape, num_classes: int) -> dict:
  """The variables our trainer starts `cfg`'s student of `seed` from with `student.init`
  first_anchor or last_anchor: its random initialisation (`StateBuilder.init_carry`'s key)
  with every array the anchor has by name selected from `anchor_variables`
  (`models.select_weights`); {'params', 'batch_stats'} on the host."""
  import jax  # pylint: disable=g-import-not-at-top
  from msmgan_jax.core import models, optim  # pylint: disable=g-import-not-at-top
  student = models.create_model(cfg.student.model, num_classes)
  s_rng, _ = jax.random.split(jax.random.key(seed + 1))
  v = optim.init_variables(student, s_rng, tuple(image_shape))
  v, _, _ = models.select_weights(v, anchor_variables)
  return jax.device_get({'params': v['params'], 'batch_stats': v['batch_stats']})


def start_anchor(cfg, anchors: list):
  """The teacher anchor (a path from the teacher's summary, weakest first) `cfg`'s student
  starts from: `student.init_checkpoint`, else the first or last anchor; None for a random
  start."""
  if cfg.student.init_checkpoint:
    return cfg.student.init_checkpoint
  if cfg.student.init == 'random':
    return None
  return anchors[0] if cfg.student.init == 'first_anchor' else anchors[-1]


def train_one(method, arrays, cfg, teacher, seed, threads, start=None):
  """One student of `method` ('ce' or 'kd'); returns (test accuracy, seconds). `start`: the
  variables our student starts from (`jax_start`), copied into the PyTorch network (a
  random PyTorch initialisation without)."""
  import torch  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top
  from msmgan_jax.lab import torch_reference as ref  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(threads)
  torch.manual_seed(seed)
  depth = int(cfg.student.model.replace('resnet', ''))
  h, w, c = arrays['train_images'].shape[1:]
  net = ref.ResNet(depth, c, int(arrays['num_classes']))
  if start is not None:
    flax_to_torch(start, net)
  decay = [p for p in net.parameters() if p.dim() > 1]
  rest = [p for p in net.parameters() if p.dim() <= 1]
  opt = torch.optim.SGD([{'params': decay, 'weight_decay': cfg.student.weight_decay},
                         {'params': rest, 'weight_decay': 0.0}], lr=0.0,
                        momentum=cfg.student.momentum, nesterov=True)
  num_train, bs = len(arrays['train_labels']), cfg.batch_size
  total, warmup, peak = schedule(cfg, num_train)
  batches = Batches(arrays['train_images'], arrays['train_labels'], arrays['mean'],
                    arrays['std'], bs, cfg.dataset.crop_padding, cfg.dataset.flip, seed)
  tau, beta = cfg.kd.tau, cfg.kd.beta
  t0 = time.time()
  net.train()
  for step in range(total):
    x, y = next(batches)
    x, y = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    for g in opt.param_groups:
      g['lr'] = lr_at(step, peak, total, warmup)
    s = net(x)
    loss = F.cross_entropy(s, y)
    if method == 'kd':
      with torch.no_grad():
        t = teacher(x)
      kd = F.kl_div(F.log_softmax(s / tau, -1), F.log_softmax(t / tau, -1), log_target=True,
                    reduction='batchmean') * tau ** 2
      loss = (1 - beta) * loss + beta * kd
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
  wall = time.time() - t0
  return evaluate(net, arrays), wall


def evaluate(net, arrays, batch=1000) -> float:
  import torch  # pylint: disable=g-import-not-at-top
  net.eval()
  x = recipe.normalise(recipe.to_unit(arrays['test_images']), arrays['mean'], arrays['std'])
  correct = 0
  with torch.no_grad():
    for i in range(0, len(x), batch):
      logits = net(torch.from_numpy(np.ascontiguousarray(x[i:i + batch].transpose(0, 3, 1, 2))))
      correct += int((logits.argmax(-1).numpy() == arrays['test_labels'][i:i + batch]).sum())
  net.train()
  return correct / len(x)


def carried_over(earlier: dict, anchor_path: str, methods: list) -> tuple:
  """What a new call keeps of an earlier `torch_check.json` (`earlier`, {} for none).

  Returns (kept, before): `kept`, the rows of every method this call does not check again
  (a call with `--methods kd` leaves ce's row as it was); `before`, {(method, setting):
  row} of the methods it checks (with the start, `init`: a row from another start
  is not carried), whose finished seeds a rerun takes instead of training
  them again (a check stopped part-way resumes). Rows measured against another teacher
  anchor than `anchor_path` are dropped from both: they no longer check this comparison.
  Every carried row's `std` is the sample std of its accuracies, as compare shows it (files
  written before torch_check wrote the sample std held the population std).
  """
  from msmgan_jax.lab import compare  # pylint: disable=g-import-not-at-top
  rows = earlier.get('rows', []) if earlier.get('teacher_anchor') == anchor_path else []
  rows = [{**r, 'std': compare.sample_std(r['accuracies'])} for r in rows]
  kept = [r for r in rows if r['method'] not in methods]
  before = {(r['method'], r['setting'], r.get('init', 'random')): r for r in rows
            if r['method'] in methods}
  return kept, before


def ordered(rows: list, methods) -> list:
  """`rows` in the comparison's method order (`methods`), others after them."""
  rank = {m: i for i, m in enumerate(methods)}
  return sorted(rows, key=lambda r: rank.get(r['method'], len(rank)))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m msmgan_jax.torch_check', description=__doc__.split('\n\n')[0])
  parser.add_argument('--config', required=True, help='a comparison config, e.g. configs/compare_lowdata.py')
  parser.add_argument('--seeds', type=int, default=3)
  parser.add_argument('--methods', default='ce,kd')
  parser.add_argument('--threads', type=int, default=os.cpu_count())
  args = parser.parse_args(argv)
  from msmgan_jax import cli  # pylint: disable=g-import-not-at-top
  try:  # the comparison config, read as the command line reads every config.
    cc = cli.parse(['torch_check', '--config', args.config])[0]
  except cli.BadInput as e:
    return cli.error(str(e), cli.EXIT_BAD_INPUT)
  try:
    import torch  # pylint: disable=g-import-not-at-top
    from msmgan_jax.lab import torch_reference as ref  # pylint: disable=g-import-not-at-top
  except ImportError:
    sys.stderr.write("error: PyTorch is missing; pip install -e '.[bench]'\n")
    return 2
  cli.quiet()
  import jax  # pylint: disable=g-import-not-at-top
  from msmgan_jax.lab import compare  # pylint: disable=g-import-not-at-top
  from msmgan_jax.data import datasets as data  # pylint: disable=g-import-not-at-top
  from msmgan_jax.core import models  # pylint: disable=g-import-not-at-top
  from msmgan_jax.training import teacher as teacher_lib  # pylint: disable=g-import-not-at-top
  from msmgan_jax.files import io  # pylint: disable=g-import-not-at-top
  from msmgan_jax.core import sharding  # pylint: disable=g-import-not-at-top
  chosen_file = os.path.join(cc.out, 'compare.json')
  chosen = json.load(open(chosen_file))['chosen'] if os.path.exists(chosen_file) else {}
  unchosen = [m for m in args.methods.split(',') if chosen.get(m) is None]
  if unchosen:  # the check must train what the comparison chose, never a default by accident.
    return cli.error(f'{chosen_file} holds no setting chosen for {", ".join(unchosen)}: run '
                     f'python -m msmgan_jax.compare --config {args.config} until their tuning '
                     'has finished, then this check', cli.EXIT_BAD_INPUT)
  t_file = os.path.join(cc.teacher_workdir, 'summary.json')
  # A fresh checkout: the comparison's teacher comes from its committed record, as compare's.
  why = compare.restore_teacher(cc) if not os.path.exists(t_file) else None
  if not os.path.exists(t_file):
    return cli.error(f'{t_file} not found: the check distils from the comparison\'s '
                     'teacher; run the comparison first (or copy its teacher run there)'
                     + (f'; {why}' if why else ''), cli.EXIT_BAD_INPUT)
  t_sum = json.load(open(t_file))
  anchor_path = t_sum['teacher']['anchors'][-1]['path']
  arrays = data.to_arrays(cc.base.dataset)
  for k in ('mean', 'std'):
    arrays[k] = np.asarray(arrays[k], np.float32)
  info_shape = arrays['train_images'].shape[1:]
  t_model = models.create_model(cc.teacher.teacher.model, int(arrays['num_classes']))
  target = sharding.abstract_variables(t_model, info_shape, sharding.mesh())
  anchor = teacher_lib.load_anchor(anchor_path, target, cc.teacher.teacher.model)
  variables = jax.device_get(anchor.variables)
  teacher = ref.ResNet(int(cc.teacher.teacher.model.replace('resnet', '')), info_shape[-1],
                       int(arrays['num_classes'])).eval()
  flax_to_torch(variables, teacher)
  x = recipe.normalise(recipe.to_unit(arrays['test_images'][:256]), arrays['mean'], arrays['std'])
  jax_logits = np.asarray(t_model.apply(variables, x, train=False)[0])
  with torch.no_grad():
    torch_logits = teacher(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))).numpy()
  conversion = float(np.max(np.abs(jax_logits - torch_logits)))
  print(f'teacher converted to PyTorch: logits differ by at most {conversion:.2e} on 256 test images')
  out = os.path.join(cc.out, 'torch_check.json')
  earlier = json.load(open(out)) if os.path.exists(out) else {}
  kept, before = carried_over(earlier, anchor_path, args.methods.split(','))
  if earlier.get('rows') and earlier.get('teacher_anchor') != anchor_path:
    print(f'{out}: its rows were measured against {earlier.get("teacher_anchor")}, not this '
          f'comparison\'s anchor {anchor_path}; they are replaced (git keeps the old file)')
  rows = []
  os.makedirs(cc.out, exist_ok=True)
  for method in args.methods.split(','):
    setting = chosen[method]
    cfg = compare.apply(compare.copy_config(cc.base), compare.parse_setting(
        (cc.get('method_defaults') or {}).get(method, '')))
    cfg = compare.apply(cfg, compare.parse_setting(setting))
    start_path = start_anchor(cfg, [a['path'] for a in t_sum['teacher']['anchors']])
    start_vars = None
    if start_path is not None:  # the student starts where ours does (weights selected).
      start_vars = jax.device_get(teacher_lib.load_anchor(
          start_path, target, cc.teacher.teacher.model).variables)
    init = cfg.student.init if start_path is None else (  # the anchor's place in its run.
        f'{cfg.student.init}:anchors/{os.path.basename(os.path.normpath(start_path))}')
    old = before.get((method, setting, init), {})
    # The same method and setting measured from another start (kd from random, say, beside
    # kd from the anchor) stays: it checks another row of the comparison.
    kept += [r for (m, st, i), r in before.items() if m == method and st == setting and i != init]
    row = {'method': method, 'setting': setting, 'init': init, 'seeds': [], 'accuracies': [],
           'wall_s': []}
    rows.append(row)
    for seed in range(cc.base.seed, cc.base.seed + args.seeds):
      if seed in old.get('seeds', []):
        j = old['seeds'].index(seed)
        acc, wall = old['accuracies'][j], old['wall_s'][j]
      else:
        start = None if start_vars is None else jax_start(
            cfg, seed, start_vars, info_shape, int(arrays['num_classes']))
        acc, wall = train_one(method, arrays, cfg, teacher, seed, args.threads, start)
      print(f'pytorch {method} seed {seed}: test accuracy {acc:.4f} ({wall:.0f}s)', flush=True)
      row['seeds'].append(seed)
      row['accuracies'].append(acc)
      row['wall_s'].append(wall)
      row.update(mean=float(np.mean(row['accuracies'])),  # std: sample std, as compare's.
                 std=compare.sample_std(row['accuracies']))
      io.write_json(out, {  # after every seed: a stopped check keeps what it measured.
          'torch': torch.__version__, 'threads': args.threads, 'teacher_anchor': anchor_path,
          'teacher_conversion_max_abs_logit_diff': conversion,
          'rows': ordered(kept + rows, cc.methods)})
  print(f'wrote {out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
