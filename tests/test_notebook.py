"""The Colab notebook runs top to bottom (on the CPU here, tiny), so it cannot rot."""
import json
import os
import pathlib
import re
import subprocess
import sys

import nbclient
import nbformat
import pytest

from support import REPO_ROOT


@pytest.mark.slow
def test_notebook_runs_top_to_bottom(tfds_data_dir, tmp_path):
  del tfds_data_dir  # prepared Fashion-MNIST in the default TFDS data dir, read by the notebook.
  nb = nbformat.read(REPO_ROOT / 'notebooks' / 'msmgan_colab_tpu.ipynb', as_version=4)
  os.environ['MSMGAN_JAX_NOTEBOOK_TINY'] = '1'  # the kernel inherits it.
  os.environ['MSMGAN_JAX_NOTEBOOK_FILL'] = '1'  # what it does on a TPU or GPU: seeds, k steps.
  try:
    nbclient.NotebookClient(nb, timeout=600, kernel_name='python3',
                            resources={'metadata': {'path': str(tmp_path)}}).execute()
  finally:
    del os.environ['MSMGAN_JAX_NOTEBOOK_TINY'], os.environ['MSMGAN_JAX_NOTEBOOK_FILL']
    # Its outputs, kept: under $MSMGAN_JAX_ARTIFACTS where CI sets it, else beside the run.
    out = pathlib.Path(os.environ.get('MSMGAN_JAX_ARTIFACTS', tmp_path))
    out.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out / 'msmgan_colab_tpu.executed.ipynb')
  text = lambda cell: ''.join(o.get('text', '') + o.get('data', {}).get('text/markdown', '')
                             for o in cell.get('outputs', []))
  outputs = [text(c) for c in nb.cells if c.cell_type == 'code']
  assert 'x CPU (cpu)' in outputs[1]  # the accelerator it found.
  summary = json.loads((tmp_path / 'runs' / 'colab_smoke' / 'summary.json').read_text())
  assert f"student resnet8 {summary['student']['test_accuracy']}" in outputs[2]
  assert '(mean of 3 seeds)' in outputs[2] and len(summary['student']['seeds']) == 3
  config_json = json.loads((tmp_path / 'runs' / 'colab_smoke' / 'config.json').read_text())
  assert config_json['steps_per_dispatch'] == 10
  assert '| 2 |' in outputs[3] and '| block_3 |' in outputs[3]  # the stage x phase table.
  images = [o for o in nb.cells[5].outputs if 'image/png' in o.get('data', {})]
  assert len(images) == 3  # phases, GAN, feature MSE.
  assert 'tensorboard --logdir runs/colab_smoke/tensorboard' in outputs[5]
  assert (tmp_path / 'exported_student' / 'saved_model.pb').exists()
  tuned = json.loads((tmp_path / 'runs' / 'colab_kd_candidates' / 'summary.json').read_text())
  scores = [c['test_accuracy'] for c in tuned['student']['candidates']]
  assert len(scores) == 4 and 'accuracy on train[95%:97%]' in outputs[6]
  best = tuned['student']['candidates'][scores.index(max(scores))]['setting']
  assert f"chosen: {best or '(defaults)'}" in outputs[6]
  lines = [l for l in outputs[7].splitlines() if l.startswith('test_')]
  assert len(lines) == 4 and lines[0].startswith('test_0.png is a ')


def _install_cell() -> str:
  nb = nbformat.read(REPO_ROOT / 'notebooks' / 'msmgan_colab_tpu.ipynb', as_version=4)
  return nb.cells[1].source


def _colab_like_venv(path):
  """A fresh virtual environment that holds, as installed distributions (metadata only),
  every requirement of the package at this environment's versions, TensorFlow as Colab has
  it (`tensorflow`, not `tensorflow-cpu`); msmgan_jax itself is not installed."""
  import importlib.metadata as md  # pylint: disable=g-import-not-at-top
  import venv  # pylint: disable=g-import-not-at-top
  venv.create(path, with_pip=True)
  python = path / 'bin' / 'python'
  site = subprocess.run([str(python), '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
                        capture_output=True, text=True, check=True).stdout.strip()
  for line in md.requires('msmgan_jax'):
    if 'extra ==' in line:
      continue
    here = re.split(r'[<>=!~ ;\[]', line, maxsplit=1)[0]
    name, version = ('tensorflow' if here == 'tensorflow-cpu' else here), md.version(here)
    info = os.path.join(site, f'{name.replace("-", "_")}-{version}.dist-info')
    os.makedirs(info)
    with open(os.path.join(info, 'METADATA'), 'w') as f:
      f.write(f'Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n')
    open(os.path.join(info, 'RECORD'), 'w').close()
  return python


@pytest.mark.slow  # a minute or two: builds the package three times (pip fetches setuptools).
def test_the_install_cell_installs_from_a_wheel_a_drive_copy_or_git_and_keeps_the_runtimes_packages(
    tmp_path):
  """The notebook's first cell, run by a Python without msmgan_jax (a fresh venv whose
  requirements are installed as Colab has them): with no source it stops with what to do;
  from an uploaded wheel, a Drive copy or the git URL it installs msmgan_jax and nothing
  else (Colab's `tensorflow` serves for `tensorflow-cpu`)."""
  python = _colab_like_venv(tmp_path / 'venv')
  cell = tmp_path / 'cell.py'
  cell.write_text(_install_cell())
  clone = tmp_path / 'drive' / 'msmgan_jax'
  subprocess.run(['git', 'clone', '-q', str(REPO_ROOT), str(clone)], check=True)
  wheels = tmp_path / 'upload'
  subprocess.run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps', '-w', str(wheels),
                  str(clone)], check=True)
  env = {k: v for k, v in os.environ.items() if not k.startswith('MSMGAN_JAX')}
  env['MSMGAN_JAX_DRIVE'] = str(tmp_path / 'no_drive')

  def run(cwd, **extra):
    return subprocess.run([str(python), str(cell)], cwd=cwd, env={**env, **extra},
                          capture_output=True, text=True, timeout=600)

  def installed():
    out = subprocess.run([str(python), '-m', 'pip', 'list', '--format=freeze'],
                         capture_output=True, text=True, check=True).stdout
    return {line.split('==')[0].lower() for line in out.splitlines()}
  before = installed()
  empty = tmp_path / 'empty'
  empty.mkdir()
  none = run(empty)
  assert none.returncode != 0 and 'msmgan_jax is not installed here' in none.stderr
  for cwd, extra in ((wheels, {}), (empty, {'MSMGAN_JAX_DRIVE': str(clone)}),
                     (empty, {'MSMGAN_JAX_REPO': str(REPO_ROOT)})):
    got = run(cwd, **extra)
    assert got.returncode == 0, got.stderr[-2000:]
    assert 'installing:' not in got.stdout and "kept this runtime's:" in got.stdout
    assert 'tensorflow ' in got.stdout and got.stdout.strip().endswith('msmgan_jax 0.1.0')
    assert installed() - before == {'msmgan_jax'}  # no tensorflow-cpu beside Colab's tensorflow.
    again = run(cwd, **extra)  # installed already: nothing to do.
    assert again.returncode == 0 and again.stdout.strip() == 'msmgan_jax 0.1.0'
    subprocess.run([str(python), '-m', 'pip', 'uninstall', '-q', '-y', 'msmgan_jax'], check=True)
