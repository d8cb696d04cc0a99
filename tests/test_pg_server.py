"""The throwaway PostgreSQL server of tests/pg_server.py: reachable from several processes through
one URL, usable as an Optuna storage, unix socket only, and gone afterwards whatever happens."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

import pg_server
from pg_server import postgres_url  # noqa: F401  (the fixture)


def _socket_dir(url: str) -> Path:
    return Path(parse_qs(urlsplit(url).query)["host"][0])


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting for init to reap it does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _python(code: str, *args: str, timeout: float = 120) -> str:
    """Run ``code`` in a fresh interpreter (another process, as the experiment workers will be)."""
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"child failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r.stdout


WRITER = """
    import sys
    import sqlalchemy as sa
    url, who = sys.argv[1], sys.argv[2]
    engine = sa.create_engine(url)
    with engine.begin() as c:
        c.execute(sa.text("INSERT INTO rows (who, n) VALUES (:who, :n)"), [{"who": who, "n": n} for n in range(5)])
    with engine.connect() as c:
        print(sorted(set(c.execute(sa.text("SELECT who FROM rows")).scalars())))
    engine.dispose()
"""


@pytest.mark.slow
# heartbeat_interval (stale-trial detection, which the coming two-process test wants) is still
# "experimental" in Optuna 5.0, and pyproject turns warnings into errors
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_two_processes_share_tables_and_an_optuna_study(postgres_url):  # noqa: F811
    import optuna
    import sqlalchemy as sa

    assert postgres_url.startswith("postgresql+psycopg2://") and len(str(_socket_dir(postgres_url))) < 40
    engine = sa.create_engine(postgres_url)
    try:
        with engine.begin() as c:
            assert c.execute(sa.text("SHOW listen_addresses")).scalar() == ""  # no TCP at all
            c.execute(sa.text("CREATE TABLE rows (id serial PRIMARY KEY, who text NOT NULL, n int NOT NULL)"))
            c.execute(sa.text("INSERT INTO rows (who, n) VALUES ('parent', 0)"))

        # two writers at once, each in its own process, through the same URL
        procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(WRITER), postgres_url, who],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for who in ("w1", "w2")]
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
            assert {"parent", p.args[-1]} <= set(ast.literal_eval(out))  # each sees the parent's row and its own
        with engine.connect() as c:
            counts = dict(c.execute(sa.text("SELECT who, count(*) FROM rows GROUP BY who")).all())
        assert counts == {"parent": 1, "w1": 5, "w2": 5}

        # an Optuna study on it, seen from another process
        storage = optuna.storages.RDBStorage(postgres_url, heartbeat_interval=1, grace_period=3)
        study = optuna.create_study(storage=storage, study_name="x")
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study.optimize(lambda t: t.suggest_float("a", 0, 1) ** 2, n_trials=2)
        storage.engine.dispose()
        out = _python("""
            import sys, optuna
            study = optuna.load_study(study_name="x", storage=sys.argv[1])
            print(len(study.trials), sorted(t.state.name for t in study.trials))
        """, postgres_url)
        assert out.split()[0] == "2" and out.count("COMPLETE") == 2, out
    finally:
        engine.dispose()


@pytest.mark.slow
def test_server_is_stopped_and_removed_when_the_body_fails():
    try:
        pg_server.find_bin_dir()
    except pg_server.PostgresUnavailable as e:
        pytest.skip(str(e))
    with pytest.raises(ZeroDivisionError), pg_server.postgres_server() as url:
        root = _socket_dir(url)
        pid = int((root / "data" / "postmaster.pid").read_text().splitlines()[0])
        1 / 0
    assert not root.exists()
    deadline = time.monotonic() + 10  # pg_ctl stop -w returns when postmaster.pid is gone, just before the exit
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _running(pid)


@pytest.mark.slow
def test_a_server_that_does_not_come_up_says_why(monkeypatch):
    try:
        pg_server.find_bin_dir()
    except pg_server.PostgresUnavailable as e:
        pytest.skip(str(e))
    monkeypatch.setattr(pg_server, "_port", lambda: 99999)  # out of range: the postmaster exits at once
    with pytest.raises(pg_server.PostgresStartError, match=r"did not come up(?s:.*)99999") as failed:
        with pg_server.postgres_server():
            pass
    log = Path(re.search(r"last lines of (\S+):", str(failed.value))[1])  # the log's tail is in the message
    assert log.name == "server.log" and not log.parent.exists()  # and its folder is gone


def test_missing_binaries_name_the_fix(monkeypatch):
    monkeypatch.setattr(pg_server.shutil, "which", lambda *a, **k: None)
    monkeypatch.setattr(pg_server.glob, "glob", lambda *a, **k: [])
    with pytest.raises(pg_server.PostgresUnavailable, match=r"postgresql package.*\.ci/run"):
        pg_server.find_bin_dir()
