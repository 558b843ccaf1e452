"""Every command answers `--help` and refuses a bad argument before loading TensorFlow or
JAX (which take from seconds to a minute to import on a loaded machine).

Each case runs the command as `python -m msmgan_jax.X ...` would, in a fresh interpreter,
and then lists which heavy modules that process imported: what is asserted is the import,
not a wall-clock time.
"""
import json
import subprocess
import sys

import pytest

HEAVY = ('jax', 'flax', 'optax', 'tensorflow', 'torch')

# Runs module argv[1] as __main__ with the rest as its arguments, then prints its exit code
# and the heavy modules loaded, as the last line of stdout.
DRIVER = '''
import json, runpy, sys
module, args = sys.argv[1], sys.argv[2:]
sys.argv = [module] + args
code = 0
try:
  runpy.run_module(module, run_name='__main__', alter_sys=True)
except SystemExit as e:
  code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
sys.stdout.flush()
print(json.dumps({'code': code, 'loaded': [m for m in %r if m in sys.modules]}))
''' % (HEAVY,)

RUN_CONFIG, COMPARISON_CONFIG = 'configs/default.py', 'configs/compare_lowdata.py'

# (command, a bad argument list): an unknown flag where the command reads a --config file
# (the file is not read), an unknown or missing argument where it parses with argparse.
BAD = {
    'main': ['--config', RUN_CONFIG, '--workdri', 'x'],
    'compare': ['--config', COMPARISON_CONFIG, '--reprot'],
    'teachers': ['--config', RUN_CONFIG, '--no-such-flag'],
    'report': ['--no-such-flag'],
    'export': ['--no-such-flag'],
    'predict': ['--no-such-flag'],
    'benchmark': ['--no-such-flag'],
    'torch_check': ['--no-such-flag'],
    'arrays': ['--no-such-flag'],
}


def _run(repo_root, module: str, *args) -> tuple:
  """(exit code, heavy modules loaded, stdout, stderr) of `python -m module args`."""
  proc = subprocess.run([sys.executable, '-c', DRIVER, module, *args], cwd=repo_root,
                        capture_output=True, text=True, timeout=300)
  *out, last = proc.stdout.rstrip('\n').split('\n')
  result = json.loads(last)
  return result['code'], result['loaded'], '\n'.join(out), proc.stderr


@pytest.mark.parametrize('name', sorted(BAD))
def test_help_loads_no_heavy_module(repo_root, name):
  code, loaded, out, err = _run(repo_root, f'msmgan_jax.{name}', '--help')
  assert code == 0, err[-1000:]
  assert f'python -m msmgan_jax.{name}' in out, out[-500:]
  assert loaded == [], f'--help of msmgan_jax.{name} imported {loaded}'


@pytest.mark.parametrize('name', sorted(BAD))
def test_a_bad_argument_is_refused_before_heavy_imports(repo_root, name):
  code, loaded, _, err = _run(repo_root, f'msmgan_jax.{name}', *BAD[name])
  assert code == 2, err[-1000:]
  assert 'Traceback' not in err and 'error' in err, err[-1000:]
  assert loaded == [], f'msmgan_jax.{name} {" ".join(BAD[name])} imported {loaded}'


@pytest.mark.parametrize('name', ['main', 'compare', 'teachers', 'torch_check'])
def test_a_missing_config_file_is_refused_before_heavy_imports(repo_root, name):
  code, loaded, _, err = _run(repo_root, f'msmgan_jax.{name}', '--config', 'nosuchfile.py')
  assert code == 2 and 'config file nosuchfile.py not found' in err, err[-1000:]
  assert loaded == []


@pytest.mark.parametrize('override,message', [
    ('--config.nosuch=1', "unknown config field nosuch in '--config.nosuch=1'"),
    # A field that moved away long ago gets the same generic message, its group's fields.
    ('--config.stages.num=3', "unknown config field stages.num in '--config.stages.num=3'; "
                              'stages has'),
])
def test_an_unknown_config_field_is_refused_before_tensorflow(repo_root, override, message):
  """A config file's fields are known only once it is read, and its schema comes from the
  method registry, which loads JAX; TensorFlow still does not load."""
  code, loaded, _, err = _run(repo_root, 'msmgan_jax.main', '--config', RUN_CONFIG, override)
  assert code == 2 and message in err, err[-1000:]
  assert 'tensorflow' not in loaded and 'torch' not in loaded, loaded
