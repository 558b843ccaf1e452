"""PyTorch references of the benchmark's steps (the `[bench]` extra): the same CIFAR ResNets
as `models.ResNet` (parameter counts are checked equal), loss and optimizer, on the CPU.

Importing this module without torch raises ImportError; the benchmark then leaves the
reference columns empty.
"""
import time

import torch
from torch import nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
  """ResNet v1 basic block; 1x1 projection + BN shortcut when the shape changes."""

  def __init__(self, cin, cout, stride):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(cout, momentum=0.1, eps=1e-5)
    self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(cout, momentum=0.1, eps=1e-5)
    self.short = None
    if stride != 1 or cin != cout:
      self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                 nn.BatchNorm2d(cout, momentum=0.1, eps=1e-5))

  def forward(self, x):
    y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
    return F.relu((x if self.short is None else self.short(x)) + y)


class ResNet(nn.Module):
  """CIFAR ResNet-(6n+2), widths (16, 16, 32, 64), like `models.ResNet`."""

  def __init__(self, depth, channels, classes, widths=(16, 16, 32, 64)):
    super().__init__()
    n = (depth - 2) // 6
    self.stem = nn.Sequential(nn.Conv2d(channels, widths[0], 3, 1, 1, bias=False),
                              nn.BatchNorm2d(widths[0], momentum=0.1, eps=1e-5), nn.ReLU())
    layers, cin = [], widths[0]
    for k, w in enumerate(widths[1:]):
      for i in range(n):
        layers.append(BasicBlock(cin, w, 2 if k > 0 and i == 0 else 1))
        cin = w
    self.blocks = nn.Sequential(*layers)
    self.fc = nn.Linear(cin, classes)

  def forward(self, x):
    return self.fc(self.blocks(self.stem(x)).mean(dim=(2, 3)))


def _sgd(model):
  """Nesterov SGD, lr 0.1, momentum 0.9, L2 5e-4 on conv and dense weights only (as ours)."""
  decay = [p for n, p in model.named_parameters() if p.dim() > 1]
  rest = [p for n, p in model.named_parameters() if p.dim() <= 1]
  return torch.optim.SGD([{'params': decay, 'weight_decay': 5e-4},
                          {'params': rest, 'weight_decay': 0.0}], lr=0.1, momentum=0.9,
                         nesterov=True)


def num_params(model) -> int:
  return sum(p.numel() for p in model.parameters())


def make(name: str, batch: int, shape: tuple, classes: int, threads: int,
         device: str = 'cpu'):
  """`run(n) -> images/s` of `n` train steps of case `name` (ce_resnet8, ce_resnet20,
  kd_resnet20_resnet8) on `device` ('cpu' or 'cuda'), or None for a case without a
  reference."""
  torch.set_num_threads(threads)
  torch.manual_seed(0)
  if device == 'cuda':  # cuDNN picks its fastest algorithms, as XLA autotunes ours.
    torch.backends.cudnn.benchmark = True
  h, w, c = shape
  x = torch.randn(batch, c, h, w, device=device)
  y = torch.randint(0, classes, (batch,), device=device)
  if name.startswith('ce_'):
    net = ResNet(int(name.split('resnet')[1]), c, classes).to(device)
    opt = _sgd(net)

    def step():
      opt.zero_grad(set_to_none=True)
      F.cross_entropy(net(x), y).backward()
      opt.step()
  elif name == 'kd_resnet20_resnet8':
    net, teacher = ResNet(8, c, classes).to(device), ResNet(20, c, classes).to(device).eval()
    opt, tau, beta = _sgd(net), 4.0, 0.9

    def step():
      opt.zero_grad(set_to_none=True)
      with torch.no_grad():
        t = teacher(x)
      s = net(x)
      kd = F.kl_div(F.log_softmax(s / tau, -1), F.log_softmax(t / tau, -1), log_target=True,
                    reduction='batchmean') * tau ** 2
      ((1 - beta) * F.cross_entropy(s, y) + beta * kd).backward()
      opt.step()
  else:
    return None
  net.train()

  def run(n):
    t0 = time.perf_counter()
    for _ in range(n):
      step()
    if device != 'cpu':  # CUDA runs asynchronously: wait for the last step.
      torch.cuda.synchronize()
    return n * batch / (time.perf_counter() - t0)
  run.num_params = num_params(net)
  return run
