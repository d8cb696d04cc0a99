"""Shared fixtures. Threads are pinned to one: on the shared 2-core machines torch's default
pool was measured 17x slower per step under load, and one thread makes runs repeatable."""

from __future__ import annotations

import os

import pytest
import torch

from crossrec_lit.data import Synthetic
from crossrec_lit.data.sources import default_data_root
from crossrec_lit.runtime import quiet_lightning_logs
from crossrec_lit.training import quiet_trainer as _package_quiet_trainer

torch.set_num_threads(int(os.environ.get("CROSSREC_NUM_THREADS", "1")))
quiet_lightning_logs()


@pytest.fixture(scope="session")
def tiny_source() -> Synthetic:
    """Two small synthetic stores (A: source, B: target) with strong shared structure."""
    return Synthetic(n_users=600, n_items=(200, 150), overlap=0.6, dim=8, interactions_per_user=(10, 8), seed=3)


@pytest.fixture(scope="session")
def data_root():
    """The real Amazon P5 folder, or skip with the reason."""
    root = default_data_root()
    if root is None or not (root / "Toys_user_sequence.txt.gz").exists():
        pytest.skip("real Amazon P5 data not found: set CROSSREC_DATA or place it in ../shared/data/amazon_p5")
    return root


def quiet_trainer(**kwargs):
    """The package's quiet trainer, deterministic, with Lightning's own epoch default (tests bound
    their runs with max_epochs or max_steps)."""
    return _package_quiet_trainer(**{"max_epochs": None, "deterministic": True, **kwargs})


# ---------------------------------------------------------------------- no network in tests
class NetworkAccessBlocked(OSError):
    """Raised by the autouse ``_block_network`` fixture when a test reaches beyond this machine.

    An ``OSError``, like a real unreachable network, so code that already copes with being offline
    keeps working; code that does not fails with this message instead of hanging on a timeout.
    """


_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}


def _is_local_host(host) -> bool:
    """Loopback (127.0.0.0/8, ::1, IPv4-mapped loopback), the unspecified address, or localhost."""
    import ipaddress
    import socket

    if host is None:
        return True  # getaddrinfo(None, port): a local (passive) address
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    name = str(host).strip().rstrip(".").lower()
    if name in ("",) or name in _LOCAL_NAMES or name.endswith(".localhost") or name == socket.gethostname().lower():
        # the machine's own name resolves locally; connecting to a non-loopback address it maps
        # to is still refused by the connect check
        return True
    try:
        ip = ipaddress.ip_address(name.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        return False  # any other host name would need DNS: not local
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or ip.is_unspecified or (mapped is not None and mapped.is_loopback)


def _blocked(what: str, target) -> NetworkAccessBlocked:
    return NetworkAccessBlocked(
        f"network access is blocked in tests: {what} {target!r} is not a loopback address "
        "(tests/conftest.py::_block_network allows only 127.0.0.0/8, ::1, localhost and AF_UNIX)"
    )


@pytest.fixture(autouse=True, scope="session")
def _block_network():
    """Refuse every connection to a non-loopback address, for every test (session-wide, so that
    session fixtures are covered too). Loopback TCP/UDP and AF_UNIX sockets keep working: the site
    test serves the built book on 127.0.0.1 and Lightning's DDP tests talk over loopback with gloo."""
    import socket

    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_create_connection, real_getaddrinfo = socket.create_connection, socket.getaddrinfo

    def check(sock, address, what):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple) and not _is_local_host(address[0]):
            raise _blocked(what, address[:2])

    def connect(self, address):
        check(self, address, "connect to")
        return real_connect(self, address)

    def connect_ex(self, address):
        check(self, address, "connect to")
        return real_connect_ex(self, address)

    def create_connection(address, *args, **kwargs):
        if not _is_local_host(address[0]):
            raise _blocked("create_connection to", tuple(address[:2]))
        return real_create_connection(address, *args, **kwargs)

    def getaddrinfo(host, *args, **kwargs):
        if not _is_local_host(host):
            raise _blocked("getaddrinfo for", host)
        return real_getaddrinfo(host, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", connect)
        mp.setattr(socket.socket, "connect_ex", connect_ex)
        mp.setattr(socket, "create_connection", create_connection)
        mp.setattr(socket, "getaddrinfo", getaddrinfo)
        yield
