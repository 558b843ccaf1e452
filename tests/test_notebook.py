"""The Colab notebook runs top to bottom (on the CPU here, tiny), so it cannot rot."""
import json
import os

import nbclient
import nbformat
import pytest

from support import REPO_ROOT


@pytest.mark.slow
def test_notebook_runs_top_to_bottom(tfds_data_dir, tmp_path):
  del tfds_data_dir  # prepared Fashion-MNIST in the default TFDS data dir, read by the notebook.
  nb = nbformat.read(REPO_ROOT / 'notebooks' / 'msmgan_colab_tpu.ipynb', as_version=4)
  os.environ['MSMGAN_JAX_NOTEBOOK_TINY'] = '1'  # the kernel inherits it.
  try:
    nbclient.NotebookClient(nb, timeout=600, kernel_name='python3',
                            resources={'metadata': {'path': str(tmp_path)}}).execute()
  finally:
    del os.environ['MSMGAN_JAX_NOTEBOOK_TINY']
  text = lambda cell: ''.join(o.get('text', '') + o.get('data', {}).get('text/markdown', '')
                             for o in cell.get('outputs', []))
  outputs = [text(c) for c in nb.cells if c.cell_type == 'code']
  assert 'x CPU (cpu)' in outputs[1]  # the accelerator it found.
  summary = json.loads((tmp_path / 'runs' / 'colab_smoke' / 'summary.json').read_text())
  assert f"student resnet8 {summary['student']['test_accuracy']}" in outputs[2]
  assert '| 2 |' in outputs[3] and '| block_3 |' in outputs[3]  # the stage x phase table.
  images = [o for o in nb.cells[5].outputs if 'image/png' in o.get('data', {})]
  assert len(images) == 3  # phases, GAN, feature MSE.
  assert 'tensorboard --logdir runs/colab_smoke/tensorboard' in outputs[5]
  assert (tmp_path / 'exported_student' / 'saved_model.pb').exists()
  lines = [l for l in outputs[6].splitlines() if l.startswith('test_')]
  assert len(lines) == 4 and lines[0].startswith('test_0.png is a ')
