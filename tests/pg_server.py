"""A throwaway PostgreSQL server for tests: unix socket only, in a temp folder, gone afterwards.

Use it in a test module with::

    from pg_server import postgres_url  # noqa: F401  (a pytest fixture)

    def test_something(postgres_url):   # e.g. postgresql+psycopg2://postgres@/crossrec?host=/tmp/pgab12cd&port=23456
        engine = sqlalchemy.create_engine(postgres_url)

``postgres_url`` is session-scoped: each test module that imports it gets one server (started on
first use, stopped when the session ends), shared by that module's tests. Outside pytest,
``with postgres_server() as url: ...`` does the same.

The binaries come from PATH (``initdb``), else the highest ``/usr/lib/postgresql/*/bin``; where
there are none the fixture skips and says how to get them (``.ci/run`` installs Debian's
``postgresql`` package). PostgreSQL refuses to run as root, so as root ``initdb`` and ``pg_ctl``
run as the ``postgres`` system user (created by that package) through ``runuser``, in a folder
owned by that user; the server trusts every local connection, and clients (of any OS user)
connect as the database superuser ``postgres``. As any other user they run directly and the
database superuser is that user's name.

The server listens on no TCP address (``listen_addresses=''``): only on a socket in a short
folder under /tmp, named after the port number, which is derived from the pid so that parallel
pytest-xdist workers each get their own. Durability is switched off (fsync, synchronous commit):
the data is thrown away anyway.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

FIX = "install Debian's postgresql package (apt-get install postgresql); .ci/run does this"
DB_NAME = "crossrec"
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL binaries (or, as root, no unprivileged user to run them as). Tests skip."""


class PostgresStartError(RuntimeError):
    """The binaries are there but the server did not come up; the message has the log's tail."""


def find_bin_dir() -> Path:
    """The folder with initdb, pg_ctl and createdb: initdb's (resolved) folder on PATH, else the
    highest-versioned /usr/lib/postgresql/*/bin. Raises PostgresUnavailable where neither has one."""
    candidates = []
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)

    def version(path: str) -> tuple[int, ...]:
        name = Path(path).parent.name
        return tuple(int(p) for p in re.findall(r"\d+", name)) or (0,)

    candidates += [Path(p).parent for p in sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version, reverse=True)]
    for d in candidates:
        if all(os.access(d / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")):
            return d
    raise PostgresUnavailable(f"PostgreSQL's initdb/pg_ctl not found on PATH or in /usr/lib/postgresql/*/bin: {FIX}")


def _run_as() -> tuple[list[str], str, pwd.struct_passwd | None]:
    """(command prefix, database superuser, OS account that owns the server or None for ourselves)."""
    if os.geteuid() != 0:
        return [], pwd.getpwuid(os.geteuid()).pw_name, None
    try:
        account = pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresUnavailable(f"running as root, and PostgreSQL refuses to; no 'postgres' system user to run it as: {FIX}") from None
    if account.pw_uid == 0:
        raise PostgresUnavailable("running as root, and the 'postgres' user has uid 0; PostgreSQL refuses to run as root")
    runuser = shutil.which("runuser") or shutil.which("runuser", path="/usr/sbin:/sbin")
    if runuser:
        return [runuser, "-u", "postgres", "--"], "postgres", account
    setpriv = shutil.which("setpriv") or shutil.which("setpriv", path="/usr/bin:/bin")
    if setpriv:
        return [setpriv, f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}", "--init-groups", "--"], "postgres", account
    raise PostgresUnavailable("running as root, and neither runuser nor setpriv is there to run PostgreSQL as 'postgres'")


def _tail(path: Path, n: int = 40) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as e:
        return f"(no log: {e})"
    return "\n".join(lines[-n:]) or "(log empty)"


def _port() -> int:
    """A port number for the socket's name. Nothing listens on TCP, and every server has its own
    socket folder, so this only has to be a valid number; per-pid keeps names (and SysV shared
    memory keys, which PostgreSQL derives from it) apart between concurrent workers anyway."""
    return 20000 + os.getpid() % 40000


def _stop(pg_ctl: Path, data: Path, prefix: list[str], env: dict, cwd: Path) -> None:
    """Fast shutdown, then immediate, then SIGKILL of the postmaster from postmaster.pid."""
    for mode in ("fast", "immediate"):
        try:
            r = subprocess.run([*prefix, str(pg_ctl), "-D", str(data), "-m", mode, "-w", "-t", str(STOP_TIMEOUT_S), "stop"],
                               cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=STOP_TIMEOUT_S + 10)
        except subprocess.TimeoutExpired:
            continue
        if r.returncode == 0 or not (data / "postmaster.pid").exists():
            return
    with contextlib.suppress(OSError, ValueError, IndexError):
        pid = int((data / "postmaster.pid").read_text().splitlines()[0])
        os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def postgres_server(db_name: str = DB_NAME) -> Iterator[str]:
    """Start a throwaway server and yield a SQLAlchemy URL for a fresh database on it; stop the
    server and delete its folder on exit, whatever happened. Raises PostgresUnavailable where
    PostgreSQL is not installed, PostgresStartError where it does not come up."""
    bin_dir = find_bin_dir()
    prefix, db_user, account = _run_as()
    port = _port()
    # short on purpose: the socket path /tmp/pgXXXXXXXX/.s.PGSQL.NNNNN must stay under ~107 bytes
    root = Path(tempfile.mkdtemp(prefix="pg", dir="/tmp"))
    data, log = root / "data", root / "server.log"
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "TZ": "UTC"}
    env.pop("PGDATA", None)
    started = False
    try:
        if account is not None:
            os.chown(root, account.pw_uid, account.pw_gid)
        os.chmod(root, 0o755)  # clients of other OS users reach the socket (mode 0777) inside it
        r = subprocess.run(
            [*prefix, str(bin_dir / "initdb"), "-D", str(data), "-U", db_user, "--auth=trust", "--no-locale",
             "-E", "UTF8", "--no-sync", "--no-instructions"],
            cwd=root, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=START_TIMEOUT_S,
        )
        if r.returncode != 0:
            raise PostgresStartError(f"initdb failed ({r.returncode}) in {data}:\n{(r.stdout + r.stderr)[-4000:]}")
        options = (f"-k {root} -c listen_addresses='' -p {port} -c fsync=off -c synchronous_commit=off "
                   "-c full_page_writes=off -c shared_buffers=16MB -c max_connections=50")
        cmd = [*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options,
               "-w", "-t", str(START_TIMEOUT_S), "start"]
        started = True  # from here on a half-started server is stopped in finally
        try:
            r = subprocess.run(cmd, cwd=root, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                               timeout=START_TIMEOUT_S + 15)
            failure = None if r.returncode == 0 else f"pg_ctl start exited {r.returncode}: {(r.stdout + r.stderr).strip()}"
        except subprocess.TimeoutExpired:
            failure = f"pg_ctl start did not return within {START_TIMEOUT_S + 15}s"
        if failure:
            raise PostgresStartError(f"PostgreSQL did not come up ({failure}); last lines of {log}:\n{_tail(log)}")
        r = subprocess.run([str(bin_dir / "createdb"), "-h", str(root), "-p", str(port), "-U", db_user, db_name],
                           cwd=root, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise PostgresStartError(f"createdb {db_name} failed: {(r.stdout + r.stderr).strip()}\nserver log:\n{_tail(log)}")
        yield f"postgresql+psycopg2://{db_user}@/{db_name}?host={root}&port={port}"
    finally:
        try:
            if started:
                _stop(bin_dir / "pg_ctl", data, prefix, env, root)
        finally:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """SQLAlchemy URL of a fresh database on a throwaway unix-socket-only PostgreSQL server
    (``postgresql+psycopg2://USER@/crossrec?host=/tmp/pgXXXXXXXX&port=NNNNN``). Skips where
    PostgreSQL is not installed."""
    try:
        server = postgres_server()
        url = server.__enter__()
    except PostgresUnavailable as e:
        pytest.skip(str(e))
    try:
        yield url
    finally:
        server.__exit__(None, None, None)
