"""The first code that runs inside the code sandbox: set-up, privilege drop, run.

`sandbox.py` starts this file as a script (`python -I _sandbox_init.py ...`), in
new namespaces where the machine has them. It stays standard-library only and
imports nothing from score_jax: it must not depend on the caller's environment.

Steps, in this order:
  1. Read the program and the tests from the launcher's private temporary
     directory (the current directory).
  2. With `--isolate=ns` (we are pid 1 of a new pid namespace, in a new mount
     and network namespace): remount every mount read-only, mount a small fresh
     tmpfs on /tmp and make /tmp/work the working directory. Nothing outside
     that tmpfs can be written, whatever its permissions say.
  3. Fork. The parent stays as a tiny init: it reaps every child and exits with
     the candidate's status (128 + signal when it died of a signal). When pid 1
     of a pid namespace exits, the kernel kills everything left in it.
  4. The child sets the resource limits, drops privileges (to `--uid/--gid`
     when real root; otherwise clears every capability of its user namespace),
     sets no_new_privs, closes stray descriptors, then runs the program and the
     tests in one global namespace and reports on the result descriptor.

The pass record `passed <nonce>` is written only by the code below after
`exec(tests)` has returned. The nonce is read from a pipe at that moment; see
`sandbox.py` for why a program that exits early or prints cannot forge it.
"""
import ctypes
import os
import resource
import sys

_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REMOUNT, _MS_BIND = 32, 4096
_MS_NOATIME, _MS_NODIRATIME, _MS_RELATIME = 1024, 2048, 1 << 21
_PR_CAPBSET_DROP, _PR_SET_NO_NEW_PRIVS = 24, 38
_OPTION_FLAGS = {'nosuid': _MS_NOSUID, 'nodev': _MS_NODEV, 'noexec': _MS_NOEXEC,
                 'noatime': _MS_NOATIME, 'nodiratime': _MS_NODIRATIME,
                 'relatime': _MS_RELATIME}
_LIBC = ctypes.CDLL(None, use_errno=True)


def _parse_args(argv):
  """Parses `--key=value` arguments into a dict of strings."""
  args = {}
  for arg in argv:
    key, sep, value = arg.partition('=')
    if not key.startswith('--') or not sep:
      raise SystemExit(f'_sandbox_init.py: bad argument {arg!r}; want --key=value')
    args[key[2:]] = value
  return args


def _mount(source, target, fstype, flags, data):
  """Calls mount(2); raises OSError on failure."""
  enc = lambda s: None if s is None else s.encode()
  if _LIBC.mount(enc(source), enc(target), enc(fstype), flags, enc(data)) != 0:
    err = ctypes.get_errno()
    raise OSError(err, f'mount {target}: {os.strerror(err)}')


def _remount_everything_readonly():
  """Makes every mount of this (private) mount namespace read-only."""
  with open('/proc/self/mountinfo', encoding='utf-8') as f:
    lines = f.read().splitlines()
  for line in lines:
    fields = line.split()
    target, options = fields[4], fields[5].split(',')
    if 'ro' in options:
      continue
    target = target.encode().decode('unicode_escape')  # Octal escapes (\040).
    flags = _MS_REMOUNT | _MS_BIND | _MS_RDONLY
    for option in options:
      flags |= _OPTION_FLAGS.get(option, 0)
    try:
      _mount(None, target, None, flags, None)
    except OSError as e:
      raise SystemExit(f'_sandbox_init.py: cannot make {target} read-only: {e}')


def _make_workdir(tmpfs_bytes, uid, gid):
  """Returns /tmp/work on a fresh tmpfs, owned by uid:gid, the one writable dir.

  The tmpfs goes on /tmp, /tmp/work is bind-mounted onto itself, then the
  tmpfs's own mount is made read-only: writes elsewhere in /tmp fail too.
  """
  flags = _MS_NOSUID | _MS_NODEV
  _mount('tmpfs', '/tmp', 'tmpfs', flags, f'size={tmpfs_bytes},mode=755')
  os.mkdir('/tmp/work', 0o700)
  if uid >= 0:
    os.chown('/tmp/work', uid, gid)
  _mount('/tmp/work', '/tmp/work', None, _MS_BIND, None)
  _mount(None, '/tmp', None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | flags, None)
  return '/tmp/work'


def _set_limits(args):
  """Applies the resource limits given by the launcher to this process."""
  cpu = int(args['cpu_s'])
  for name, soft, hard in [('RLIMIT_CPU', cpu, cpu + 1),
                           ('RLIMIT_AS', int(args['memory_bytes']), None),
                           ('RLIMIT_FSIZE', int(args['file_size_bytes']), None),
                           ('RLIMIT_NPROC', int(args['nproc']), None),
                           ('RLIMIT_NOFILE', int(args['nofile']), None),
                           ('RLIMIT_CORE', 0, None)]:
    resource.setrlimit(getattr(resource, name),
                       (soft, soft if hard is None else hard))


def _drop_privileges(uid, gid):
  """Leaves root behind for good: to uid/gid, or to no capabilities at all."""
  if os.geteuid() == 0:
    for cap in range(64):  # Empty the bounding set: no exec can regain a cap.
      _LIBC.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0)
    if uid >= 0:
      os.setgroups([])
      os.setgid(gid)
      os.setuid(uid)
    else:  # Root of our own user namespace: keep the uid, drop every cap.
      header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
      data = (ctypes.c_uint32 * 6)()
      if _LIBC.capset(header, data) != 0:
        raise OSError(ctypes.get_errno(), 'capset')
  if _LIBC.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
    raise OSError(ctypes.get_errno(), 'prctl(PR_SET_NO_NEW_PRIVS)')
  if uid >= 0 and (os.getuid() != uid or os.geteuid() != uid):
    raise SystemExit('_sandbox_init.py: privilege drop did not take')
  with open('/proc/self/status', encoding='utf-8') as f:
    if 'CapEff:\t0000000000000000' not in f.read():
      raise SystemExit('_sandbox_init.py: capabilities remain after the drop')


def _report(fd, status, detail=''):
  """Writes one line `status detail` to the result descriptor."""
  detail = ' '.join(detail.split())[:500]
  os.write(fd, f'{status} {detail}\n'.encode('utf-8', 'replace'))


def _run_candidate(program, tests, args, workdir):
  """The sandboxed child: limits, privilege drop, program, tests, report."""
  nonce_fd, result_fd = int(args['nonce_fd']), int(args['result_fd'])
  uid, gid = int(args['uid']), int(args['gid'])
  os.chdir(workdir)
  os.environ.clear()
  os.environ.update(PATH='/usr/local/bin:/usr/bin:/bin', HOME=workdir,
                    TMPDIR=workdir, LANG='C.UTF-8', OMP_NUM_THREADS='1')
  _set_limits(args)
  _drop_privileges(uid, gid)
  os.closerange(3, min(nonce_fd, result_fd))
  os.closerange(max(nonce_fd, result_fd) + 1, int(args['nofile']))
  _report(result_fd, 'started')  # Set-up done: from here on, candidate code.
  try:
    program_code = compile(program, 'program.py', 'exec')
    tests_code = compile(tests, 'tests.py', 'exec')
  except (SyntaxError, ValueError) as e:
    _report(result_fd, 'syntax_error', f'{type(e).__name__}: {e}')
    os._exit(1)
  namespace = {'__name__': '__candidate__', '__builtins__': __builtins__}
  try:
    exec(program_code, namespace)  # pylint: disable=exec-used
    exec(tests_code, namespace)  # pylint: disable=exec-used
  except AssertionError as e:
    _report(result_fd, 'failed', f'AssertionError: {e}')
    os._exit(1)
  except SystemExit as e:
    _report(result_fd, 'failed', f'SystemExit({e.code!r}) before the tests ended')
    os._exit(1)
  except BaseException as e:  # pylint: disable=broad-except
    import traceback  # pylint: disable=g-import-not-at-top
    traceback.print_exc()
    _report(result_fd, 'runtime_error', f'{type(e).__name__}: {e}')
    os._exit(1)
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except BaseException:  # pylint: disable=broad-except
      pass
  nonce = os.read(nonce_fd, 256).decode('ascii', 'replace').strip()
  _report(result_fd, 'passed', nonce)
  os._exit(0)


def _supervise(child):
  """Init of the sandbox: reaps children; returns the candidate's status."""
  while True:
    try:
      pid, status = os.wait()
    except ChildProcessError:
      return 1
    if pid == child:
      if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
      return os.WEXITSTATUS(status)


def main():
  args = _parse_args(sys.argv[1:])
  uid, gid = int(args['uid']), int(args['gid'])
  with open('program.py', encoding='utf-8') as f:
    program = f.read()
  with open('tests.py', encoding='utf-8') as f:
    tests = f.read()
  if args['isolate'] == 'ns':
    _remount_everything_readonly()
    workdir = _make_workdir(int(args['tmpfs_bytes']), uid, gid)
  else:
    workdir = os.getcwd()
  child = os.fork()
  if child == 0:
    try:
      _run_candidate(program, tests, args, workdir)
    except BaseException as e:  # pylint: disable=broad-except
      print(f'_sandbox_init.py: set-up failed: {e!r}', file=sys.stderr)
    os._exit(1)  # Never fall back into the supervisor's code.
  os.close(int(args['nonce_fd']))
  os.close(int(args['result_fd']))
  os._exit(_supervise(child))


if __name__ == '__main__':
  main()
