"""Checks a teacher before it teaches: what it outputs and how it scores on the data.

A teacher read the wrong way teaches nonsense without any error: a softmax output read as
logits gives a near-uniform KD target at tau 4; logits read as probabilities give one-hot
targets; images in the wrong pixel scale give one class for every image. `findings` looks
at the outputs on a batch of test images and the accuracy on the test split and names
what looks wrong, with the config field that fixes it.

Thresholds (module constants): rows are probabilities when every output is >= -1e-6 and
every row sums to 1 within `ROW_SUM_TOL`, or within `EPS_ROWS` units of the outputs' float
precision where that is coarser (a bfloat16 softmax: its rows sum to 1 only within about
0.005); outputs read as logits are scores of a sigmoid when every one of them lies in
[0, 1]; an accuracy is near chance below `chance +
MIN_LIFT x (1 - chance)`, chance being the share of the test split's most common class
(the best constant guess; 1/C when balanced); a prediction is constant when one class
takes at least `CONSTANT_SHARE` of the images while the labels are more varied; another
pixel scale (`teacher.inputs`) fits when, on the first `INPUTS_SAMPLE` test images, it
scores more than `INPUTS_MARGIN` (and two standard errors) above the configured one; the
classes are in another order when the data's classes, each sent to the class the teacher
predicts for most of its test images (more than half of them, at least `ORDER_MIN_IMAGES`),
close a cycle (class a mostly predicted as b, b as a, or longer): a teacher that merely
confuses two classes leaves one of them predicted as itself, a swapped order does not.
"""
from typing import Optional, Sequence

import numpy as np

ROW_SUM_TOL = 1e-3
EPS_ROWS = 4
MIN_LIFT = 0.1
CONSTANT_SHARE = 0.95
INPUTS_MARGIN = 0.05
INPUTS_SAMPLE = 2048
ORDER_MIN_IMAGES = 3


def output_findings(seen: dict, outputs: str) -> list:
  """What is wrong with a teacher's outputs read as `outputs` ('logits' | 'probabilities'),
  from `seen`: {'min', 'max' (over every output), 'sum_min', 'sum_max' (of the rows),
  'sum_dev' (the largest |row sum - 1|), 'count' (rows), optionally 'eps' (the machine
  epsilon of the outputs' dtype: 0.0078 for bfloat16)}, as the network returns them. A
  list of messages, empty when fine."""
  tol = max(ROW_SUM_TOL, EPS_ROWS * float(seen.get('eps', 0.0)))
  probs = seen['min'] >= -1e-6 and seen['sum_dev'] <= tol
  what = (f'outputs in [{seen["min"]:.3g}, {seen["max"]:.3g}], row sums '
          f'{seen["sum_min"]:.4g} to {seen["sum_max"]:.4g} over {int(seen["count"])} images')
  if outputs == 'logits' and probs:
    return [f'its outputs look like probabilities, not logits ({what}): a softmax read as '
            'logits gives a near-uniform KD target. Set teacher.outputs=probabilities (or '
            'give the model without its final softmax)']
  if outputs == 'logits' and seen['min'] >= -1e-6 and seen['max'] <= 1 + 1e-6:
    return [f'its outputs all lie in [0, 1] ({what}): scores of a final sigmoid, not logits; '
            'read as logits they give a near-uniform KD target. Give the model without its '
            'final sigmoid (its pre-activation outputs are the logits)']
  if outputs == 'probabilities' and not probs:
    return [f'its outputs are not probabilities ({what}): logits read as probabilities give '
            'one-hot KD targets. Set teacher.outputs=logits']
  return []


def chance_of(label_counts: Sequence[float]) -> float:
  """The accuracy of the best constant guess given the count of each class: its top share."""
  counts = np.asarray(label_counts, np.float64)
  return float(counts.max() / max(counts.sum(), 1))


def is_weak(accuracy: float, chance: float) -> bool:
  """Whether `accuracy` is under a tenth (`MIN_LIFT`) of the way from chance to 1."""
  return accuracy < chance + MIN_LIFT * (1 - chance)


def score_findings(accuracy: float, predicted: Sequence[float], labels: Sequence[float],
                   class_names: Sequence[str] = ()) -> list:
  """What is wrong with a teacher scoring `accuracy` on the test split, given how many of
  its images it predicted as each class (`predicted`, (C,)) and how many each class has
  (`labels`, (C,)): near chance, or one class for (almost) every image."""
  chance = chance_of(labels)
  out = []
  if is_weak(accuracy, chance):
    out.append(f'its test accuracy {accuracy:.4f} is near chance ({chance:.4f}, the share of '
               f'the most common class; at least {chance + MIN_LIFT * (1 - chance):.4f} '
               'expected)')
  counts = np.asarray(predicted, np.float64)
  top = int(counts.argmax())
  share = counts[top] / max(counts.sum(), 1)
  if share >= CONSTANT_SHARE and chance < CONSTANT_SHARE:
    name = f' ({class_names[top]})' if top < len(class_names) else ''
    out.append(f'it predicts class {top}{name} for {share:.0%} of {int(counts.sum())} test '
               'images')
  return out


def order_findings(confusion, class_names: Sequence[str] = ()) -> list:
  """What says the teacher's classes are in another order than the data's, from
  `confusion` ((C, C) counts of test images: row the data's label, column the teacher's
  prediction). A list of at most one message, empty when every cycle of "most images of
  class a are predicted as b" is a class predicted as itself (see the module docstring)."""
  conf = np.asarray(confusion, np.float64)
  rows = conf.sum(1)
  top = conf.argmax(1)
  share = conf[np.arange(len(conf)), top] / np.maximum(rows, 1)
  moved = {k: int(top[k]) for k in range(len(conf))
           if top[k] != k and rows[k] >= ORDER_MIN_IMAGES and share[k] > 0.5}
  cycles, visited = [], set()
  for start in sorted(moved):
    path, k = [], start
    while k in moved and k not in path and k not in visited:
      path.append(k)
      k = moved[k]
    if k in path:
      cycles.append(path[path.index(k):])
    visited.update(path)
  if not cycles:
    return []
  name = lambda k: f'{k} ({class_names[k]})' if k < len(class_names) else f'{k}'
  shown = '; '.join(', '.join(f'class {name(a)} as {name(moved[a])} ({share[a]:.0%})'
                              for a in cycle) for cycle in cycles[:3])
  more = f' and {len(cycles) - 3} more cycle(s)' if len(cycles) > 3 else ''
  order = ', '.join(name(k) for k in range(min(len(conf), 20))) + (
      ', ...' if len(conf) > 20 else '')
  return [f'its classes look to be in another order than the data\'s: it predicts most test '
          f'images of {shown}{more}. Its output i must be the data\'s class i (here, in '
          f'order: {order}; an image folder\'s classes sort by folder name): give a teacher '
          'trained with this class order, or one whose outputs are reordered to it']


def inputs_finding(current: str, scores: dict, count: int) -> Optional[str]:
  """A finding when another `teacher.inputs` scores clearly better on the same `count` test
  images (`scores`: {inputs: accuracy}): by more than `INPUTS_MARGIN` and two standard
  errors of a difference of two accuracies on them. None when the current one is as good."""
  best = max(scores, key=scores.get)
  margin = max(INPUTS_MARGIN, 2 * float(np.sqrt(0.5 / max(count, 1))))
  if best == current or scores[best] <= scores[current] + margin:
    return None
  listing = ', '.join(f'{k} {v:.4f}' for k, v in scores.items())
  return (f'it reads its pixels in another scale: on {count} test images teacher.inputs={best} '
          f'scores {scores[best]:.4f} against {scores[current]:.4f} for {current} ({listing}); '
          f'set teacher.inputs={best}')


def message(name: str, found: Sequence[str], allowed: bool = False) -> str:
  """The error (or, with `allowed`, warning) text for `found`."""
  text = f'{name} would teach nonsense: ' + '; '.join(found)
  if allowed:
    return text + ' (teacher.allow_weak=True: going on)'
  return (text + '. Fix the teacher or those fields; teacher.allow_weak=True goes on anyway '
          '(recorded in summary.json)')
