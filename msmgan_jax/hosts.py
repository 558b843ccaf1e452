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
"""
import dataclasses
import os
import socket
import time
from typing import Optional

from msmgan_jax.errors import BadInput

ENV = ('JAX_COORDINATOR_ADDRESS', 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID')
RETRY_S = 0.2  # between a process's attempts to reach the coordinator.


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


def rendezvous(s: Settings, timeout: float) -> None:
  """Meets every process of the job before JAX does; returns once all `s.num_processes`
  have come with the same count and distinct ids. Raises BadInput (on every process that
  can be told) for a coordinator not reachable within `timeout` seconds, a process that
  does not come, a count that differs or an id given twice."""
  if s.num_processes == 1:
    return
  if s.process_id == 0:
    _host(s, timeout)
  else:
    _join(s, timeout)


def _host(s: Settings, timeout: float) -> None:
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
        pid, count = (int(x) for x in conn.makefile().readline().split())
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
        conn.settimeout(5.0)
        conn.recv(1)  # the peer closes first (its side keeps TIME_WAIT, not the coordinator's port).
      except OSError:
        pass
      conn.close()
    if problems:
      raise BadInput(f'--distributed: {problems[0]}')
  finally:
    server.close()


def _join(s: Settings, timeout: float) -> None:
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
  with conn:
    conn.sendall(f'{s.process_id} {s.num_processes}\n'.encode())
    conn.settimeout(max(deadline - time.monotonic(), 1.0) + 5.0)
    try:
      reply = conn.makefile().readline().strip()
    except OSError as e:
      raise BadInput(f'--distributed: no answer from the coordinator {s.coordinator_address} '
                     f'({e})') from e
  if reply != 'ok':
    raise BadInput('--distributed: ' + (reply[len('error '):] if reply.startswith('error ')
                                        else f'the coordinator closed the connection ({reply!r})'))


def start(s: Settings, timeout: float = 300.0) -> None:
  """Initialises JAX's multi-controller runtime for this process: gloo collectives for CPU
  devices, our `rendezvous` where `s` is explicit (JAX's cluster detection otherwise), then
  `jax.distributed.initialize`. Raises BadInput (exit 2) as `rendezvous` does."""
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  if not s.explicit:
    jax.distributed.initialize()  # coordinator, count and id from the cluster's environment.
    return
  rendezvous(s, timeout)
  jax.distributed.initialize(s.coordinator_address, s.num_processes, s.process_id,
                             initialization_timeout=int(max(timeout, 1)))

