"""The run report's plots and table read well: block phases each on their own steps, no
legend entry without points, wall-time plots mark runs that shared the machine (or whose
load is unknown), results.md names each run's dataset. Small fake run files, no training."""
import json
import os

import pytest

from msmgan_jax.lab import compare
from msmgan_jax.lab import report
from msmgan_jax.training import summary as summary_lib


def fake_metrics(path, images=1000, batch=50):
  """metrics.jsonl of a two-stage MS-MGAN-like run: stage 1 has 14-step block phases
  (block_1, block_2: GAN and feature logs at steps 7 and 14) and a 600-step head (train
  accuracy every 100 steps, a test at its end); stage 2 a block_1 again and a head."""
  records, seen = [], 0
  for stage in (1, 2):
    for phase, n in (('block_1', 14), ('block_2', 14), ('head', 600)):
      if stage == 2 and phase == 'block_2':
        continue
      b = int(phase[-1]) if phase.startswith('block') else None
      for step in ((7, 14) if b else range(100, n + 1, 100)):
        r = {'step': step, 'epoch': (seen + step * batch) / images, 'stage': stage,
             'phase': phase, 'split': 'train', 'time': 0.0}
        if b:
          r.update({f'g_adv_b{b}': 0.1 * step, f'd_loss_b{b}': 1.0 + step / 100,
                    f'd_acc_real_b{b}': 0.9, f'd_acc_fake_b{b}': 0.3, f'feat_mse_b{b}': 2.0 / step})
        else:
          r.update(accuracy=0.5 + step / 2000, loss=1.0)
        records.append(r)
      seen += n * batch
      if phase == 'head':
        records.append({'step': n, 'epoch': seen / images, 'stage': stage, 'phase': 'head',
                        'split': 'test', 'accuracy': 0.7 + stage / 100, 'loss': 0.8,
                        'wall_s': 100.0 * stage})
  with open(os.path.join(path, 'metrics.jsonl'), 'w') as f:
    f.writelines(json.dumps(r) + '\n' for r in records)
  return records


@pytest.fixture
def figures(monkeypatch):
  """The figures the report closes, kept open to inspect (in the order they were saved)."""
  plt, kept = report.pyplot(), []
  monkeypatch.setattr(plt, 'close', kept.append)
  yield kept
  monkeypatch.undo()
  plt.close('all')


def panels(fig) -> dict:
  """{(panel title, y label): axes} of a figure's visible axes."""
  return {(ax.get_title(), ax.get_ylabel()): ax for ax in fig.axes if ax.get_visible()}


def test_each_block_phase_has_its_own_panels_on_its_own_steps(tmp_path, figures):
  records = fake_metrics(tmp_path)
  assert report.run_plots(str(tmp_path), 'run') == ['phases.png', 'gan.png', 'features.png']
  _, gan, features = figures
  phases = ['stage 1, block_1', 'stage 1, block_2', 'stage 2, block_1']
  gan_labels = ['generator adversarial loss', 'discriminator loss',
                'D accuracy on real (teacher)', 'D accuracy on fake (student)']
  assert sorted(panels(gan)) == sorted((p, y) for p in phases for y in gan_labels)
  assert sorted(panels(features)) == [(p, 'feature MSE through the connector') for p in phases]
  for fig, ylabel, key in ((gan, 'discriminator loss', 'd_loss_b{}'),
                           (features, 'feature MSE through the connector', 'feat_mse_b{}')):
    for title in phases:
      ax = panels(fig)[(title, ylabel)]
      stage, phase = int(title[6]), title.split(', ')[1]
      want = [r for r in records if (r['stage'], r['phase'], r['split']) == (stage, phase, 'train')]
      (line,) = ax.lines  # the phase's own block only.
      assert list(line.get_xdata()) == [7, 14]  # steps within the phase, not epochs.
      assert list(line.get_ydata()) == [r[key.format(phase[-1])] for r in want]
      assert ax.get_xlim() == pytest.approx((0, 14.7))  # 14 steps fill the panel.
  assert panels(gan)[('stage 2, block_1', gan_labels[2])].get_ylim() == (-0.05, 1.05)
  # The head phase (600 steps) logged none of these: it has no panel.
  assert not any('head' in t for t, _ in panels(gan)) and len(features.axes) == 3


def test_phases_plot_has_legend_entries_only_for_series_with_points(tmp_path, figures):
  fake_metrics(tmp_path)
  report.run_plots(str(tmp_path), 'run')
  (ax,) = figures[0].axes
  handles, labels = ax.get_legend_handles_labels()
  assert labels == ['head (test)']  # no entries for the block phases, which logged none.
  assert all(len(h.get_xdata()) for h in handles)
  assert [t.get_text() for t in ax.get_legend().get_texts()] == ['head (test)']


@pytest.mark.parametrize('machine, share', [
    ({'cores': 2, 'load_1min_mean': 2.6, 'load_1min_max': 4.0, 'load_samples': 9}, 'shared'),
    ({'cores': 2, 'load_1min_mean': 2.5, 'load_1min_max': 4.0, 'load_samples': 9}, 'alone'),
    ({'cores': 16, 'load_1min_mean': 9.0, 'load_1min_max': 17.0, 'load_samples': 9}, 'alone'),
    (None, 'unknown'),  # recorded before the load was, or no load average on the machine.
])
def test_a_run_shared_the_machine_when_its_mean_load_passed_its_cores(machine, share):
  assert report.machine_share({'student': {'machine': machine}}) == share
  assert report.machine_share({'method': 'teacher', 'teacher': {}}) == 'unknown'


def test_the_load_watch_records_this_runs_samples(monkeypatch):
  loads = iter([3.0, 1.0, 2.0])
  monkeypatch.setattr(os, 'getloadavg', lambda: (next(loads), 0.0, 0.0))
  watch = summary_lib.LoadWatch()
  assert watch.record() is None
  watch.sample()
  watch.samples[0] = (0.0, watch.samples[0][1])  # taken long before this run started.
  watch.sample(); watch.sample()
  assert watch.record(since=1.0) == {'cores': os.cpu_count(), 'load_1min_mean': 1.5,
                                     'load_1min_max': 2.0, 'load_samples': 2}


def fake_run(path, summary_extra: dict, config_dataset='fashion_mnist', machine=None):
  os.makedirs(path)
  fake_metrics(path)
  phase = {'name': 'head', 'trainable_params': 10, 'steps': 600, 'wall_s': 60.0,
           'first_step_s': 2.0, 'images_per_s': 500.0, 'test_accuracy': 0.72}
  summary = {'method': 'msmgan', 'teacher': None, 'wall_s': 70.0, **summary_extra,
             'student': {'model': 'resnet8', 'params': 10, 'test_accuracy': 0.72,
                         'wall_s': 65.0, 'machine': machine,
                         'stages': [{'stage': 1, 'anchor': None, 'phases': [phase]}]}}
  with open(os.path.join(path, 'summary.json'), 'w') as f:
    json.dump(summary, f)
  with open(os.path.join(path, 'config.json'), 'w') as f:
    json.dump({'dataset': {'name': config_dataset}}, f)


def test_results_table_names_each_runs_dataset_and_load(tmp_path, capsys):
  shared = {'cores': 2, 'load_1min_mean': 3.1, 'load_1min_max': 4.0, 'load_samples': 12}
  fake_run(str(tmp_path / 'new'), {'dataset': 'cifar10', 'data': {'name': 'cifar10'}},
           machine=shared)
  fake_run(str(tmp_path / 'old'), {}, config_dataset='mnist')  # before `data` and `machine`.
  assert report.main(['--out', str(tmp_path / 'out'), str(tmp_path / 'new'),
                      str(tmp_path / 'old')]) == 0
  capsys.readouterr()
  table = (tmp_path / 'out' / 'results.md').read_text()
  head, rows = table.split('\n\n', 1)
  assert 'load: whether the student run shared the machine' in head
  lines = rows.strip().splitlines()
  cols = [c.strip() for c in lines[0].strip('|').split('|')]
  cells = [dict(zip(cols, (c.strip() for c in line.strip('|').split('|')))) for line in lines[2:]]
  assert [(c['run'], c['dataset'], c['load']) for c in cells] == [
      ('new', 'cifar10', 'shared'), ('old', 'mnist', 'unknown')]
  doc = json.loads((tmp_path / 'out' / 'results.json').read_text())
  assert [(r['dataset'], r['load']) for r in doc['rows']] == [('cifar10', 'shared'),
                                                             ('mnist', 'unknown')]


def test_the_wall_time_plot_marks_runs_that_shared_the_machine(tmp_path, figures):
  curve = [(1.0, 100.0, 0.7), (2.0, 200.0, 0.8)]
  rows = [{'name': n, 'ablation': None, 'curve': curve, 'machine': m} for n, m in (
      ('kd', {'cores': 2, 'load_1min_mean': 1.9, 'load_1min_max': 2.4, 'load_samples': 9}),
      ('msmgan', {'cores': 2, 'load_1min_mean': 3.3, 'load_1min_max': 4.1, 'load_samples': 9}),
      ('ce', None))]
  assert compare.plots(str(tmp_path), rows) == ['accuracy_vs_images.png', 'accuracy_vs_wall.png']
  images, wall = figures
  legend = lambda fig: [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
  assert legend(images) == ['kd', 'msmgan', 'ce']  # images seen do not depend on the load.
  assert legend(wall) == ['kd', 'msmgan (shared the machine)', 'ce (load unknown)']
  kd, msmgan, ce = wall.axes[1].lines
  assert msmgan.get_marker() == 'X' and kd.get_marker() == 's'
  assert ce.get_markerfacecolor() == 'none'
  assert wall.get_suptitle().startswith('crosses: shared the machine (mean 1-minute load > '
                                        'cores + 0.5)') and 'hollow: load unknown' in wall.get_suptitle()
  assert images.get_suptitle() == ''


def test_a_budget_run_shares_its_methods_colour_dotted(tmp_path, figures):
  """In the comparison plots a budget run (`kd@epochs30`) takes the colour of its method's
  main run, dotted with triangles, and msmgan's budget run is as thick as msmgan's; a budget
  run whose method has no main run gets a colour of its own."""
  curve = [(1.0, 100.0, 0.7), (2.0, 200.0, 0.8)]
  row = lambda name, method, budget=None: {'name': name, 'method': method, 'budget': budget,
                                           'ablation': None, 'curve': curve, 'machine': None}
  rows = [row('kd', 'kd'), row('msmgan', 'msmgan'), row('kd@epochs30', 'kd', 'epochs30'),
          row('msmgan@epochs30', 'msmgan', 'epochs30'), row('dkd@init', 'dkd', 'init')]
  compare.plots(str(tmp_path), rows)
  kd, ms, kd30, ms30, dkd_init = figures[0].axes[1].lines
  assert kd30.get_color() == kd.get_color() and ms30.get_color() == ms.get_color()
  assert kd30.get_linestyle() == ':' and kd30.get_marker() == '^' and kd.get_linestyle() == '-'
  assert ms30.get_linewidth() == ms.get_linewidth() > kd30.get_linewidth()
  assert dkd_init.get_color() not in {kd.get_color(), ms.get_color()}
