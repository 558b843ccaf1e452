"""The package's import graph: packages are the layers, they point one way, no cycle (of
modules or of packages), no private helper borrowed.

Every `import` of every module counts, function-level ones included (they hide nothing).
A layer is a top-level subpackage or a top-level module of `msmgan_jax`, whole: a module's
layer is its package's, never a finer one.
"""
import ast
import os
import pathlib
import re

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / 'msmgan_jax'

# Lowest first: a module may import its own layer and those before it, never a later one.
LAYERS = (
    ('errors',),                      # the exceptions and the exit-code table.
    ('cli', 'hosts'),                 # what the commands share (flags, quiet start, starting hosts).
    ('files',),                       # a run's files: atomic io, fault points, metrics, checkpoints.
    ('core',),                        # pure JAX: models, losses, optim, sharding, phases, steps.
    ('methods',),                     # one module per method, and the registry.
    ('data',),                        # datasets and their sources, arrays files, the input recipe.
    ('config',),                      # the schema: core groups + every method's groups.
    ('training',),                    # the workdir, loop, teacher, student, states, runner.
    ('serving',),                     # export, predict (libraries; the commands parse).
    ('lab',),                         # compare, report, benchmark, torch check.
    ('__init__', 'main', 'compare', 'report', 'benchmark', 'export', 'predict', 'arrays',
     'torch_check', 'teachers'),      # the `python -m msmgan_jax.X` commands and APIs.
)


def _module_name(path: pathlib.Path) -> str:
  rel = path.relative_to(PACKAGE.parent).with_suffix('')
  parts = list(rel.parts)
  if parts[-1] == '__init__' and len(parts) > 2:
    parts = parts[:-1]
  return '.'.join(parts)


def _modules() -> dict:
  return {_module_name(p): p for p in sorted(PACKAGE.rglob('*.py'))}


def _package(module: str) -> str:
  """The top-level subpackage or module `module` belongs to: 'files' for msmgan_jax.files.io,
  '__init__' for the package root."""
  return (module.split('.')[1:] or ['__init__'])[0]


def _layer(module: str) -> int:
  """The layer of `module`: its package's entry in LAYERS."""
  for i, names in enumerate(LAYERS):
    if _package(module) in names:
      return i
  raise AssertionError(f'{module} is in no layer of tests/test_layers.py: add its package to '
                       'LAYERS')


def _imports(path: pathlib.Path, modules: dict) -> list:
  """(imported module, line) for each import of one of our modules in `path`."""
  out = []
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      out += [(a.name, node.lineno) for a in node.names if a.name.startswith('msmgan_jax')]
    elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith('msmgan_jax'):
      for a in node.names:
        full = f'{node.module}.{a.name}'
        out.append((full if full in modules else node.module, node.lineno))
  return out


def _graph() -> dict:
  modules = _modules()
  return {m: _imports(p, modules) for m, p in modules.items()}


def test_every_module_is_in_a_layer_and_imports_point_down():
  bad = []
  for module, imports in _graph().items():
    for target, line in imports:
      if target == 'msmgan_jax':
        bad.append(f'{module}:{line} imports the package root')
      elif _layer(target) > _layer(module):
        bad.append(f'{module}:{line} imports {target} from a later layer')
  assert not bad, '\n'.join(bad)


def test_no_import_cycle():
  graph = {m: sorted({t for t, _ in imps if t in _modules()}) for m, imps in _graph().items()}
  # A package's __init__ runs before its modules: importing the package is importing it.
  state, stack, cycles = {}, [], []

  def visit(m):
    state[m] = 'open'
    stack.append(m)
    for t in graph.get(m, ()):
      if t.startswith(m + '.'):
        continue  # a package importing its own modules (methods/__init__ registers them).
      if state.get(t) == 'open':
        cycles.append(stack[stack.index(t):] + [t])
      elif t not in state:
        visit(t)
    stack.pop()
    state[m] = 'done'

  for m in sorted(graph):
    if m not in state:
      visit(m)
  assert not cycles, '\n'.join(' -> '.join(c) for c in cycles)


def test_no_package_level_import_loop():
  """Top-level packages import each other one way: no loop such as data -> files -> config
  -> data, which module-level acyclicity alone would allow."""
  graph = {}
  for module, imports in _graph().items():
    graph.setdefault(_package(module), set()).update(
        _package(t) for t, _ in imports if t != 'msmgan_jax' and _package(t) != _package(module))
  state, loops = {}, []

  def visit(p, path):
    state[p] = 'open'
    for t in sorted(graph.get(p, ())):
      if state.get(t) == 'open':
        loops.append(path[path.index(t):] + [t])
      elif t not in state:
        visit(t, path + [t])
    state[p] = 'done'

  for p in sorted(graph):
    if p not in state:
      visit(p, [p])
  assert not loops, '\n'.join(' -> '.join(l) for l in loops)


def test_no_private_name_is_used_outside_its_module():
  modules, bad = _modules(), []
  for module, path in modules.items():
    tree = ast.parse(path.read_text(), str(path))
    aliases = {}  # local name -> our module it is bound to.
    for node in ast.walk(tree):
      if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith('msmgan_jax'):
        for a in node.names:
          full = f'{node.module}.{a.name}'
          if full in modules:
            aliases[a.asname or a.name] = full
          elif a.name.startswith('_'):
            bad.append(f'{module}:{node.lineno} imports {node.module}.{a.name}')
    for node in ast.walk(tree):
      if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
          and node.value.id in aliases and node.attr.startswith('_')
          and not node.attr.startswith('__')):
        bad.append(f'{module}:{node.lineno} uses {aliases[node.value.id]}.{node.attr}')
  assert not bad, '\n'.join(bad)


@pytest.mark.parametrize('bad_source,kind', [
    ('from msmgan_jax.training import loop\n', 'later layer'),
    ('from msmgan_jax.files import io\nio._private()\n', 'private'),
    ('from msmgan_jax.training import loop\n', 'package loop'),
])
def test_the_checks_catch_what_they_look_for(tmp_path, monkeypatch, bad_source, kind):
  """A core module that imports the trainer (a later layer, and a core -> training -> core
  loop), or borrows a private helper, is caught."""
  fake = tmp_path / 'msmgan_jax'
  for p in PACKAGE.rglob('*.py'):
    target = fake / p.relative_to(PACKAGE)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(p.read_text())
  (fake / 'core' / 'losses.py').write_text((PACKAGE / 'core' / 'losses.py').read_text()
                                          + bad_source)
  monkeypatch.setattr(__import__(__name__), 'PACKAGE', fake, raising=False)
  globals()['PACKAGE'] = fake
  try:
    check, where = {
        'later layer': (test_every_module_is_in_a_layer_and_imports_point_down, 'core.losses'),
        'private': (test_no_private_name_is_used_outside_its_module, 'core.losses'),
        'package loop': (test_no_package_level_import_loop, 'core -> training'),
    }[kind]
    with pytest.raises(AssertionError, match=where):
      check()
  finally:
    globals()['PACKAGE'] = PACKAGE_REAL


PACKAGE_REAL = PACKAGE
assert os.path.isdir(PACKAGE)


# A config field of MS-MGANs' own groups, by its dotted name or read off a config (cfg.gan,
# config['disc']); a list named stages (stages.append()), summary.json's 'stages' and the
# gan.png plot are other things.
MSMGAN_FIELD = re.compile(r"\b(?:gan|disc|stages)\.(?!png\b)[a-z_]+\b(?!\()"
                          r"|\b(?:cfg|config|c)\.(?:gan|disc|stages)\b"
                          r"|\[['\"](?:gan|disc)['\"]\]")


def test_only_msmgans_package_names_its_config_fields():
  """gan, disc and stages are MS-MGANs' groups, defined in methods/msmgan and merged into the
  schema through the registry: no other module of the package names one of their fields."""
  own = PACKAGE / 'methods' / 'msmgan'
  bad = [f'{p.relative_to(PACKAGE)}:{n}: {line.strip()}'
         for p in sorted(PACKAGE.rglob('*.py')) if own not in p.parents
         for n, line in enumerate(p.read_text().splitlines(), 1) if MSMGAN_FIELD.search(line)]
  assert not bad, '\n'.join(bad)
