"""The evidence API's load balancer config (deploy/haproxy/haproxy.cfg) and Debian's HAProxy to run it."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import REPO

HAPROXY_CFG = REPO / "deploy" / "haproxy" / "haproxy.cfg"
# The only lines that name where things are: the LB's listener and the replicas it finds by DNS.
BIND = re.compile(r"^(?P<indent>\s*)bind :(?P<port>\d+)$", re.M)
SERVER_TEMPLATE = re.compile(
    r"^(?P<indent>\s*)server-template (?P<prefix>\S+) (?P<slots>\d+) (?P<host>[a-z0-9-]+):(?P<port>\d+) .*$", re.M
)


def haproxy_binary() -> tuple[str | None, str]:
    """Debian's haproxy, installed by `make haproxy` when missing; (None, why) when that is impossible."""
    found = shutil.which("haproxy") or next((p for p in ("/usr/sbin/haproxy",) if Path(p).exists()), None)
    if found:
        return found, ""
    out = subprocess.run(["make", "--no-print-directory", "-C", str(REPO), "haproxy"], capture_output=True, text=True)
    found = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
    return found, (out.stdout + out.stderr).strip()[-500:]


# HAProxy writes a `log stdout` line only if it gets the fd's write bit within 200 tries (fd.c,
# fd_write_frag_line); with two threads on two busy cores, one that holds it and is preempted makes the
# other drop its line. test_replicas compares the LB's log with the replicas' line by line (1 of 4
# runs under load lost one), so the test's LB runs one thread: every line is written.
GLOBAL = re.compile(r"^global\n", re.M)


def loopback_config(lb_port: int, upstream_ports: list[int]) -> str:
    """The repo's config with the listener on loopback, one server per local replica and one thread (above)."""
    text = HAPROXY_CFG.read_text()
    text, globals_ = GLOBAL.subn("global\n    nbthread 1\n", text)
    text, binds = BIND.subn(lambda m: f"{m['indent']}bind 127.0.0.1:{lb_port}", text)
    text, templates = SERVER_TEMPLATE.subn(
        lambda m: "\n".join(
            f"{m['indent']}server {m['prefix']}{i} 127.0.0.1:{p}" for i, p in enumerate(upstream_ports, 1)
        ),
        text,
    )
    assert (binds, templates, globals_) == (1, 1, 1), (
        "deploy/haproxy/haproxy.cfg no longer has one bind, one server-template and one global section"
    )
    return text


@contextmanager
def running_lb(haproxy_bin: str, upstream_ports: list[int], workdir: Path) -> Iterator[tuple[int, Path]]:
    """HAProxy on loopback with the repo's config (checked with -c first) in front of `upstream_ports`;
    yields (its port, its log file) and stops it afterwards."""
    from tests.api.support import free_port

    lb_port = free_port()
    cfg = workdir / "haproxy.cfg"
    cfg.write_text(loopback_config(lb_port, upstream_ports))
    check = subprocess.run([haproxy_bin, "-c", "-f", str(cfg)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    log = workdir / "haproxy.log"
    with open(log, "wb") as out:
        lb = subprocess.Popen([haproxy_bin, "-db", "-f", str(cfg)], stdout=out, stderr=subprocess.STDOUT,
                              start_new_session=True)  # fmt: skip
    try:
        yield lb_port, log
        assert lb.poll() is None, log.read_text(errors="replace")
    finally:
        lb.terminate()
        lb.wait(timeout=30)
