"""MS-MGANs v3's snapshot-ensemble target (`msmgan.target=ensemble`, methods/msmgan/head.py):
the logits it hands the head's loss soften to the anchors' averaged softened outputs, it
trains through the head phase without changing, and the config refuses what it replaces."""
import math
import types

import jax
import numpy as np
import pytest

from msmgan_jax import config as config_lib
from msmgan_jax.core import models, optim
from msmgan_jax.methods.msmgan import head
from support import changed, make_distiller, run_phase_steps, tiny_cfg


def _soft(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def test_ensemble_logits_soften_to_the_mean_of_the_members_softened_outputs():
  logits = np.random.default_rng(0).normal(0, 5, (3, 4, 6))
  for tau in (1.0, 4.0):
    got = np.asarray(head.ensemble_logits(jax.numpy.asarray(logits, jax.numpy.float32), tau),
                     np.float64)
    want = np.mean([_soft(z / tau) for z in logits], axis=0)
    np.testing.assert_allclose(_soft(got / tau), want, atol=1e-6)
  np.testing.assert_allclose(np.asarray(head.ensemble_logits(jax.numpy.asarray(logits[:1]), 2.0)),
                             logits[0] - 2.0 * np.log(np.exp(logits[0] / 2.0).sum(-1,
                                                                                keepdims=True)),
                             atol=1e-4)  # one member: its own logits, shifted per row.


@pytest.mark.slow  # seconds: compiles a model.
def test_the_ensemble_logits_soften_to_the_mean_of_the_anchors_softened_outputs():
  tau, model = 3.0, models.create_model('cnn', 5)
  anchors = [types.SimpleNamespace(variables=optim.init_variables(
      model, jax.random.key(m), (8, 8, 1))) for m in range(3)]
  state = head.ENSEMBLE.init_state(types.SimpleNamespace(anchors=anchors,
                                                         tx=lambda key, make: make()))
  steps = types.SimpleNamespace(cfg=types.SimpleNamespace(msmgan=types.SimpleNamespace(tau=tau)),
                                teacher=model)
  x = jax.random.normal(jax.random.key(9), (4, 8, 8, 1))
  t_logits, t_feats, _ = head.ENSEMBLE.forward(steps, state, anchors[1].variables, x)
  each = [np.asarray(model.apply(a.variables, x, train=False)[0], np.float64) for a in anchors]
  expected = np.mean([_soft(z / tau) for z in each], axis=0)
  np.testing.assert_allclose(_soft(np.asarray(t_logits, np.float64) / tau), expected, atol=1e-6)
  assert not np.allclose(expected, _soft(each[2] / tau), atol=1e-3)  # not one anchor's.
  _, feats_1 = model.apply(anchors[1].variables, x, train=False)
  for a, b in zip(t_feats, feats_1):  # the stage's anchor's features.
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow  # seconds: trains a phase (compiles its steps).
def test_the_head_phase_learns_from_every_anchor_and_leaves_them_as_they_are(tmp_path):
  cfg = tiny_cfg(method='msmgan', **{'msmgan.target': 'ensemble', 'mutual.enabled': False})
  d = make_distiller(cfg, tmp_path, num_anchors=2)
  phase = d.phases[0][-1]
  assert phase.name == 'head' and phase.partner is head.ENSEMBLE and set(phase.states) == {'ens'}
  before, after, metrics = run_phase_steps(d, phase, n=2)
  stacked = jax.tree.map(lambda *a: np.stack([np.asarray(x) for x in a]),
                         *[a.variables for a in d.anchors])
  np.testing.assert_equal(before['ens'].params, stacked['params'])
  np.testing.assert_equal(after['ens'].params, stacked['params'])
  np.testing.assert_equal(after['ens'].batch_stats, stacked['batch_stats'])
  assert any(changed(before['g'].params, after['g'].params).values())  # the student learned.
  assert math.isfinite(float(metrics['loss']))


@pytest.mark.slow  # seconds: trains a phase (compiles its steps).
def test_several_seeds_hold_one_ensemble_each(tmp_path):
  """Seeds' states are stacked: their ensembles must share one optimizer object."""
  cfg = tiny_cfg(method='msmgan', seeds=2, **{'msmgan.target': 'ensemble',
                                              'mutual.enabled': False})
  d = make_distiller(cfg, tmp_path, num_anchors=3)
  states = d.build_states(0, len(d.phases[0]) - 1, d.init_carry())
  for leaf, anchor_leaf in zip(jax.tree.leaves(states['ens'].params),
                               jax.tree.leaves(d.anchors[0].variables['params'])):
    assert leaf.shape == (2, 3) + anchor_leaf.shape  # (seeds, anchors, ...).


@pytest.mark.parametrize('fields, message', [
    ({'msmgan.target': 'ensemble'}, 'set mutual.enabled=False'),
    ({'msmgan.target': 'ensemble', 'mutual.enabled': False, 'msmgan.ctkd': True},
     'use one of them'),
    ({'msmgan.target': 'snapshots'}, "is not one of ('anchor', 'ensemble')"),
])
def test_what_the_ensemble_cannot_go_with_is_refused(fields, message):
  with pytest.raises(config_lib.ConfigError, match=r'msmgan\.target.*' + message.replace(
      '(', r'\(').replace(')', r'\)')):
    tiny_cfg(method='msmgan', **fields)
