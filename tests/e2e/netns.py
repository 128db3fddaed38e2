"""Separate network hosts on one machine: Linux network namespaces joined by a bridge (``ip netns``, veth).

Each ``Host`` has its own network stack and address (10.x.y.n on the bridge); it reaches the others, and
the machine's PostgreSQL and Redis through ``Forwarder``s that listen on the bridge's address (the services
listen on 127.0.0.1 only, which another namespace cannot see). ``Host.cut()`` takes its link down: its
processes keep running but nothing reaches them and they reach nothing, as when a host drops off the network.
Needs root and iproute2.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
from pathlib import Path


def available() -> str | None:
    """None when namespaces can be made here, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if not shutil.which("ip"):
        return "iproute2 (ip) is not installed"
    name = f"exprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


def _ip(*args: str, ns: str | None = None) -> None:
    command = ["ip", *args] if ns is None else ["ip", "netns", "exec", ns, "ip", *args]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {result.stderr.strip()}")


class Network:
    """A bridge in the machine's namespace and the hosts attached to it."""

    def __init__(self) -> None:
        tag = os.getpid() % 200 + 20
        self.prefix = f"10.{tag}.77"
        self.bridge = f"exbr{os.getpid() % 100000}"
        self.gateway = f"{self.prefix}.1"
        self.hosts: list[Host] = []
        self.forwarders: list[Forwarder] = []
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")

    def host(self, name: str) -> Host:
        host = Host(self, name, f"{self.prefix}.{len(self.hosts) + 10}")
        self.hosts.append(host)
        return host

    def forward(self, port: int, to: tuple[str, int]) -> Forwarder:
        """Make ``to`` (a service on the machine's loopback) reachable at ``gateway:port`` from every host."""
        forwarder = Forwarder((self.gateway, port), to)
        self.forwarders.append(forwarder)
        return forwarder

    def close(self) -> None:
        for host in self.hosts:
            host.close()
        for forwarder in self.forwarders:
            forwarder.close()
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)


class Host:
    def __init__(self, net: Network, name: str, address: str) -> None:
        self.net, self.name, self.address = net, name, address
        suffix = f"{os.getpid() % 100000}{len(net.hosts)}"
        self.ns = f"ex{name}{suffix}"[:15]
        self.outside = f"exv{suffix}"[:15]
        inside = f"exi{suffix}"[:15]
        self.procs: list[subprocess.Popen[bytes]] = []
        _ip("netns", "add", self.ns)
        _ip("link", "add", self.outside, "type", "veth", "peer", "name", inside)
        _ip("link", "set", inside, "netns", self.ns)
        _ip("link", "set", self.outside, "master", net.bridge)
        _ip("link", "set", self.outside, "up")
        _ip("link", "set", "lo", "up", ns=self.ns)
        _ip("addr", "add", f"{address}/24", "dev", inside, ns=self.ns)
        _ip("link", "set", inside, "up", ns=self.ns)
        _ip("route", "add", "default", "via", net.gateway, ns=self.ns)

    def spawn(
        self, command: list[str], *, env: dict[str, str], log: Path, cwd: Path
    ) -> subprocess.Popen[bytes]:
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, *command],
                env=env,
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc

    def cut(self) -> None:
        """Off the network: the link to the bridge goes down (processes keep running, unreachable)."""
        _ip("link", "set", self.outside, "down")

    def reconnect(self) -> None:
        _ip("link", "set", self.outside, "up")

    def kill(self) -> None:
        for proc in self.procs:
            try:
                os.killpg(proc.pid, 9)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)
        self.procs.clear()

    def close(self) -> None:
        self.kill()
        subprocess.run(["ip", "link", "del", self.outside], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)


class Forwarder:
    """A TCP relay: connections to ``listen`` are joined to ``to``, byte for byte, both ways."""

    def __init__(self, listen: tuple[str, int], to: tuple[str, int]) -> None:
        self.to = to
        self.server = socket.create_server(listen, reuse_port=False)
        self.server.settimeout(0.5)
        self.open = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while self.open:
            try:
                client, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.to, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.open = False
        self.server.close()
