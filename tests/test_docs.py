"""The README and docs/: the README stays a five-minute read (at most 300 lines, the Quick
start on the first screen), every relative link of README.md and docs/*.md resolves to a
file of the checkout (and a heading of it, where the link names one), every docs page is
linked from the README, and what the README's first screen claims (the Quick start's
settings, times and accuracies, the verdict's numbers) is what the committed records say.

The tables these numbers come from are checked against results/ by tests/test_usability.py.
"""
import json
import pathlib
import re
import shlex

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
README = REPO_ROOT / 'README.md'
PAGES = sorted((REPO_ROOT / 'docs').glob('*.md'))
MAX_README_LINES, FIRST_SCREEN_LINES = 300, 40
LINK = re.compile(r'!?\[[^\]]*\]\(([^)\s]+)\)')  # [text](target) and ![alt](target).
FENCE = re.compile(r'^```.*?^```', re.M | re.S)


def prose(path: pathlib.Path) -> str:
  """`path`'s Markdown without its fenced code blocks (whose brackets are code, not links)."""
  return FENCE.sub('', path.read_text())


def section(text: str, heading: str) -> str:
  """The body of the `## heading...` section of `text`, up to the next `## ` heading."""
  return text[text.index(f'\n## {heading}'):].split('\n## ', 2)[1]


def slug(heading: str) -> str:
  """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, blanks to '-'."""
  return re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-')


def anchors(path: pathlib.Path) -> set:
  return {slug(h) for h in re.findall(r'^#{1,6} (.*)$', prose(path), re.M)}


def test_the_readme_is_short_with_the_quick_start_on_the_first_screen():
  lines = README.read_text().splitlines()
  assert len(lines) <= MAX_README_LINES, f'README.md has {len(lines)} lines: move text to docs/'
  assert '## Quick start' in lines[:FIRST_SCREEN_LINES], 'Quick start is not on the first screen'
  assert lines.index('## Install') < lines.index('## Quick start')


@pytest.mark.parametrize('path', [README] + PAGES,
                         ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_every_relative_link_resolves_inside_the_checkout(path):
  """Each relative link names an existing file or folder of the checkout (never one outside
  it), and a `#fragment` on a Markdown target names one of its headings; web links are
  left alone."""
  bad = []
  for target in LINK.findall(prose(path)):
    if re.match(r'[a-z]+:', target):  # https:, mailto:
      continue
    file, _, fragment = target.partition('#')
    resolved = (path.parent / file).resolve() if file else path
    if REPO_ROOT not in resolved.parents and resolved != REPO_ROOT:
      bad.append(f'{target}: outside the repository')
    elif not resolved.exists():
      bad.append(f'{target}: no such file')
    elif fragment and resolved.suffix == '.md' and fragment not in anchors(resolved):
      bad.append(f'{target}: no heading #{fragment} in {resolved.name}')
  assert not bad, bad


def test_the_readme_links_every_docs_page():
  linked = {(README.parent / t.partition('#')[0]).resolve() for t in LINK.findall(prose(README))}
  assert PAGES and not [p.name for p in PAGES if p.resolve() not in linked]


def quick_start_commands(name: str) -> list:
  """The argument lists (sys.argv style, the program first) of the Quick start's
  `python -m msmgan_jax.NAME` commands."""
  block = re.search(r'```bash\n(.*?)```', section(README.read_text(), 'Quick start'), re.S)
  lines = block.group(1).replace('\\\n', ' ').splitlines()
  return [shlex.split(l, comments=True)[2:] for l in lines
          if l.startswith(f'python -m msmgan_jax.{name} ')]


def recorded(*parts) -> dict:
  return json.loads(REPO_ROOT.joinpath(*parts).read_text())


@pytest.fixture(scope='module')
def quick_start(monkeypatch_module):
  """The config of the Quick start's distil command and of it without its last two
  overrides, `anchors.num` and `teacher.checkpoints` (the teacher trained here), parsed as
  `main` parses them."""
  from msmgan_jax import cli  # pylint: disable=g-import-not-at-top
  monkeypatch_module.chdir(REPO_ROOT)
  (argv,) = quick_start_commands('main')
  assert argv[0] == 'msmgan_jax.main' and argv[-2].startswith('--config.anchors.num=')
  assert argv[-1].startswith('--config.teacher.checkpoints=')
  return cli.parse(argv)[0], cli.parse(argv[:-2])[0]


@pytest.fixture(scope='module')
def monkeypatch_module():
  mp = pytest.MonkeyPatch()
  yield mp
  mp.undo()


def test_the_quick_start_distils_as_the_recorded_run_it_quotes(quick_start):
  """The distil command trains what full v2's dkd run trained (its times and accuracies are
  the ones the README quotes), from the committed teacher's final anchor."""
  cfg, _ = quick_start
  run = recorded('results', 'full_v2', 'runs', 'dkd', 'config.json')
  assert cfg.method == run['method'] == 'dkd' and cfg.seed == run['seed']
  assert cfg.batch_size == run['batch_size']
  for group in ('dataset', 'dkd', 'student'):
    for field, value in run[group].items():
      if not field.startswith('eval_'):  # how often it evaluates does not change training.
        got = cfg[group][field]
        assert (list(got) if isinstance(got, tuple) else got) == value, (group, field)
  assert cfg.teacher.model == run['teacher']['model']
  (anchor,) = cfg.teacher.checkpoints
  assert (REPO_ROOT / anchor / 'commit_success.txt').exists(), anchor
  assert anchor.split('results/teacher/', 1)[1] == run['teacher']['checkpoints'][-1].split(
      'runs/', 1)[1]  # the teacher_fmnist run's final anchor, committed under results/.


def test_the_quick_starts_few_images_start_is_the_verdicts_best_runs(monkeypatch):
  """The overrides the Quick start gives for few training images start the student from the
  committed teacher's first anchor, as lowdata v2's dkd@init (the verdict's pick) did."""
  from msmgan_jax import cli  # pylint: disable=g-import-not-at-top
  monkeypatch.chdir(REPO_ROOT)
  text = ' '.join(section(README.read_text(), 'Quick start').split())
  extra = re.findall(r'`(--config\.student\.init=\S+) (--config\.student\.init_checkpoint=\S+)`',
                     text)
  assert len(extra) == 1, extra
  (argv,) = quick_start_commands('main')
  cfg = cli.parse(argv + list(extra[0]))[0]
  run = recorded('results', 'lowdata_v2', 'runs', 'dkd@init', 'config.json')
  assert cfg.student.init == run['student']['init'] == 'first_anchor'
  first = run['teacher']['checkpoints'][0].split('runs/', 1)[1]  # teacher_fmnist's first anchor.
  assert cfg.student.init_checkpoint == f'results/teacher/{first}'
  assert (REPO_ROOT / cfg.student.init_checkpoint / 'commit_success.txt').exists()


def test_the_quick_start_without_the_anchors_trains_the_committed_teacher(quick_start):
  _, cfg = quick_start
  teacher = recorded('results', 'teacher', 'teacher_fmnist', 'config.json')
  assert not cfg.teacher.checkpoints and cfg.anchors.num == teacher['stages']['num']
  for field, value in teacher['teacher'].items():
    got = cfg.teacher[field]
    assert (list(got) if isinstance(got, tuple) else got) == value, field


def test_the_quick_starts_numbers_are_the_records():
  text = ' '.join(section(README.read_text(), 'Quick start').split())
  teacher = recorded('results', 'teacher', 'teacher_fmnist', 'summary.json')['teacher']
  dkd = next(r for r in recorded('results', 'full_v2', 'compare.json')['runs']
             if r['name'] == 'dkd')
  assert f'teacher (test accuracy {teacher["test_accuracy"]:.4f})' in text
  assert f'{round(teacher["wall_s"] / 60)} minutes more' in text
  assert f'took {round(dkd["wall_s"] / 60)} min for {len(dkd["seeds"])} seeds' in text
  assert f'{dkd["mean"]:.4f} +- {dkd["std"]:.4f}' in text
  gpu = (REPO_ROOT / 'results/benchmark/benchmark_gpu.md').read_text()
  kd_gpu = float(re.search(r'^\| run_kd \| ([\d.]+) \|', gpu, re.M).group(1))
  assert f'1-epoch kd run: {round(kd_gpu)} s on an H200' in text


def test_the_readmes_verdict_numbers_are_the_tested_tables():
  """Every mean +- std and interval of the README's verdict is one of docs/results.md's
  (whose tables tests/test_usability.py recomputes from results/)."""
  verdict = ' '.join(section(README.read_text(), 'Verdict').split())
  tables = ' '.join((REPO_ROOT / 'docs/results.md').read_text().split())
  numbers = re.findall(r'\d\.\d{4} \+- \d\.\d{4}|[+-]\d+\.\d\d \[[+-]\d+\.\d\d, [+-]\d+\.\d\d\]',
                       verdict)
  assert len(numbers) >= 6 and not [n for n in numbers if n not in tables], numbers


def test_how_long_a_run_takes_is_the_records():
  """docs/performance.md's table of whole runs: each row's seconds are a wall time recorded
  in a summary.json under the folder it names, and its minutes are those seconds."""
  rows = [l for l in section((REPO_ROOT / 'docs/performance.md').read_text(),
                             'How long a run takes').splitlines() if l.startswith('| ')][2:]
  assert len(rows) >= 4
  for row in rows:
    minutes, seconds = re.search(r'(\d+) min \(([\d,]+) s', row).groups()
    folder = re.findall(r'`(results/[^`]+)`', row)[-1]
    walls = set()
    for path in (REPO_ROOT / folder).glob('**/summary.json'):
      s = json.loads(path.read_text())
      walls |= {round(w) for w in (s.get('wall_s'), (s.get('student') or {}).get('wall_s'),
                                    (s.get('teacher') or {}).get('wall_s')) if w}
    seconds = int(seconds.replace(',', ''))
    assert seconds in walls, (row, sorted(walls))
    assert int(minutes) == round(seconds / 60), row
