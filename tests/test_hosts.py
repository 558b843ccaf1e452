"""Starting several hosts (`--distributed`, msmgan_jax.hosts): the settings from flags or
the environment, and the rendezvous that turns a wrong count, a repeated id, a missing
process or an unreachable coordinator into exit 2 within the time limit (JAX 0.10's own
initialize aborts the process instead). Processes are threads here, on localhost ports."""
import io
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from msmgan_jax import cli, hosts
from msmgan_jax.errors import BadInput

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_settings_come_from_flags_else_the_environment():
  assert not hosts.settings(env={}).explicit  # none given: JAX detects the cluster.
  env = {'JAX_COORDINATOR_ADDRESS': '10.0.0.1:1234', 'JAX_NUM_PROCESSES': '4',
         'JAX_PROCESS_ID': '3'}
  assert hosts.settings(env=env) == hosts.Settings('10.0.0.1:1234', 4, 3)
  assert hosts.settings('h:99', 2, 1, env=env) == hosts.Settings('h:99', 2, 1)  # flags first.
  assert hosts.settings(process_id=0, env=env) == hosts.Settings('10.0.0.1:1234', 4, 0)


@pytest.mark.parametrize('args, message', [
    (('h:1', None, None), r'--num_processes \(or JAX_NUM_PROCESSES\), --process_id .*missing'),
    ((None, 2, 0), r'--coordinator_address \(or JAX_COORDINATOR_ADDRESS\) missing'),
    (('10.0.0.1', 2, 0), 'must be host:port'),
    (('h:70000', 2, 0), 'must be host:port'),
    (('h:1', 0, 0), 'must be >= 1'),
    (('h:1', 2, 2), r'must be in \[0, 2\)'),
    (('h:1', 'two', 0), 'must be integers'),
])
def test_malformed_settings_are_refused(args, message):
  with pytest.raises(BadInput, match=message):
    hosts.settings(*args, env={})


def _run_all(processes, timeout, connections=None):
  """Runs `rendezvous` for each Settings in a thread; [None or the BadInput message], and
  the seconds it took; `connections` (a list) gets each process's open connections."""
  out, t0 = [None] * len(processes), time.monotonic()
  if connections is not None:
    connections.extend([None] * len(processes))

  def one(i, s):
    try:
      got = hosts.rendezvous(s, timeout)
      if connections is not None:
        connections[i] = got
      else:
        for conn in got.values():
          conn.close()
    except BadInput as e:
      out[i] = str(e)
  threads = [threading.Thread(target=one, args=(i, s)) for i, s in enumerate(processes)]
  for t in threads:
    t.start()
    time.sleep(0.05)
  for t in threads:
    t.join(timeout + 15)
  return out, time.monotonic() - t0


def test_every_process_meets_and_goes_on():
  address = f'127.0.0.1:{free_port()}'
  # Process 1 comes first and retries until process 0 listens.
  out, _ = _run_all([hosts.Settings(address, 3, i) for i in (2, 1, 0)], 20)
  assert out == [None, None, None]
  # The connections stay open (the `Watch`'s); the coordinator's port is free for JAX's own
  # coordinator to listen on (gRPC binds with SO_REUSEADDR, as here).
  with socket.socket() as s:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(('', int(address.rsplit(':', 1)[1])))
    s.listen()


def _watches(n, survivors, monkeypatch):
  """`n` processes met on localhost; the `survivors` each get their `Watch` (the others
  stand for processes whose sockets the test closes); exits are recorded, not made:
  returns (watches {id: Watch}, connections [per process], {process id: exit code})."""
  monkeypatch.setattr(hosts, 'GRACE_S', 0.2)
  exits, me = {}, threading.local()

  def fake_exit(code):
    exits[me.pid] = code  # and the watcher goes on (a real exit would end the process).
  monkeypatch.setattr(hosts, '_exit', fake_exit)
  monkeypatch.setattr(hosts.sys, 'stderr', io.StringIO())
  address, conns = f'127.0.0.1:{free_port()}', []
  out, _ = _run_all([hosts.Settings(address, n, i) for i in range(n)], 20, conns)
  assert out == [None] * n

  class Watch(hosts.Watch):
    def _watch(self, pid, conn):
      me.pid = self.s.process_id
      super()._watch(pid, conn)
  watches = {i: Watch(hosts.Settings(address, n, i), conns[i]) for i in survivors}
  return watches, conns, exits


def _close(conns):
  for c in conns:
    try:
      c.shutdown(socket.SHUT_RDWR)  # wakes a reader blocked on it, as a dead process's would.
    except OSError:
      pass
    c.close()


def _wait_for(exits, n, seconds=10.0):
  deadline = time.monotonic() + seconds
  while len(exits) < n and time.monotonic() < deadline:
    time.sleep(0.05)
  time.sleep(0.5)  # and no more.


def test_a_lost_process_stops_every_other_naming_it(monkeypatch):
  """Four processes: process 1 ends on its own ('done', then its connection closes),
  process 2 vanishes (its connection closes without a word): process 0 and process 3 stop
  with exit 3 naming process 2, within the grace; process 1's end stops nobody."""
  watches, conns, exits = _watches(4, (0, 3), monkeypatch)
  conns[1][0].sendall(b'done\n')
  _close([conns[1][0]])
  time.sleep(0.5)
  assert exits == {}
  _close([conns[2][0]])  # killed: the kernel closes its socket.
  _wait_for(exits, 2)
  assert exits == {0: 3, 3: 3}, exits
  for pid in (0, 3):
    assert 'process 2 of the 4 in this job stopped' in watches[pid].report()
    assert f'so process {pid} stops too' in watches[pid].report()
  _close(list(conns[0].values()) + [conns[3][0]])


def test_a_failed_process_is_named_unless_the_others_end_too(monkeypatch):
  """A process that fails with an unexpected error says 'failed': process 0 stops naming
  it; process 1, ending on its own within the grace (the same error everywhere), does
  not stop for it."""
  watches, conns, exits = _watches(3, (0, 1), monkeypatch)
  conns[2][0].sendall(b'failed\n')
  watches[1].say('done')  # process 1 ends by itself at once.
  _wait_for(exits, 1)
  assert exits == {0: 3}, exits
  assert 'process 2 of the 3' in watches[0].report()
  assert 'unexpected error' in watches[0].report()
  _close(list(conns[0].values()) + [conns[1][0], conns[2][0]])


def test_a_dead_coordinator_stops_the_others_at_once(monkeypatch):
  """Process 0's connection closing without 'done' stops process 1 without the grace (JAX's
  own client aborts the process as soon as it sees the service gone)."""
  monkeypatch.setattr(hosts, 'GRACE_S', 30.0)
  watches, conns, exits = _watches(2, (1,), monkeypatch)
  monkeypatch.setattr(hosts, 'GRACE_S', 30.0)
  t0 = time.monotonic()
  _close(list(conns[0].values()))
  _wait_for(exits, 1)
  assert exits == {1: 3} and time.monotonic() - t0 < 5
  assert 'process 0 of the 2' in watches[1].report()
  _close([conns[1][0]])


def test_a_wrong_process_count_stops_every_process_with_its_cause():
  address = f'127.0.0.1:{free_port()}'
  out, took = _run_all([hosts.Settings(address, 2, 0), hosts.Settings(address, 3, 1)], 20)
  assert all(m and 'process 1 was started with --num_processes 3, process 0 with 2' in m
             for m in out), out
  assert took < 10


def test_a_missing_process_stops_the_others_within_the_time_limit():
  address = f'127.0.0.1:{free_port()}'
  out, took = _run_all([hosts.Settings(address, 3, 0), hosts.Settings(address, 3, 1)], 2)
  assert all(m and 'process 2 of 3 did not reach the coordinator within 2 s' in m
             for m in out), out
  assert took < 8


def test_an_id_given_twice_is_named():
  address = f'127.0.0.1:{free_port()}'
  out, _ = _run_all([hosts.Settings(address, 3, 0), hosts.Settings(address, 3, 1),
                     hosts.Settings(address, 3, 1)], 10)
  assert sum(1 for m in out if m and 'process id 1 was given to two processes' in m) >= 2, out


def test_an_unreachable_coordinator_is_an_error_within_the_time_limit():
  address = f'127.0.0.1:{free_port()}'  # nobody listens there.
  t0 = time.monotonic()
  with pytest.raises(BadInput, match=r'coordinator 127.0.0.1:\d+ \(process 0\) could not be '
                                     r'reached within 1 s .*start process 0'):
    hosts.rendezvous(hosts.Settings(address, 2, 1), 1.0)
  assert time.monotonic() - t0 < 5


def test_host_flags_without_distributed_are_refused():
  with pytest.raises(BadInput, match='--num_processes needs --distributed'):
    cli.parse(['main', '--config', os.path.join(REPO, 'configs/default.py'),
               '--num_processes', '2'])
  _, _, _, none = cli.parse(['main', '--config', os.path.join(REPO, 'configs/default.py')])
  assert none is None
  _, _, _, (s, timeout) = cli.parse(
      ['main', '--config', os.path.join(REPO, 'configs/default.py'), '--distributed',
       '--coordinator_address', 'localhost:1234', '--num_processes', '2', '--process_id', '1',
       '--distributed_timeout', '7'])
  assert s == hosts.Settings('localhost:1234', 2, 1) and timeout == 7.0


@pytest.mark.slow
def test_the_command_exits_2_when_the_coordinator_is_dead(tmp_path):
  """`python -m msmgan_jax.main --distributed ...` with no process 0: exit 2 within the
  time limit, the cause named, nothing written (JAX alone would abort: exit 134)."""
  workdir = tmp_path / 'run'
  t0 = time.monotonic()
  p = subprocess.run(
      [sys.executable, '-m', 'msmgan_jax.main', '--config', 'configs/default.py:smoke',
       '--workdir', str(workdir), '--distributed', '--coordinator_address',
       f'127.0.0.1:{free_port()}', '--num_processes', '2', '--process_id', '1',
       '--distributed_timeout', '3'], cwd=REPO, capture_output=True, text=True, timeout=120)
  assert p.returncode == 2, p.stderr[-2000:]
  assert 'could not be reached within 3 s' in p.stderr
  assert time.monotonic() - t0 < 60
  assert not workdir.exists()


@pytest.mark.slow
def test_two_processes_on_localhost_train_one_student_from_the_flags_alone(tmp_path):
  """Two processes (2 forced CPU devices each) standing in for two hosts, started with the
  README's flags only (no cluster environment): both finish, write one workdir and report
  the same student. (That it is one host's student with 4 devices: tests/test_multihost.py.)"""
  port, workdir = free_port(), tmp_path / 'run'
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS='--xla_force_host_platform_device_count=2')
  procs = [subprocess.Popen(
      [sys.executable, '-m', 'msmgan_jax.main', '--config', 'configs/default.py:smoke',
       '--workdir', str(workdir), '--config.method=ce', '--distributed',
       '--coordinator_address', f'127.0.0.1:{port}', '--num_processes', '2',
       '--process_id', str(i), '--distributed_timeout', '120'],
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for i in range(2)]
  outs = [p.communicate(timeout=900)[0] for p in procs]
  assert [p.returncode for p in procs] == [0, 0], [o[-2000:] for o in outs]
  accs = [[l for l in o.splitlines() if 'student test accuracy' in l][-1].rsplit(' ', 1)[1]
          for o in outs]
  assert accs[0] == accs[1], accs
  import json  # pylint: disable=g-import-not-at-top
  summary = json.loads((workdir / 'summary.json').read_text())
  env_record = summary['environment']
  assert env_record['process_count'] == 2 and env_record['device_count'] == 4, env_record
  assert f'{summary["student"]["test_accuracy"]:.4f}' == accs[0]
