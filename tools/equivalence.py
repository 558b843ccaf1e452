"""Layout-independent "same behaviour" checker for msmgan_jax checkouts (stdlib + numpy).

  capture:  python tools/equivalence.py capture --checkout CHECKOUT --out OUT [--force]
      Runs `python -m msmgan_jax.compare --config configs/compare_lowdata.py:smoke` with
      cwd=OUT/work (holding a copy of CHECKOUT/configs), PYTHONPATH=CHECKOUT, JAX_PLATFORMS=cpu,
      and JAX's IR dump on (JAX_DUMP_IR_TO=OUT/ir, JAX_DUMP_IR_MODES=stablehlo: one StableHLO
      text file per compiled module). Writes OUT/compare.log, OUT/which.txt (the msmgan_jax
      that was imported), OUT/capture.json (command, env, rc, wall time, source files the
      compiled programs came from).

  diff:     python tools/equivalence.py diff OUT_A OUT_B [--json REPORT.json] [--md REPORT.md]
                                            [--ir-level strict|canonical] [--diffs N]
      1. Lowered programs: the multisets of normalised module texts (see normalise_ir) must
         be equal. `strict` (default) drops only location info, the module's own name and
         source paths; `canonical` also renames private functions (@relu_0, @_where ...) in
         order of definition and drops jax.arg_info / jax.result_info (pytree path names).
         Both levels are always counted and reported; --ir-level picks the one that decides
         the exit status.
      2. Run values: summary.json, metrics.jsonl, compare.json, config.json under OUT/work/runs,
         matched by relative path, compared recursively and exactly (floats bit-for-bit),
         except the timing/environment fields listed in IGNORED_KEYS / IGNORED_PATHS below.
         Absolute paths of the scratch folder / checkout inside strings are replaced by
         <WORK> / <CHECKOUT> first.
      --migrate-with CHECKOUT: recorded configs (every config.json, and compare.json's
         config.base and config.teacher) are first read as CHECKOUT's resume reads them
         (`msmgan_jax.training.workdir.as_schema_now`, run in a subprocess with
         PYTHONPATH=CHECKOUT): fields moved since are moved, fields added since take the
         values those runs trained with. Two configs equal after that are the same run to
         CHECKOUT: a workdir recorded with either resumes under the other's config with no
         "fields differ". Without it, configs are compared as written.
      Exit 0 when everything matches, 1 otherwise.

The script never imports msmgan_jax. A maintainer tool (tools/, not in the wheel): run it
from a checkout as `python tools/equivalence.py ...` or `python -m tools.equivalence ...`;
results/refactor/README.md names its earlier path, `python -m msmgan_jax.lab.equivalence`.
"""
import argparse
import collections
import difflib
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np  # noqa: F401  (allowed dependency; not needed by the comparison itself)

COMPARE_ARGS = ['-m', 'msmgan_jax.compare', '--config', 'configs/compare_lowdata.py:smoke']

# ------------------------------------------------------------------------- what is ignored
# Run files compared (by basename), anywhere under OUT/work/runs.
RUN_FILES = ('summary.json', 'metrics.jsonl', 'compare.json', 'config.json')

# Keys whose values are timing or environment, ignored wherever they occur (any depth).
IGNORED_KEYS = frozenset({
    'wall_s',            # summary / phases / metrics test records: wall-clock seconds.
    'student_wall_s', 'teacher_wall_s', 'phase_wall_s',  # (report rows; resume meta)
    'images_per_s',      # throughput (metrics train records, phases, compare rows).
    'first_step_s',      # phases: first step incl. compilation.
    'time',              # metrics.jsonl: unix timestamp of each record.
    'environment',       # summary.json: versions, git_commit, python, platform, devices.
    'git_commit', 'versions',
    'machine',           # compare.json: machine / processor / cores / JAX version string.
    'wall',              # compare curves before flattening (see IGNORED_PATHS).
    'hostname', 'host', 'pid',
})
# Positional timing inside lists: compare.json rows' 'curve' is [[epoch, wall_s, accuracy]...];
# element 1 (wall seconds, or None) is ignored. Patterns are matched against the path tail;
# '*' matches any list index.
IGNORED_PATHS = (
    ('curve', '*', 1),
)
# Strings: absolute folders of either side are replaced by these placeholders before comparing.
PATH_PLACEHOLDERS = ('<WORK>', '<OUT>', '<CHECKOUT>')

# --------------------------------------------------------------------------------- capture


def _git(checkout, *args):
  try:
    return subprocess.run(['git', '--no-optional-locks', '-C', checkout, *args],
                          capture_output=True, text=True, timeout=30).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return None


def capture(checkout: str, out: str, force: bool = False, module: str = None,
            config: str = None, configs_dir: str = None) -> int:
  checkout, out = os.path.realpath(checkout), os.path.abspath(out)
  # The import root: CHECKOUT, or CHECKOUT/src for a src layout.
  root = next((r for r in (checkout, os.path.join(checkout, 'src'))
               if os.path.isdir(os.path.join(r, 'msmgan_jax'))), None)
  if root is None:
    sys.exit(f'{checkout} holds no msmgan_jax package (nor src/msmgan_jax)')
  args = list(COMPARE_ARGS)
  if module:
    args[1] = module
  if config:
    args[3] = config
  if os.path.exists(out) and os.listdir(out):
    if not force:
      sys.exit(f'{out} exists and is not empty (use --force to replace it)')
    shutil.rmtree(out)
  work, ir = os.path.join(out, 'work'), os.path.join(out, 'ir')
  os.makedirs(work)
  shutil.copytree(os.path.join(checkout, configs_dir or 'configs'), os.path.join(work, 'configs'))
  env = dict(os.environ)
  env.pop('MSMGAN_JAX_FAULT', None)  # fault injection must be off.
  env.update({
      'PYTHONPATH': root,                # this checkout's msmgan_jax, not the installed one.
      'JAX_PLATFORMS': 'cpu',
      'JAX_DUMP_IR_TO': ir,              # jax/_src/config.py: jax_dump_ir_to
      'JAX_DUMP_IR_MODES': 'stablehlo',  # jax/_src/config.py: jax_dump_ir_modes
      'JAX_INCLUDE_DEBUG_INFO_IN_DUMPS': 'true',  # keep loc() info: it names each module's source.
      'PYTHONHASHSEED': '0',
      'GIT_OPTIONAL_LOCKS': '0',  # train.environment() runs `git status` in the checkout: no index writes.
      'PYTHONUNBUFFERED': '1',
      'PYTHONDONTWRITEBYTECODE': '1',  # nothing written into the checkout (no __pycache__).
  })
  which = subprocess.run(
      [sys.executable, '-c', 'import msmgan_jax, sys; print(msmgan_jax.__file__); '
       'print(sys.executable); print(sys.version)'],
      cwd=work, env={**env, 'JAX_DUMP_IR_TO': ''}, capture_output=True, text=True)
  with open(os.path.join(out, 'which.txt'), 'w') as f:
    f.write(which.stdout + which.stderr)
  module_file = (which.stdout.splitlines() or [''])[0]
  if not os.path.realpath(module_file).startswith(checkout + os.sep):
    sys.exit(f'msmgan_jax imports from {module_file!r}, not from {checkout}')
  cmd = [sys.executable, *args]
  print(f'capture: {" ".join(cmd)}  (cwd {work}, log {out}/compare.log)', flush=True)
  t0 = time.time()
  with open(os.path.join(out, 'compare.log'), 'w') as log:
    rc = subprocess.run(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
  wall = time.time() - t0
  return write_meta(checkout, out, cmd, env, module_file, rc, wall, t0)


def write_meta(checkout, out, cmd, env, module_file, rc, wall, t0, note=None) -> int:
  """Writes OUT/capture.json; returns capture's exit status (3: foreign sources in the IR)."""
  work, ir = os.path.join(out, 'work'), os.path.join(out, 'ir')
  ir_files = sorted(os.listdir(ir)) if os.path.isdir(ir) else []
  sources, foreign = ir_sources(ir, checkout)
  meta = {
      'checkout': checkout, 'out': out, 'work': work, 'ir': ir,
      'checkout_head': _git(checkout, 'rev-parse', 'HEAD'),
      'checkout_dirty': bool(_git(checkout, 'status', '--porcelain', '--untracked-files=no')),
      'command': cmd, 'cwd': work,
      'env': {k: env[k] for k in ('PYTHONPATH', 'JAX_PLATFORMS', 'JAX_DUMP_IR_TO', 'JAX_DUMP_IR_MODES',
                                  'JAX_INCLUDE_DEBUG_INFO_IN_DUMPS', 'PYTHONHASHSEED',
                                  'GIT_OPTIONAL_LOCKS', 'PYTHONDONTWRITEBYTECODE', 'XLA_FLAGS')
              if k in env},
      'msmgan_jax_file': module_file, 'returncode': rc, 'wall_s': round(wall, 1),
      'ir_modules': len(ir_files),
      'msmgan_jax_sources_in_ir': sorted(sources),
      'foreign_msmgan_jax_sources_in_ir': foreign,
      'started': time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(t0)),
  }
  if note:
    meta['note'] = note
  with open(os.path.join(out, 'capture.json'), 'w') as f:
    json.dump(meta, f, indent=2)
  print(f'capture: rc={rc}, {wall:.0f} s, {len(ir_files)} IR modules in {ir}; msmgan_jax '
        f'source files seen in the IR: {len(sources)}, not under {checkout}: {foreign or "none"}',
        flush=True)
  if foreign:
    return 3
  return rc


def ir_sources(ir: str, checkout: str):
  """Which msmgan_jax did the run itself execute? The dumped modules' locations name the
  source files of the traced code: every msmgan_jax file among them must be CHECKOUT's.
  Returns (sorted msmgan_jax source files seen, those not under `checkout`)."""
  checkout = os.path.realpath(checkout)
  sources = set()
  for name in sorted(os.listdir(ir)) if os.path.isdir(ir) else []:
    with open(os.path.join(ir, name)) as f:
      for m in _FILE_LOC.finditer(f.read()):
        if '/msmgan_jax/' in m.group(1):
          sources.add(m.group(1))
  foreign = sorted(s for s in sources if not os.path.realpath(s).startswith(checkout + os.sep))
  return sorted(sources), foreign


# ------------------------------------------------------------------------------ IR normalise

_FILE_LOC = re.compile(r'loc\("([^"]+\.py)":(\d+)')
_MODULE_NAME = re.compile(r'^(\s*module\s+)@("(?:[^"\\]|\\.)*"|[\w.$-]+)', re.M)
_PRIVATE_FUNC = re.compile(r'func\.func\s+private\s+@("(?:[^"\\]|\\.)*"|[\w.$-]+)')
_INFO_ATTR = re.compile(r'\bjax\.(?:arg_info|result_info)\s*=\s*"(?:[^"\\]|\\.)*"(?:,\s*)?')
_PY_STRING_ATTR = re.compile(r'([\w.$]+\s*=\s*)"((?:[^"\\]|\\.)*\.py(?::\d+)?(?:[^"\\]|\\.)*)"')


_STR_OR_LOC = re.compile(r'"(?:[^"\\]|\\.)*"| ?\bloc\(')
_STR_OR_PAREN = re.compile(r'"(?:[^"\\]|\\.)*"|[()]')


def _strip_locs(text: str) -> str:
  """Removes every `loc(...)` (balanced parentheses; parentheses inside string literals do
  not count, and `loc(` inside a string literal is kept) and every `#loc...` line."""
  text = '\n'.join(l for l in text.split('\n') if not l.startswith('#loc'))
  out, last, pos = [], 0, 0
  while True:
    m = _STR_OR_LOC.search(text, pos)
    if m is None:
      break
    if m.group(0).startswith('"'):
      pos = m.end()
      continue
    out.append(text[last:m.start()])
    depth, j = 1, m.end()
    while depth:
      t = _STR_OR_PAREN.search(text, j)
      if t is None:
        raise ValueError('unbalanced loc( in module text')
      if t.group(0) == '(':
        depth += 1
      elif t.group(0) == ')':
        depth -= 1
      j = t.end()
    last = pos = j
  out.append(text[last:])
  return ''.join(out)


def normalise_ir(text: str, level: str = 'strict', placeholders: dict = None) -> str:
  text = _strip_locs(text)
  m = _MODULE_NAME.search(text, max(0, text.find('module @') - 1))
  if m:
    text = text[:m.start()] + m.group(1) + '@MODULE' + text[m.end():]
  # Any string attribute naming a Python source file (path and/or line) is dropped to a marker.
  if '.py' in text:
    text = _PY_STRING_ATTR.sub(r'\1"<py-source>"', text)
  for path, ph in (placeholders or {}).items():
    text = text.replace(path, ph)
  if level == 'canonical':
    text = _INFO_ATTR.sub('', text)
    text = text.replace(', }', '}').replace('{, ', '{')
    text = re.sub(r'(?<=>) \{\}', '', text)  # attribute dicts (after a type) left empty.
    names = []
    for m in _PRIVATE_FUNC.finditer(text):
      if m.group(1) not in names:
        names.append(m.group(1))
    if names:
      mapping = {nm: f'@__f{k}' for k, nm in enumerate(names)}
      pat = re.compile('@(' + '|'.join(re.escape(nm) for nm in sorted(names, key=len, reverse=True))
                       + r')(?![\w.$-])')
      text = pat.sub(lambda m: mapping[m.group(1)], text)
  text = '\n'.join(l.rstrip() for l in text.split('\n') if l.strip())
  return text + '\n'


def _module_info(text: str) -> dict:
  m = _MODULE_NAME.search(text, max(0, text.find('module @') - 1))
  name = m.group(2) if m else '?'
  # The project frames: `#locN = loc("func"(#locM))` where #locM is a msmgan_jax file:line.
  files = {}
  for lm in re.finditer(r'^(#loc\d*) = loc\("([^"]+)":(\d+)', text, re.M):
    files[lm.group(1)] = (lm.group(2), int(lm.group(3)))
  frames = collections.Counter()
  for fm in re.finditer(r'^#loc\d* = loc\("([^"]+)"\((#loc\d*)\)\)', text, re.M):
    where = files.get(fm.group(2))
    if where and '/msmgan_jax/' in where[0]:
      frames[f'{fm.group(1)} ({where[0].split("/msmgan_jax/")[-1]}:{where[1]})'] += 1
  return {'module': name, 'function': re.sub(r'^jit_', '', name),
          'frames': [f for f, _ in frames.most_common(6)]}


_NORMALISED = {}  # sha256 of a raw module text -> its normalised texts (this process).


def _load_ir(out: str, placeholders: dict) -> list:
  ir = os.path.join(out, 'ir')
  mods = []
  for name in sorted(os.listdir(ir)) if os.path.isdir(ir) else []:
    if not name.endswith('.mlir'):
      continue
    with open(os.path.join(ir, name)) as f:
      raw = f.read()
    key = hashlib.sha256(raw.encode()).hexdigest()
    if key not in _NORMALISED:
      _NORMALISED[key] = {**_module_info(raw),
                          **{lv: normalise_ir(raw, lv) for lv in ('strict', 'canonical')}}
    d = {'file': name, **_NORMALISED[key]}
    for level in ('strict', 'canonical'):
      t = d[level]
      for path, ph in placeholders.items():  # (locations are gone: rarely any path left.)
        t = t.replace(path, ph)
      d[level] = t
      d[level + '_hash'] = hashlib.sha256(t.encode()).hexdigest()
    mods.append(d)
  return mods


def _similarity(a: str, b: str) -> float:
  ca, cb = collections.Counter(a.split('\n')), collections.Counter(b.split('\n'))
  inter = sum((ca & cb).values())
  return 2 * inter / max(1, sum(ca.values()) + sum(cb.values()))


def _match(mods_a, mods_b, level):
  """Multiset matching by hash; returns (matched count, unmatched A, unmatched B)."""
  pool = collections.defaultdict(list)
  for m in mods_b:
    pool[m[level + '_hash']].append(m)
  un_a, matched = [], 0
  for m in mods_a:
    if pool[m[level + '_hash']]:
      pool[m[level + '_hash']].pop()
      matched += 1
    else:
      un_a.append(m)
  un_b = [m for ms in pool.values() for m in ms]
  un_b.sort(key=lambda m: m['file'])
  return matched, un_a, un_b


def compare_ir(out_a, out_b, ph_a, ph_b, level, n_diffs=3, diff_lines=60) -> dict:
  mods_a, mods_b = _load_ir(out_a, ph_a), _load_ir(out_b, ph_b)
  rep = {'modules_a': len(mods_a), 'modules_b': len(mods_b), 'level': level}
  for lv in ('strict', 'canonical'):
    matched, un_a, un_b = _match(mods_a, mods_b, lv)
    rep[lv] = {'identical': matched, 'unmatched_a': len(un_a), 'unmatched_b': len(un_b)}
  matched, un_a, un_b = _match(mods_a, mods_b, level)
  entries = []
  for side, un, other_un, other_all in (('A', un_a, un_b, mods_b), ('B', un_b, un_a, mods_a)):
    for k, m in enumerate(un):
      e = {'side': side, 'file': m['file'], 'module': m['module'], 'function': m['function'],
           'frames': m['frames']}
      if k < n_diffs:
        same = lambda ms: [o for o in ms if o['module'] == m['module']]
        cands = same(other_un) or other_un or same(other_all) or other_all
        if cands:
          best = max(cands, key=lambda o: _similarity(m[level], o[level]))
          e['closest'] = {'file': best['file'], 'module': best['module'],
                          'similarity': round(_similarity(m[level], best[level]), 4)}
          a_txt, b_txt = (m[level], best[level]) if side == 'A' else (best[level], m[level])
          fa, fb = (m['file'], best['file']) if side == 'A' else (best['file'], m['file'])
          d = list(difflib.unified_diff(a_txt.split('\n'), b_txt.split('\n'), f'A/{fa}',
                                        f'B/{fb}', n=2, lineterm=''))
          if len(d) > diff_lines:
            d = d[:diff_lines] + [f'... ({len(d) - diff_lines} more diff lines)']
          e['diff'] = [l[:400] + (' ...' if len(l) > 400 else '') for l in d]
      entries.append(e)
  rep['unmatched'] = entries
  rep['ok'] = not un_a and not un_b
  return rep


# ---------------------------------------------------------------------------- run values


def _load_run_file(path: str):
  with open(path) as f:
    if path.endswith('.jsonl'):
      return [json.loads(l) for l in f if l.strip()]
    return json.load(f)


def _subst(v, placeholders: dict):
  if isinstance(v, str):
    for path, ph in placeholders.items():
      v = v.replace(path, ph)
    return v
  if isinstance(v, list):
    return [_subst(x, placeholders) for x in v]
  if isinstance(v, dict):
    return {k: _subst(x, placeholders) for k, x in v.items()}
  return v


def _ignored_path(path: tuple) -> bool:
  for pat in IGNORED_PATHS:
    if len(path) >= len(pat):
      tail = path[-len(pat):]
      if all(p == '*' and isinstance(t, int) or p == t for p, t in zip(pat, tail)):
        return True
  return False


def _num(x):
  return isinstance(x, (int, float)) and not isinstance(x, bool)


def _walk(a, b, path, diffs):
  """Appends (path, kind, a, b, absdiff) for every difference between a and b."""
  if _ignored_path(path):
    return
  if isinstance(a, dict) and isinstance(b, dict):
    for k in sorted(set(a) | set(b), key=str):
      if k in IGNORED_KEYS:
        continue
      if k not in a or k not in b:
        diffs.append((path + (k,), 'missing_in_' + ('a' if k not in a else 'b'),
                      a.get(k), b.get(k), None))
      else:
        _walk(a[k], b[k], path + (k,), diffs)
  elif isinstance(a, list) and isinstance(b, list):
    if len(a) != len(b):
      diffs.append((path, 'length', len(a), len(b), None))
    for i, (x, y) in enumerate(zip(a, b)):
      _walk(x, y, path + (i,), diffs)
  elif _num(a) and _num(b):
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
      return
    if a != b:
      diffs.append((path, 'number', a, b, abs(float(a) - float(b))))
    elif type(a) is not type(b):  # 1 vs 1.0: equal value, but the file changed.
      diffs.append((path, 'type', a, b, None))
  elif a != b or type(a) is not type(b):
    diffs.append((path, 'value', a, b, None))


def _run_files(out: str) -> dict:
  root = os.path.join(out, 'work', 'runs')
  found = {}
  for d, _, files in os.walk(root):
    for f in files:
      if f in RUN_FILES:
        p = os.path.join(d, f)
        found[os.path.relpath(p, root)] = p
  return found


def _fmt_path(path):
  return ''.join(f'[{p}]' if isinstance(p, int) else f'.{p}' for p in path).lstrip('.')


def _config_slots(rel: str, doc):
  """(container, key) of each recorded config in run file `rel` (see --migrate-with)."""
  if rel.endswith('config.json') and isinstance(doc, dict):
    return [(None, None)]
  if rel.endswith('compare.json') and isinstance(doc, dict):
    c = doc.get('config') or {}
    return [(c, k) for k in ('base', 'teacher') if isinstance(c.get(k), dict) and 'method' in c[k]]
  return []


def migrate_configs(docs: dict, checkout: str) -> dict:
  """`docs` (rel -> loaded run file) with every recorded config replaced by CHECKOUT's
  `as_schema_now` reading of it (one subprocess for all of them)."""
  slots = [(rel, c, k) for rel, doc in docs.items() for c, k in _config_slots(rel, doc)]
  configs = [docs[rel] if c is None else c[k] for rel, c, k in slots]
  if not configs:
    return docs
  code = ('import json, sys; from msmgan_jax.training.workdir import as_schema_now; '
          'json.dump([as_schema_now(c) for c in json.load(sys.stdin)], sys.stdout)')
  env = dict(os.environ, PYTHONPATH=os.path.abspath(checkout), JAX_PLATFORMS='cpu')
  done = subprocess.run([sys.executable, '-c', code], input=json.dumps(configs), text=True,
                        capture_output=True, env=env, cwd=checkout, check=False)
  if done.returncode:
    raise SystemExit(f'--migrate-with {checkout}: as_schema_now failed:\n{done.stderr[-2000:]}')
  out = dict(docs)
  for (rel, c, k), new in zip(slots, json.loads(done.stdout)):
    if c is None:
      out[rel] = new
    else:
      c[k] = new
  return out


def compare_runs(out_a, out_b, ph_a, ph_b, max_listed=20, migrate_with=None) -> dict:
  fa, fb = _run_files(out_a), _run_files(out_b)
  both = sorted(set(fa) & set(fb))
  docs_a = {rel: _subst(_load_run_file(fa[rel]), ph_a) for rel in both}
  docs_b = {rel: _subst(_load_run_file(fb[rel]), ph_b) for rel in both}
  if migrate_with:
    docs_a, docs_b = migrate_configs(docs_a, migrate_with), migrate_configs(docs_b, migrate_with)
  rep = {'files_a': len(fa), 'files_b': len(fb),
         'missing_in_a': sorted(set(fb) - set(fa)), 'missing_in_b': sorted(set(fa) - set(fb)),
         'identical_files': 0, 'files': {}}
  rep['configs_migrated_with'] = os.path.abspath(migrate_with) if migrate_with else None
  n_values = 0
  for rel in both:
    a, b = docs_a[rel], docs_b[rel]
    diffs = []
    _walk(a, b, (), diffs)
    n_values += _count_leaves(a)
    if not diffs:
      rep['identical_files'] += 1
      continue
    nums = [d[4] for d in diffs if d[1] == 'number']
    rep['files'][rel] = {
        'differences': len(diffs),
        'numbers_differing': len(nums),
        'max_abs_diff': max(nums) if nums else None,
        'first': [{'path': _fmt_path(p), 'kind': k, 'a': _short(x), 'b': _short(y), 'abs_diff': ad}
                  for p, k, x, y, ad in diffs[:max_listed]]}
  rep['values_compared_a'] = n_values
  rep['ok'] = not rep['missing_in_a'] and not rep['missing_in_b'] and not rep['files']
  return rep


def _count_leaves(v, path=()):
  if _ignored_path(path):
    return 0
  if isinstance(v, dict):
    return sum(_count_leaves(x, path + (k,)) for k, x in v.items() if k not in IGNORED_KEYS)
  if isinstance(v, list):
    return sum(_count_leaves(x, path + (i,)) for i, x in enumerate(v))
  return 1


def _short(v, n=120):
  s = json.dumps(v)
  return v if len(s) <= n else s[:n] + '...'


def _placeholders(out: str) -> dict:
  """Absolute folders of one capture -> placeholders (longest first)."""
  out = os.path.abspath(out)
  ph = {os.path.join(out, 'work'): '<WORK>', out: '<OUT>'}
  meta_path = os.path.join(out, 'capture.json')
  if os.path.exists(meta_path):
    with open(meta_path) as f:
      meta = json.load(f)
    for key, name in (('work', '<WORK>'), ('out', '<OUT>'), ('checkout', '<CHECKOUT>')):
      if meta.get(key):
        ph[meta[key]] = name
  return dict(sorted(ph.items(), key=lambda kv: -len(kv[0])))


def diff(out_a, out_b, json_path=None, md_path=None, level='strict', n_diffs=3,
         migrate_with=None) -> int:
  ph_a, ph_b = _placeholders(out_a), _placeholders(out_b)
  ir = compare_ir(out_a, out_b, ph_a, ph_b, level, n_diffs)
  runs = compare_runs(out_a, out_b, ph_a, ph_b, migrate_with=migrate_with)
  metas = {}
  for side, out in (('a', out_a), ('b', out_b)):
    p = os.path.join(out, 'capture.json')
    metas[side] = json.load(open(p)) if os.path.exists(p) else None
  rep = {'a': os.path.abspath(out_a), 'b': os.path.abspath(out_b), 'captures': metas,
         'ir': ir, 'runs': runs, 'ignored_keys': sorted(IGNORED_KEYS),
         'ignored_paths': [list(p) for p in IGNORED_PATHS], 'ok': ir['ok'] and runs['ok']}
  for side in ('a', 'b'):
    m = metas[side]
    if m is not None and (m.get('returncode') != 0 or m.get('foreign_msmgan_jax_sources_in_ir')):
      rep['ok'] = False
      rep.setdefault('capture_problems', []).append(
          f'{side}: rc={m.get("returncode")}, foreign sources={m.get("foreign_msmgan_jax_sources_in_ir")}')
  text = _summary_text(rep)
  print(text)
  if json_path:
    with open(json_path, 'w') as f:
      json.dump(rep, f, indent=1, default=str)
  if md_path:
    with open(md_path, 'w') as f:
      f.write(_markdown(rep))
  return 0 if rep['ok'] else 1


def _summary_text(rep) -> str:
  ir, runs = rep['ir'], rep['runs']
  lines = [f'A: {rep["a"]}', f'B: {rep["b"]}']
  for side in ('a', 'b'):
    m = rep['captures'][side]
    if m:
      lines.append(f'  {side.upper()} capture: checkout {m["checkout"]} @ {str(m.get("checkout_head"))[:10]}'
                   f'{" (dirty)" if m.get("checkout_dirty") else ""}, rc={m["returncode"]}, '
                   f'{m["wall_s"]:.0f} s')
  lines.append(f'IR modules: A {ir["modules_a"]}, B {ir["modules_b"]}; identical (strict) '
               f'{ir["strict"]["identical"]}, identical (canonical) {ir["canonical"]["identical"]}; '
               f'deciding level: {ir["level"]}')
  for e in ir['unmatched']:
    lines.append(f'  only in {e["side"]}: {e["file"]}  [{e["function"]}]  '
                 + ('; '.join(e['frames'][:3]) or '(no msmgan_jax frames)'))
    if 'closest' in e:
      lines.append(f'    closest on the other side: {e["closest"]["file"]} '
                   f'(similarity {e["closest"]["similarity"]})')
      lines.extend('    ' + l for l in e['diff'][:30])
  lines.append(f'Run files: A {runs["files_a"]}, B {runs["files_b"]}; identical '
               f'{runs["identical_files"]}; differing {len(runs["files"])}; missing in A '
               f'{len(runs["missing_in_a"])}, missing in B {len(runs["missing_in_b"])}; '
               f'{runs["values_compared_a"]} values compared'
               + (f'; recorded configs read as {runs["configs_migrated_with"]} resumes them'
                  if runs.get('configs_migrated_with') else ''))
  for rel in runs['missing_in_a']:
    lines.append(f'  missing in A: {rel}')
  for rel in runs['missing_in_b']:
    lines.append(f'  missing in B: {rel}')
  for rel, f in runs['files'].items():
    lines.append(f'  {rel}: {f["differences"]} differences ({f["numbers_differing"]} numbers, '
                 f'max |diff| {f["max_abs_diff"]})')
    for d in f['first'][:5]:
      lines.append(f'    {d["path"]}: {d["kind"]}: A={d["a"]!r} B={d["b"]!r}')
  for p in rep.get('capture_problems', []):
    lines.append(f'capture problem: {p}')
  lines.append('RESULT: ' + ('SAME (everything matches)' if rep['ok'] else 'DIFFERENT'))
  return '\n'.join(lines)


def _markdown(rep) -> str:
  return ('# equivalence report\n\n```\n' + _summary_text(rep) + '\n```\n\n'
          f'Ignored keys: {", ".join(rep["ignored_keys"])}; ignored positions: '
          f'{rep["ignored_paths"]}\n')


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  sub = p.add_subparsers(dest='cmd', required=True)
  c = sub.add_parser('capture', help='run the smoke comparison of one checkout, dumping its IR')
  c.add_argument('--checkout', required=True)
  c.add_argument('--out', required=True)
  c.add_argument('--force', action='store_true', help='replace a non-empty OUT')
  c.add_argument('--module', help=f'module run with -m (default {COMPARE_ARGS[1]}), should the '
                 'refactor move the comparison entry point')
  c.add_argument('--config', help=f'--config value (default {COMPARE_ARGS[3]}), relative to OUT/work')
  c.add_argument('--configs-dir', help='the folder copied to OUT/work/configs, relative to '
                 'CHECKOUT (default configs)')
  d = sub.add_parser('diff', help='compare two captures')
  d.add_argument('out_a')
  d.add_argument('out_b')
  d.add_argument('--json')
  d.add_argument('--md')
  d.add_argument('--ir-level', choices=('strict', 'canonical'), default='strict')
  d.add_argument('--diffs', type=int, default=3, help='unified diffs shown for unmatched modules')
  d.add_argument('--migrate-with', metavar='CHECKOUT', help='read recorded configs as this '
                 "checkout's resume does before comparing them (see above)")
  a = p.parse_args(argv)
  if a.cmd == 'capture':
    return capture(a.checkout, a.out, a.force, a.module, a.config, a.configs_dir)
  return diff(a.out_a, a.out_b, a.json, a.md, a.ir_level, a.diffs, a.migrate_with)


if __name__ == '__main__':
  sys.exit(main())
