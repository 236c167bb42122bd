"""Worker hosts of the tests' own: a network namespace joined to this host by a veth pair.

A worker started inside the namespace reaches the database only over the pair's link, so
the test can cut that link (a host losing its network: nothing is refused, packets just stop)
and heal it. The namespace, the link and its addresses exist only for the test; they are
removed on exit. Needs root (or CAP_NET_ADMIN); ``available()`` says why not, when not.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=check)


def available() -> str | None:
    """None when namespaces can be made here, else the reason they cannot."""
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "making network namespaces needs root"
    name = f"pgqchk{uuid.uuid4().hex[:6]}"
    result = _ip("netns", "add", name, check=False)
    if result.returncode != 0:
        return f"the kernel refuses network namespaces here: {result.stderr.strip()}"
    _ip("netns", "del", name, check=False)
    return None


class Host:
    """A network namespace with one link to this host: 10.<a>.<b>.2 inside, .1 outside."""

    def __init__(self, index: int) -> None:
        tag = uuid.uuid4().hex[:5]
        self.name = f"pgq{tag}{index}"
        self.outside = f"vh{tag}{index}"[:15]
        self.inside = f"vn{tag}{index}"[:15]
        block = 200 + (os.getpid() + index) % 50
        self.host_address = f"10.{block}.{index}.1"
        self.address = f"10.{block}.{index}.2"
        self.subnet = f"10.{block}.{index}.0/30"

    def __enter__(self) -> "Host":
        _ip("netns", "add", self.name)
        try:
            _ip("link", "add", self.outside, "type", "veth", "peer", "name", self.inside)
            _ip("link", "set", self.inside, "netns", self.name)
            _ip("addr", "add", f"{self.host_address}/30", "dev", self.outside)
            _ip("link", "set", self.outside, "up")
            self.run("ip", "addr", "add", f"{self.address}/30", "dev", self.inside)
            self.run("ip", "link", "set", self.inside, "up")
            self.run("ip", "link", "set", "lo", "up")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        _ip("link", "del", self.outside, check=False)
        _ip("netns", "del", self.name, check=False)

    def command(self, *argv: str) -> list[str]:
        """``argv`` run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(*argv), capture_output=True, text=True, timeout=30, check=True)

    def cut(self) -> None:
        """The host loses its network: the link goes down, every packet is dropped silently."""
        _ip("link", "set", self.outside, "down")

    def heal(self) -> None:
        _ip("link", "set", self.outside, "up")


def serve_on(server_dir: Path, addresses: list[str], subnets: list[str]) -> None:
    """Make an embedded test server listen on ``addresses`` too and accept password logins
    from ``subnets`` (takes effect at its next start)."""
    data = server_dir / "data"
    conf = data / "postgresql.conf"
    text = conf.read_text()
    text += f"\nlisten_addresses = '{','.join(['127.0.0.1', *addresses])}'\n"
    conf.write_text(text)
    hba = data / "pg_hba.conf"
    lines = hba.read_text()
    for subnet in subnets:
        lines += f"\nhost all all {subnet} scram-sha-256\n"
    hba.write_text(lines)
