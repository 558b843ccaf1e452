"""The benchmark's references are the same networks (parameter counts), and its table says
what it measured. Speed itself is measured by `python -m msmgan_jax.benchmark`, not here."""
import pytest

from msmgan_jax import benchmark, models, optim


@pytest.mark.parametrize('depth', [8, 20])
def test_torch_reference_is_the_same_resnet(depth):
  ref = pytest.importorskip('msmgan_jax.torch_reference')
  import jax  # pylint: disable=g-import-not-at-top
  run = ref.make(f'ce_resnet{depth}', 4, (28, 28, 1), 10, 1)
  v = optim.init_variables(models.create_model(f'resnet{depth}', 10), jax.random.key(0),
                           (28, 28, 1))
  assert run.num_params == optim.count_params(v['params'])
  assert run(1) > 0


def test_markdown_table_reports_every_case():
  result = {'machine': 'm', 'jax': 'j', 'device': 'cpu', 'torch': None, 'batch': 128,
            'image_shape': [28, 28, 1], 'repeats': 5, 'steps_per_sample': 20,
            'peak_rss_mb': 1.0, 'rows': [
                {'case': 'ce_resnet8', 'jax_img_s': 800.0, 'ref_img_s': 1600.0, 'ratio': 0.5,
                 'compile_s': 2.0},
                {'case': 'msmgan_block_1', 'jax_img_s': 150.0, 'ref_img_s': None, 'ratio': None,
                 'compile_s': 5.0, 'time_vs_kd': 3.6, 'gflops': 42.8, 'flops_vs_kd': 3.0}]}
  table = benchmark.markdown(result)
  assert '| ce_resnet8 | 800.0 | 1600.0 | 0.5 | 2.0 | - | - | - |' in table
  assert '| msmgan_block_1 | 150.0 | - | - | 5.0 | 3.6 | 42.8 | 3.0 |' in table
