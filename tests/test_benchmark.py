"""The benchmark's references are the same networks (parameter counts), and its table says
what it measured. Speed itself is measured by `python -m msmgan_jax.benchmark`, not here."""
import os
import shutil

import jax
import numpy as np
import pytest

from msmgan_jax.core import models
from msmgan_jax.core import optim
from msmgan_jax import benchmark as benchmark_command
from msmgan_jax.lab import benchmark


@pytest.mark.parametrize('depth', [8, 20])
def test_torch_reference_is_the_same_resnet(depth):
  pytest.importorskip('torch')  # the optional `bench` extra.
  from msmgan_jax.lab import torch_reference as ref  # pylint: disable=g-import-not-at-top
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
                 'compile_s': 5.0, 'time_vs_kd': 3.6, 'gflops': 42.8, 'flops_vs_kd': 3.0,
                 'tflop_s': 0.0502, 'of_peak': 0.0001}],
            'torch_device': 'cuda', 'peak_tflops': 494.7}
  table = benchmark.markdown(result)
  assert '| ce_resnet8 | 800.0 | 1600.0 | 0.5 | 2.0 | - | - | - | - | - |' in table
  assert '| msmgan_block_1 | 150.0 | - | - | 5.0 | 3.6 | 42.8 | 3.0 | 0.0502 | 0.0001 |' in table
  assert 'PyTorch runs on cuda.' in table and 'Peak taken as 494.7 TFLOP/s.' in table
  assert benchmark.torch_device() == 'cpu'  # the reference follows JAX: here, the CPU.


def test_one_matmul_kernel_gradient_equals_jax_grad():
  """The alternative the op profile times computes the same gradient as jax.vjp of the conv."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from msmgan_jax.lab import op_profile  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 5, 7, 3)).astype(np.float32)
  w = rng.normal(size=(3, 3, 3, 4)).astype(np.float32)
  dy = rng.normal(size=(2, 5, 7, 4)).astype(np.float32)
  want = jax.vjp(lambda k: op_profile.conv3x3(x, k), w)[1](dy)[0]
  np.testing.assert_allclose(op_profile.kernel_grad_one_matmul(x, dy), want, rtol=1e-4, atol=1e-4)


def test_op_table_sums_the_step_and_whole_runs_are_reported():
  from msmgan_jax.lab import op_profile  # pylint: disable=g-import-not-at-top
  ops = [{'case': 'op conv_fwd 28x28x16', 'jax_ms': 2.0, 'ref_ms': 1.0, 'ratio': 0.5,
          'per_step': 6, 'jax_ms_per_step': 12.0, 'ref_ms_per_step': 6.0},
         {'case': 'op conv_dkernel_one_matmul 28x28x16', 'jax_ms': 9.0, 'ref_ms': None,
          'ratio': None, 'per_step': 0, 'jax_ms_per_step': 0.0, 'ref_ms_per_step': None}]
  table = op_profile.markdown(ops)
  assert '| conv_fwd 28x28x16 | 2.0 | 1.0 | 0.5 | 6 | 12.0 | 6.0 |' in table
  assert '| **sum** | | | 0.5 | | **12.0** | **6.0** |' in table  # alternatives are not summed.
  result = {'machine': 'm', 'jax': 'j', 'device': 'cpu', 'torch': None, 'batch': 128,
            'image_shape': [28, 28, 1], 'repeats': 5, 'steps_per_sample': 20,
            'peak_rss_mb': 1.0, 'rows': [],
            'runs': [{'case': 'run_kd', 'wall_s': 100.0, 'student_wall_s': 90.0,
                      'time_vs_kd': 1.0},
                     {'case': 'run_msmgan', 'wall_s': 110.0, 'student_wall_s': 99.0,
                      'time_vs_kd': 1.1}]}
  table = benchmark.markdown(result)
  assert '| run_msmgan | 110.0 | 99.0 | 1.1 |' in table


def test_torch_check_converts_our_resnet_and_follows_our_schedule():
  """The PyTorch check's teacher is ours, converted: equal logits in inference mode; and its
  per-step learning rate is `optim.lr_schedule`."""
  pytest.importorskip('torch')
  import torch  # pylint: disable=g-import-not-at-top
  from msmgan_jax.core import models  # pylint: disable=g-import-not-at-top
  from msmgan_jax.core import optim  # pylint: disable=g-import-not-at-top
  from msmgan_jax.lab import torch_check  # pylint: disable=g-import-not-at-top
  from msmgan_jax.lab import torch_reference  # pylint: disable=g-import-not-at-top
  model = models.create_model('resnet20', 10)
  v = optim.init_variables(model, jax.random.key(0), (28, 28, 1))
  rng = np.random.default_rng(0)  # BatchNorm statistics that are not the identity.
  v = {'params': v['params'], 'batch_stats': jax.tree.map(
      lambda x: x + rng.uniform(0.1, 0.5, x.shape).astype(np.float32), v['batch_stats'])}
  net = torch_reference.ResNet(20, 1, 10).eval()
  torch_check.flax_to_torch(jax.device_get(v), net)
  x = rng.normal(size=(8, 28, 28, 1)).astype(np.float32)
  with torch.no_grad():
    ours = net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
  np.testing.assert_allclose(ours, model.apply(v, x, train=False)[0], atol=1e-4, rtol=1e-4)
  sched = optim.lr_schedule(0.1, 100, 10)
  for step in (0, 5, 10, 50, 99, 100):
    assert torch_check.lr_at(step, 0.1, 100, 10) == pytest.approx(float(sched(step)), abs=1e-7)


def test_flop_columns_from_a_step_count_and_its_speed():
  row = {'case': 'msmgan_head', 'jax_img_s': 256.0}  # 2 steps of batch 128 per second.
  benchmark._flop_columns(row, 3e12, 2e12, 12.0)  # pylint: disable=protected-access
  assert row == {'case': 'msmgan_head', 'jax_img_s': 256.0, 'gflops': 3000.0, 'tflop_s': 6.0,
                 'of_peak': 0.5, 'flops_vs_kd': 1.5}
  row = {'case': 'ce_resnet8', 'jax_img_s': 128.0}
  benchmark._flop_columns(row, 1e12, None, 0.0)  # pylint: disable=protected-access
  assert row == {'case': 'ce_resnet8', 'jax_img_s': 128.0, 'gflops': 1000.0, 'tflop_s': 1.0}


def test_a_step_is_counted_on_the_lowered_program(tmp_path):
  """The count includes the convolutions (a resnet8 ce step: ~55 MFLOP per image, forward
  and backward), which a compiled GPU program hides in cuDNN calls."""
  case = benchmark.JaxCase(benchmark._cfg(), benchmark.phases.METHODS['ce'].stage_phases(  # pylint: disable=protected-access
      benchmark._cfg(), 3, 0)[0], str(tmp_path))
  assert 6.0e9 < case.flops() < 7.5e9


def test_bad_recount_or_dataset_input_is_refused_before_measuring(tmp_path, capsys):
  bad = tmp_path / 'bad.json'
  bad.write_text('[1]')
  out = tmp_path / 'out.json'
  for path in (str(tmp_path / 'missing.json'), str(bad)):
    assert benchmark_command.main(['--recount', path, '--json', str(out)]) == 2
  assert 'no such file' in capsys.readouterr().err
  assert not out.exists()
  assert benchmark_command.main(['--dataset', str(tmp_path / 'missing.npz'), '--json', str(out)]) == 2
  assert 'is not one of the registered TFDS datasets' in capsys.readouterr().err
  assert not out.exists()


@pytest.mark.slow  # a minute: compiles the kd step at 1 and 2 steps per dispatch, 2 seeds, 2 candidates.
def test_the_dispatch_rows_measure_k_steps_and_r_students_against_one(tmp_path, monkeypatch):
  monkeypatch.setattr(benchmark, 'DISPATCH_KS', (1, 2))
  monkeypatch.setattr(benchmark, 'RUNS_PER_PROGRAM', (1, 2))
  result = benchmark.measure_dispatch(str(tmp_path), peak_tflops=1.0, quick=True)
  names = [r['case'] for r in result['rows']]
  assert names == ['kd_1_steps_per_dispatch', 'kd_2_steps_per_dispatch', 'kd_2_runs_per_program',
                   'kd_2_candidates_per_program']
  for r in result['rows']:
    assert r['jax_img_s'] > 0 and r['ref_img_s'] == result['rows'][0]['jax_img_s']
    assert r['ratio'] == pytest.approx(r['jax_img_s'] / r['ref_img_s'], rel=1e-2)
    assert r['of_peak'] == pytest.approx(r['tflop_s'], rel=1e-6)  # peak 1 TFLOP/s.
  table = benchmark.markdown(result)
  assert '| kd_2_runs_per_program |' in table and 'one step per dispatch' in table
  assert '| kd_2_candidates_per_program |' in table and 'per-run inputs' in table


def test_the_accelerator_check_records_a_failing_part_and_runs_the_others(tmp_path, monkeypatch):
  """A part of `--accelerator` that fails (no dataset on the lent machine, say) is written
  into the result and the table, and the parts after it still run."""
  def no_data(*args, **kwargs):
    raise FileNotFoundError('fashion_mnist is not prepared')
  ran = []
  monkeypatch.setattr(benchmark, 'measure_dispatch', no_data)
  monkeypatch.setattr(benchmark, 'run_notebook',
                      lambda path, tiny: ran.append('notebook') or {'ok': False, 'wall_s': 1.0,
                                                                    'error': 'no dataset'})
  monkeypatch.setattr(benchmark, 'whole_runs', lambda *a: ran.append('kd') or [
      {'case': 'run_kd', 'steps_per_dispatch': 1, 'wall_s': 2.0, 'student_wall_s': 1.5,
       'test_accuracy': 0.5}])
  result = benchmark.accelerator_check(str(tmp_path), quick=True)
  assert ran == ['notebook', 'kd']
  assert result['dispatch'] == {'error': 'FileNotFoundError: fashion_mnist is not prepared'}
  table = benchmark.accelerator_markdown(result)
  assert 'Dispatch rows failed: FileNotFoundError' in table and 'Failed: no dataset' in table
  assert '| run_kd | 1 | 2.0 | 1.5 | 0.5 |' in table


def test_torch_check_starts_a_student_where_our_trainer_starts_it(tmp_path):
  """`student.init=first_anchor`: the PyTorch student starts from our very initial weights
  (the trainer's random initialisation with the anchor's arrays selected), converted."""
  pytest.importorskip('torch')
  import torch  # pylint: disable=g-import-not-at-top
  from msmgan_jax.lab import torch_check  # pylint: disable=g-import-not-at-top
  from msmgan_jax.lab import torch_reference  # pylint: disable=g-import-not-at-top
  from support import make_distiller, tiny_cfg  # pylint: disable=g-import-not-at-top
  cfg = tiny_cfg(method='kd', seed=3, **{'teacher.model': 'resnet20', 'student.model': 'resnet8',
                                         'student.init': 'first_anchor'})
  d = make_distiller(cfg, tmp_path)
  params, stats = d.init_carry()
  start = torch_check.jax_start(cfg, 3, d.teacher.anchors[0].variables, (28, 28, 1), 10)
  jax.tree.map(np.testing.assert_array_equal, start['params'], jax.device_get(params['student']))
  jax.tree.map(np.testing.assert_array_equal, start['batch_stats'],
               jax.device_get(stats['student']))
  assert torch_check.start_anchor(cfg, ['a5', 'a10', 'a15']) == 'a5'
  net = torch_reference.ResNet(8, 1, 10).eval()
  torch_check.flax_to_torch(start, net)
  x = np.random.default_rng(0).normal(size=(4, 28, 28, 1)).astype(np.float32)
  with torch.no_grad():
    ours = net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
  logits = d.student.apply(start, x, train=False)[0]
  np.testing.assert_allclose(ours, logits, atol=1e-4, rtol=1e-4)


def test_torch_check_on_a_fresh_checkout_restores_the_committed_teacher(tmp_path, monkeypatch,
                                                                        repo_root):
  """As compare does, the check distils from the comparison's teacher restored from its
  committed record when runs/ has none (a fresh clone), not an error asking to run the
  comparison first; it reads the anchors from the restored copy."""
  pytest.importorskip('torch')
  from msmgan_jax.data import datasets as data  # pylint: disable=g-import-not-at-top
  from msmgan_jax.lab import torch_check  # pylint: disable=g-import-not-at-top
  shutil.copytree(repo_root / 'results' / 'teacher', tmp_path / 'results' / 'teacher')
  (tmp_path / 'results' / 'lowdata_v3').mkdir()
  shutil.copyfile(repo_root / 'results' / 'lowdata_v3' / 'compare.json',
                  tmp_path / 'results' / 'lowdata_v3' / 'compare.json')
  monkeypatch.chdir(tmp_path)

  class Reached(Exception):
    pass

  def stop(*_, **__):  # the first step after the teacher is found: reading the data.
    raise Reached
  monkeypatch.setattr(data, 'to_arrays', stop)
  with pytest.raises(Reached):
    torch_check.main(['--config', str(repo_root / 'configs' / 'compare_lowdata_v3.py'),
                      '--methods', 'kd', '--seeds', '1'])
  restored = tmp_path / 'runs' / 'teacher_fmnist'
  assert (restored / 'summary.json').read_bytes() == (
      repo_root / 'results' / 'teacher' / 'teacher_fmnist' / 'summary.json').read_bytes()
  assert sorted(os.listdir(restored / 'checkpoints' / 'anchors')) == ['10', '15', '5']
  # Without a record to restore, the error says what to do, and nothing is written.
  shutil.rmtree(tmp_path / 'runs')
  shutil.rmtree(tmp_path / 'results' / 'teacher')
  assert torch_check.main(['--config', str(repo_root / 'configs' / 'compare_lowdata_v3.py'),
                           '--methods', 'kd', '--seeds', '1']) == 2
  assert not (tmp_path / 'runs').exists()
