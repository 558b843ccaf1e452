"""The registry is the test list: every registered method, built-in or added, trains a
tiny student through the one trainer (a smoke run: finite losses, a test accuracy, a
summary), and each of its compiled steps is traced once however many stages reuse it."""
import math

import pytest

from msmgan_jax import config
from msmgan_jax.core import steps
from msmgan_jax.methods import registry

from support import make_distiller, tiny_cfg


@pytest.mark.slow
@pytest.mark.parametrize('method', sorted(registry.METHODS))
def test_every_registered_method_trains_and_compiles_each_step_once(method, tmp_path):
  fields = {'method': method, 'student.epochs': 1}
  if method == 'msmgan':
    # Equal stages: the mutual copy's cosine is a static part of its optimizer, so head
    # phases of different lengths (stage 1 also has block phases) compile apart.
    fields['stages.block_stages'] = -1
  cfg = tiny_cfg(**fields)
  steps.TRACES.clear()
  d = make_distiller(cfg, tmp_path)
  result = d.run()
  phases = [p for s in result['stages'] for p in s['phases']]
  assert [p['name'] for p in phases] == [p.name for stage in d.phases for p in stage]
  assert 0 <= result['test_accuracy'] <= 1 and math.isfinite(result['test_accuracy'])
  assert all(p['steps'] >= 1 for p in phases)
  # One trace per distinct phase signature, however many stages use it.
  signatures = {p.signature for stage in d.phases for p in stage}
  assert len(steps.TRACES) == len(signatures), dict(steps.TRACES)
  assert all(count == 1 for count in steps.TRACES.values()), dict(steps.TRACES)
  lines = [l for l in d.wd.file('metrics.jsonl') and open(d.wd.file('metrics.jsonl'))]
  assert lines, 'nothing logged'


def test_a_method_registered_later_is_in_the_schema_and_the_test_list(monkeypatch):
  """register_method / register_group extend the config schema and `validate` at once."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from msmgan_jax.core.phase import ANCHOR, Phase  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(registry, 'METHODS', dict(registry.METHODS))
  monkeypatch.setattr(registry, 'GROUPS', dict(registry.GROUPS))

  def defaults(c):
    c.mine = m = ml_collections.ConfigDict()
    m.weight = 0.5                  # mine: a weight.

  def check(cfg):
    registry.require(cfg.mine.weight <= 1, 'mine.weight', 'must be <= 1')

  registry.register_group('mine', defaults, check)
  registry.register_method('mine', lambda cfg, k: [Phase('mine', 1.0, loss=lambda v: 0.0,
                                                         partner=ANCHOR)])
  cfg = config.defaults()
  cfg.method, cfg.mine.weight = 'mine', 2.0
  with pytest.raises(config.ConfigError, match='mine.weight: must be <= 1'):
    config.validate(cfg)
  assert '`mine.weight`' in config.reference_markdown()
  with pytest.raises(ValueError, match='already registered'):
    registry.register_group('mine', defaults)
