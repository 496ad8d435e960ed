"""Inside the remote-MX test bed's network namespace: loopback addresses, resolv.conf, and the bed's small servers.

Run by tests/remote_mx.py as `unshare --net --mount PYTHON remote_mx_ns.py CONFIG.json`; this
process holds the namespace (the bed's daemons join it with nsenter). Standard library only. It
1. brings `lo` up and puts the bed's addresses on it (Postfix's inet_interfaces must name a local
   interface address, TESTBED §2b),
2. bind-mounts CONFIG["resolv_conf"] over /etc/resolv.conf in this private mount namespace, so
   Postfix (which asks only the system resolver, on port 53) asks the bed's unbound,
3. serves each MTA-STS policy over HTTPS (RFC 8461 §3.3) with the bed's certificate,
4. answers Postfix's policy delegation protocol as a greylister (the first RCPT of each
   client/sender/recipient triplet: 450 4.7.1; later ones: no opinion), for the 4xx-then-accept MX,
5. holds a listening socket that never accepts (the blackhole MX: connections queue in the
   backlog and no greeting ever comes),
then prints `READY v6=0|1` and waits until its stdin is closed.
"""

from __future__ import annotations

import http.server
import json
import socket
import socketserver
import ssl
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any


def _ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True)


def _https(spec: dict[str, Any]) -> None:
    body = spec["body"].encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/.well-known/mta-sts.txt":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            print(f"https {spec['address']}: {format % args}", flush=True)

    server = http.server.ThreadingHTTPServer((spec["address"], spec["port"]), Handler)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(spec["cert"], spec["key"])
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()


def _greylist(address: str, port: int) -> None:
    seen: set[tuple[str, str, str]] = set()
    lock = threading.Lock()

    class Policy(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            attrs: dict[str, str] = {}
            for raw in self.rfile:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                if line:
                    name, _, value = line.partition("=")
                    attrs[name] = value
                    continue
                triplet = (attrs.get("client_address", ""), attrs.get("sender", ""), attrs.get("recipient", ""))
                with lock:
                    first = triplet not in seen
                    seen.add(triplet)
                action = "DEFER_IF_PERMIT 4.7.1 greylisted, try again later" if first else "DUNNO"
                print(f"greylist {triplet}: {action}", flush=True)
                self.wfile.write(f"action={action}\n\n".encode())
                self.wfile.flush()
                attrs = {}

    socketserver.ThreadingTCPServer.allow_reuse_address = True
    server = socketserver.ThreadingTCPServer((address, port), Policy)
    threading.Thread(target=server.serve_forever, daemon=True).start()


def main() -> None:
    config = json.loads(Path(sys.argv[1]).read_text())
    _ip("link", "set", "lo", "up")
    for address in config["addresses"]:
        _ip("addr", "add", f"{address}/32", "dev", "lo")
    v6 = True
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        v6 = False
    subprocess.run(["mount", "--bind", config["resolv_conf"], "/etc/resolv.conf"], check=True)
    for spec in config["https"]:
        _https(spec)
    _greylist(config["greylist"]["address"], config["greylist"]["port"])
    holes = []
    for spec in config["blackholes"]:
        s = socket.socket()
        s.bind((spec["address"], spec["port"]))
        s.listen(1)  # never accepted: the handshake completes into the backlog, then nothing
        holes.append(s)
    print(f"READY v6={int(v6)}", flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
