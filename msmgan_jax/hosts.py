"""Starting one process per host of a multi-host job (`--distributed`), with clear errors.

JAX's multi-controller runtime (`jax.distributed.initialize`) needs a coordinator address
(process 0's host:port), the process count and this process's id. `settings` takes them
from the command line (`--coordinator_address`, `--num_processes`, `--process_id`), else
from the environment (`JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`);
with none of them given, JAX detects its cluster (SLURM, Cloud TPU, Open MPI) itself.

JAX 0.10's initialize does not raise when a process is missing or the coordinator cannot be
reached: after its timeout the process aborts (SIGABRT, a C++ fatal log). So `start` first
meets every process itself (`rendezvous`, plain TCP on the coordinator's port, before JAX
binds it): process 0 waits for the others, each tells its id and the count it was given,
and a wrong count, a repeated id or a process that never comes is a `BadInput` (exit 2)
on every process within `timeout` seconds, naming what to fix. Only once all have met does
JAX's own initialize run, which then finds every process present.

CPU hosts need collectives for their cross-process reductions: `start` turns on gloo
(`jax_cpu_collectives_implementation`), which only the CPU backend reads.

A process that dies mid-run leaves the others blocked in a collective: JAX notices only when
its heartbeats stop (after `heartbeat_timeout_seconds`) and then aborts every process with a
C++ fatal log. So the rendezvous connections stay open for the whole run (`Watch`): the
kernel closes a killed process's socket at once, process 0 sees it, tells the others which
process stopped, and every surviving process prints that and exits 3
(`errors.EXIT_HOST_LOST`) within `GRACE_S` seconds. Checkpoints are committed atomically,
so the last one every process finished is intact and the rerun resumes from it. A process
that ends on its own (done, or with an error it reported) says so first (`end`), so its
exit stops nobody that is finishing too.
"""
import dataclasses
import os
import socket
import sys
import threading
import time
import traceback
from typing import Optional

from msmgan_jax.errors import BadInput, EXIT_HOST_LOST

ENV = ('JAX_COORDINATOR_ADDRESS', 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID')
RETRY_S = 0.2  # between a process's attempts to reach the coordinator.
GRACE_S = 5.0  # a process that saw another stop waits this long (it may be ending too).
_exit = os._exit  # pylint: disable=protected-access  (ends the process from any thread)


@dataclasses.dataclass(frozen=True)
class Settings:
  """Where process 0 listens ('host:port'), how many processes, and this one's id (0-based);
  all None: JAX detects the cluster."""
  coordinator_address: Optional[str] = None
  num_processes: Optional[int] = None
  process_id: Optional[int] = None

  @property
  def explicit(self) -> bool:
    return self.coordinator_address is not None


def settings(coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
             process_id: Optional[int] = None, env=None) -> Settings:
  """The job's `Settings`: each value from its flag, else its environment variable (`ENV`).
  Raises BadInput where some are given and some not, or where a value is malformed (an
  address without a port, a count below 1, an id outside [0, count))."""
  env = os.environ if env is None else env
  given = [coordinator_address, num_processes, process_id]
  names = ('--coordinator_address', '--num_processes', '--process_id')
  for i, var in enumerate(ENV):
    if given[i] is None and env.get(var, '') != '':
      given[i] = env[var]
  if all(v is None for v in given):
    return Settings()
  missing = [f'{n} (or {v})' for n, v, g in zip(names, ENV, given) if g is None]
  if missing:
    raise BadInput(f'--distributed: {", ".join(missing)} missing: give the coordinator address, '
                   'the process count and this process\'s id together (or none of them, where '
                   'JAX detects the cluster: SLURM, Cloud TPU, Open MPI)')
  address = str(given[0])
  host, _, port = address.rpartition(':')
  if not host or not port.isdigit() or not 0 < int(port) < 65536:
    raise BadInput(f'--coordinator_address {address!r} must be host:port, e.g. '
                   '10.0.0.1:1234 (process 0\'s host and a free port)')
  try:
    count, pid = int(given[1]), int(given[2])
  except (TypeError, ValueError) as e:
    raise BadInput(f'--num_processes and --process_id must be integers, got {given[1]!r} and '
                   f'{given[2]!r}') from e
  if count < 1:
    raise BadInput(f'--num_processes must be >= 1, got {count}')
  if not 0 <= pid < count:
    raise BadInput(f'--process_id must be in [0, {count}) for --num_processes {count}, '
                   f'got {pid}')
  return Settings(address, count, pid)


def _split(address: str):
  host, _, port = address.rpartition(':')
  return host.strip('[]'), int(port)


def rendezvous(s: Settings, timeout: float) -> dict:
  """Meets every process of the job before JAX does; returns once all `s.num_processes`
  have come with the same count and distinct ids: the open connections, {process id:
  socket} (process 0: to every other process; the others: {0: to process 0}; {} for one
  process), which `Watch` keeps for the run. Raises BadInput (on every process that can be
  told) for a coordinator not reachable within `timeout` seconds, a process that does not
  come, a count that differs or an id given twice."""
  if s.num_processes == 1:
    return {}
  if s.process_id == 0:
    return _host(s, timeout)
  return {0: _join(s, timeout)}


def _host(s: Settings, timeout: float) -> dict:
  host, port = _split(s.coordinator_address)
  server = socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET, socket.SOCK_STREAM)
  server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
  try:
    try:
      server.bind(('::' if ':' in host else '', port))
    except OSError as e:
      raise BadInput(f'--distributed: process 0 cannot listen on port {port} ({e}): choose a '
                     'free port for --coordinator_address') from e
    server.listen(s.num_processes)
    deadline = time.monotonic() + timeout
    peers, problems = {}, []
    while len(peers) < s.num_processes - 1:
      left = deadline - time.monotonic()
      if left <= 0:
        break
      server.settimeout(left)
      try:
        conn, _ = server.accept()
      except socket.timeout:
        break
      conn.settimeout(max(1.0, left))
      try:
        pid, count = (int(x) for x in _readline(conn).split())
      except (OSError, ValueError):
        conn.close()
        continue
      if count != s.num_processes:
        problems.append(f'process {pid} was started with --num_processes {count}, process 0 '
                        f'with {s.num_processes}')
      if pid in peers or pid == 0:
        problems.append(f'process id {pid} was given to two processes')
        conn.sendall(f'error {problems[-1]}\n'.encode())
        conn.close()
        break
      peers[pid] = conn
      if problems:
        break
    absent = sorted(set(range(1, s.num_processes)) - set(peers))
    if absent and not problems:
      problems.append(f'process{"es" * (len(absent) > 1)} {", ".join(map(str, absent))} of '
                      f'{s.num_processes} did not reach the coordinator within {timeout:.0f} s: '
                      'start every process, each with its own --process_id, and check '
                      '--num_processes')
    reply = f'error {problems[0]}\n' if problems else 'ok\n'
    for conn in peers.values():
      try:
        conn.sendall(reply.encode())
        if problems:
          conn.settimeout(5.0)
          conn.recv(1)  # the peer closes first (its side keeps TIME_WAIT, not the coordinator's port).
      except OSError:
        pass
      if problems:
        conn.close()
    if problems:
      raise BadInput(f'--distributed: {problems[0]}')
    for conn in peers.values():
      conn.settimeout(None)
    return peers
  finally:
    server.close()


def _join(s: Settings, timeout: float) -> socket.socket:
  host, port = _split(s.coordinator_address)
  deadline, last = time.monotonic() + timeout, None
  while True:
    left = deadline - time.monotonic()
    if left <= 0:
      raise BadInput(f'--distributed: the coordinator {s.coordinator_address} (process 0) could '
                     f'not be reached within {timeout:.0f} s ({last}): start process 0, and check '
                     'the address and that its port is open to this host')
    try:
      conn = socket.create_connection((host, port), timeout=min(left, 5.0))
      break
    except OSError as e:
      last = e
      time.sleep(min(RETRY_S, max(left, 0)))
  conn.sendall(f'{s.process_id} {s.num_processes}\n'.encode())
  conn.settimeout(max(deadline - time.monotonic(), 1.0) + 5.0)
  try:
    reply = _readline(conn)
  except OSError as e:
    conn.close()
    raise BadInput(f'--distributed: no answer from the coordinator {s.coordinator_address} '
                   f'({e})') from e
  if reply != 'ok':
    conn.close()
    raise BadInput('--distributed: ' + (reply[len('error '):] if reply.startswith('error ')
                                        else f'the coordinator closed the connection ({reply!r})'))
  conn.settimeout(None)
  return conn


def _readline(conn) -> str:
  """One line from `conn`, read a byte at a time (no buffer keeps what follows it); '' at
  the end of the stream."""
  out = bytearray()
  while True:
    b = conn.recv(1)
    if not b or b == b'\n':
      return out.decode(errors='replace').strip()
    out += b


class Watch:
  """Watches the other processes of the job over the rendezvous connections (see the module
  docstring). Each process sends one line when it ends on its own: 'done' (its connection
  closing is then no news) or 'failed' (an unexpected error). Process 0 reads every other
  process; a connection that closes without 'done', or a 'failed', makes that process lost:
  process 0 tells the others at once ('lost PID WHY'), and every process that has not ended
  on its own within `GRACE_S` prints which process stopped and exits 3. The exit comes from
  a watcher thread with `os._exit`, since the main thread may be blocked in a collective."""

  def __init__(self, s: Settings, connections: dict):
    self.s, self.connections = s, connections
    self.finished = set()   # processes that said 'done'.
    self.lost = {}          # {process id: why} of the processes that stopped.
    self.ending = False     # this process ends on its own.
    self.lock = threading.Lock()
    self.news = threading.Condition(self.lock)
    for pid, conn in connections.items():
      threading.Thread(target=self._watch, args=(pid, conn), daemon=True,
                       name=f'msmgan-watch-{pid}').start()

  def _watch(self, pid: int, conn) -> None:
    while True:
      try:
        line = _readline(conn)
      except OSError:
        line = ''
      if line == 'done':
        with self.lock:
          self.finished.add(pid)
        if self.s.process_id != 0:
          return  # process 0 ends: nothing more to watch.
      elif line == 'failed':
        self._lose(pid, 'it stopped with an unexpected error: see its log')
      elif line.startswith('lost '):  # from process 0: which process stopped.
        other, _, why = line[len('lost '):].partition(' ')
        self._lose(int(other), why)
      elif not line:  # the connection closed.
        with self.lock:
          if pid in self.finished:
            return
        self._lose(pid, 'its connection closed: killed, lost or crashed')
        return
      # anything else: not ours to read; keep watching.

  def _lose(self, pid: int, why: str) -> None:
    with self.lock:
      if self.lost:
        return  # the first loss is the news.
      self.lost[pid] = why
      self.news.notify_all()
    if self.s.process_id == 0:
      for other, conn in self.connections.items():
        if other != pid:
          try:
            conn.sendall(f'lost {pid} {why}\n'.encode())
          except OSError:
            pass
    if pid != 0:  # process 0 says 'done' before it ends on its own: its loss is news at once
      # (and JAX's client aborts this process as soon as it too sees the service gone).
      time.sleep(GRACE_S)  # this process may be ending on its own (the same stop everywhere).
    with self.lock:
      if self.ending:
        return
      self.ending = True
    self.stop()

  def report(self) -> str:
    """What this process prints when it stops for a lost one (naming it), '' before."""
    if not self.lost:
      return ''
    pid, why = next(iter(self.lost.items()))
    return (f'stopped: process {pid} of the {self.s.num_processes} in this job stopped ({why}), '
            f'so process {self.s.process_id} stops too. The last checkpoint every process '
            'committed is intact: restart every process with the same command to resume from '
            'it.')

  def stop(self) -> None:
    """Prints which process stopped and exits 3 (`EXIT_HOST_LOST`) at once."""
    sys.stdout.flush()
    sys.stderr.write(self.report() + '\n')
    sys.stderr.flush()
    _exit(EXIT_HOST_LOST)

  def say(self, line: str) -> None:
    """Sends `line` to every process this one is connected to, and stops watching for
    losses: this process ends on its own."""
    with self.lock:
      self.ending = True
    for conn in self.connections.values():
      try:
        conn.sendall(f'{line}\n'.encode())
      except OSError:
        pass

  def wait_lost(self, seconds: float) -> bool:
    """Whether another process is known lost, waiting up to `seconds` for the news."""
    with self.lock:
      self.news.wait_for(lambda: bool(self.lost), timeout=seconds)
      return bool(self.lost)


_WATCH: Optional[Watch] = None


def end(code: int, exc_info=None) -> None:
  """Ends this process of a job started with explicit settings (nothing otherwise: returns).

  Exit code 0: tells the others it is done and returns (the normal exit follows). Another
  code, an error already reported: tells them and exits with it at once (`os._exit`: JAX's
  shutdown barrier at exit would wait for processes that may never come). An unexpected
  exception (`exc_info`, e.g. a collective failing because a peer died): waits up to
  `GRACE_S` for the news of a lost process, then exits 3 naming it, or else prints the
  traceback and exits 1."""
  w = _WATCH
  if w is None:
    if exc_info is not None:
      raise exc_info[1]
    return
  if code == 0 and exc_info is None:
    w.say('done')
    return
  if exc_info is None:
    w.say('done')  # a reported error or an agreed stop: every process ends its own way.
    sys.stdout.flush()
    sys.stderr.flush()
    _exit(code)
  w.say('failed')
  if w.wait_lost(GRACE_S):
    w.stop()
  traceback.print_exception(*exc_info)
  sys.stdout.flush()
  sys.stderr.flush()
  _exit(1)


def start(s: Settings, timeout: float = 300.0) -> None:
  """Initialises JAX's multi-controller runtime for this process: gloo collectives for CPU
  devices, our `rendezvous` where `s` is explicit (JAX's cluster detection otherwise), then
  `jax.distributed.initialize` (its heartbeat timeout `timeout` too: the fallback where a
  host vanishes without its connections closing), and the `Watch` that stops this process
  when another stops. Raises BadInput (exit 2) as `rendezvous` does."""
  global _WATCH
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  if not s.explicit:
    jax.distributed.initialize()  # coordinator, count and id from the cluster's environment.
    return
  connections = rendezvous(s, timeout)
  if connections:
    _WATCH = Watch(s, connections)
  seconds = int(max(timeout, 1))
  jax.distributed.initialize(s.coordinator_address, s.num_processes, s.process_id,
                             initialization_timeout=seconds,
                             heartbeat_timeout_seconds=max(seconds, 10))
