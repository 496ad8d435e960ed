"""A small authoritative DNS server process for tests: serves zone files over UDP and TCP on loopback.

Usage:

    python tests/dnsserver.py [--host 127.0.0.1] [--port 0] [--behaviour NAME=MODE ...] ZONEFILE...

Each zone file needs an `$ORIGIN` line (or is named `<origin>.zone`) and an SOA record. The server
answers from the zone with the longest matching origin: records (with CNAME chasing inside the
served zones, at most 8 links), wildcards (RFC 4592, simple form), NODATA and NXDOMAIN with the
zone's SOA in the authority section (RFC 2308), and NXDOMAIN without SOA for names outside every
zone. UDP answers larger than the client's EDNS payload (512 without EDNS) come back truncated
(TC=1), so clients retry over TCP (RFC 7766).

`--behaviour NAME=MODE` makes the server misbehave for NAME and every name below it, to test
how clients cope with hostile or broken servers. Modes:

    servfail   RCODE 2          refused     RCODE 5          timeout    no answer at all
    garbage    random-looking bytes that keep the query id (a malformed message)
    shortheader  three bytes      wrongid    a correct answer with a different message id
    badlabel   a reply whose answer name uses a compression pointer loop
    truncate   TC=1 over UDP, and the TCP connection is closed without an answer

When the sockets are bound it prints `PORT <n>` on stdout (and flushes), then serves until
SIGTERM or SIGINT. With `--port 0` it picks a free port for which UDP and TCP are both free.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone

MAX_CNAME_LINKS = 8
MODES = frozenset(
    {"servfail", "refused", "timeout", "garbage", "shortheader", "wrongid", "badlabel", "truncate"}
)


@dataclass(frozen=True)
class Behaviour:
    name: dns.name.Name
    mode: str


def load_zone(path: Path) -> dns.zone.Zone:
    text = path.read_text(encoding="utf-8")
    origin: str | None = None
    if "$ORIGIN" not in text:
        origin = path.name.removesuffix(".zone")
    return dns.zone.from_text(text, origin=origin, relativize=False, check_origin=True)


class Authority:
    """Answers queries from a set of zones; no I/O."""

    def __init__(self, zones: list[dns.zone.Zone], behaviours: list[Behaviour]) -> None:
        self.zones = sorted(zones, key=lambda z: len(z.origin or dns.name.root), reverse=True)
        self.behaviours = behaviours

    def zone_for(self, name: dns.name.Name) -> dns.zone.Zone | None:
        for zone in self.zones:
            assert zone.origin is not None
            if name.is_subdomain(zone.origin):
                return zone
        return None

    def behaviour_for(self, name: dns.name.Name) -> str | None:
        for b in self.behaviours:
            if name.is_subdomain(b.name):
                return b.mode
        return None

    @staticmethod
    def _node(zone: dns.zone.Zone, name: dns.name.Name) -> dns.node.Node | None:
        node = zone.get_node(name)
        if node is not None:
            return node
        # RFC 4592 §3.3.1, simplified: the closest encloser's "*" child matches, if the
        # name has no existing ancestor between it and the encloser.
        candidate = name
        assert zone.origin is not None
        while candidate != zone.origin and len(candidate) > 1:
            candidate = candidate.parent()
            wildcard = dns.name.Name(("*",)).concatenate(candidate)
            node = zone.get_node(wildcard)
            if node is not None:
                return node
            if zone.get_node(candidate) is not None:
                return None
        return None

    @staticmethod
    def _exists_below(zone: dns.zone.Zone, name: dns.name.Name) -> bool:
        """An empty non-terminal: no node, but names below it exist (RFC 8020 NODATA, not NXDOMAIN)."""
        return any(n != name and n.is_subdomain(name) for n in zone.nodes)

    def answer(self, query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if not query.question:
            response.set_rcode(dns.rcode.FORMERR)
            return response
        q = query.question[0]
        qname, qtype = q.name, q.rdtype
        name = qname
        seen: set[dns.name.Name] = set()
        for _ in range(MAX_CNAME_LINKS + 1):
            zone = self.zone_for(name)
            if zone is None:
                if name == qname:
                    response.flags &= ~dns.flags.AA
                    response.set_rcode(dns.rcode.NXDOMAIN)
                return response  # a CNAME leaving our zones: the resolver sees no final data
            node = self._node(zone, name)
            if node is None:
                if not self._exists_below(zone, name):
                    response.set_rcode(dns.rcode.NXDOMAIN)
                self._add_soa(zone, response)
                return response
            if qtype == dns.rdatatype.ANY:
                for rds in node.rdatasets:
                    response.answer.append(dns.rrset.from_rdata_list(name, rds.ttl, list(rds)))
                return response
            rds = node.get_rdataset(dns.rdataclass.IN, qtype)
            if rds is not None:
                response.answer.append(dns.rrset.from_rdata_list(name, rds.ttl, list(rds)))
                return response
            cname = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.CNAME)
            if cname is None or qtype == dns.rdatatype.CNAME:
                self._add_soa(zone, response)
                return response
            response.answer.append(dns.rrset.from_rdata_list(name, cname.ttl, list(cname)))
            seen.add(name)
            name = cname[0].target
            if name in seen:
                return response  # loop: hand the client what we have, as real servers do
        return response

    @staticmethod
    def _add_soa(zone: dns.zone.Zone, response: dns.message.Message) -> None:
        assert zone.origin is not None
        soa = zone.get_rdataset(zone.origin, dns.rdatatype.SOA)
        if soa is not None:
            response.authority.append(dns.rrset.from_rdata_list(zone.origin, soa.ttl, list(soa)))


def _misbehave(
    mode: str, wire: bytes, query: dns.message.Message | None, authority: Authority, tcp: bool
) -> bytes | None:
    qid = wire[:2] if len(wire) >= 2 else b"\x00\x00"
    if mode == "timeout":
        return None
    if mode == "garbage":
        # Right id, QR set, one question claimed, then bytes that are not a question.
        return qid + b"\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00" + b"\xff\xfe\x13\x37garbage\x00\xc0\xff" * 3
    if mode == "shortheader":
        return qid[:1] + b"\x81"
    if query is None:
        return None
    if mode in ("servfail", "refused"):
        r = dns.message.make_response(query)
        r.set_rcode(dns.rcode.SERVFAIL if mode == "servfail" else dns.rcode.REFUSED)
        return r.to_wire()
    if mode == "wrongid":
        good = authority.answer(query).to_wire()
        return struct.pack("!H", (query.id + 1) & 0xFFFF) + good[2:]
    if mode == "badlabel":
        # Header + the question copied from the query, then an answer whose owner name is a
        # compression pointer to itself (offset 12 + len(question)).
        question = wire[12:]
        offset = 12 + len(question)
        header = qid + b"\x81\x80" + struct.pack("!HHHH", 1, 1, 0, 0)
        rr = struct.pack("!H", 0xC000 | offset) + struct.pack("!HHIH", 16, 1, 60, 4) + b"\x03abc"
        return header + question + rr
    if mode == "truncate":
        if tcp:
            return b""
        r = dns.message.make_response(query)
        r.flags |= dns.flags.TC
        return r.to_wire()
    return None


def handle(wire: bytes, authority: Authority, tcp: bool, max_udp: int = 512) -> bytes | None:
    """One query in, one reply out (None: stay silent)."""
    try:
        query = dns.message.from_wire(wire)
    except (dns.exception.DNSException, ValueError, struct.error):
        if len(wire) >= 12:
            r = bytearray(wire[:12])
            r[2] |= 0x80
            r[3] = (r[3] & 0xF0) | dns.rcode.FORMERR
            return bytes(r[:4]) + b"\x00" * 8
        return None
    if query.question:
        mode = authority.behaviour_for(query.question[0].name)
        if mode is not None:
            return _misbehave(mode, wire, query, authority, tcp)
    response = authority.answer(query)
    if tcp:
        return response.to_wire(max_size=65535)
    limit = max(512, query.payload) if query.edns >= 0 else max_udp
    try:
        return response.to_wire(max_size=limit)
    except dns.exception.TooBig:
        truncated = dns.message.make_response(query)
        truncated.flags |= dns.flags.TC | dns.flags.AA
        return truncated.to_wire()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, authority: Authority) -> None:
        self.authority = authority
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        reply = handle(data, self.authority, tcp=False)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


async def _tcp_client(
    authority: Authority, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        while True:
            head = await reader.readexactly(2)
            (length,) = struct.unpack("!H", head)
            wire = await reader.readexactly(length)
            reply = handle(wire, authority, tcp=True)
            if reply is None:
                continue
            if reply == b"":
                break
            writer.write(struct.pack("!H", len(reply)) + reply)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def _bind_pair(host: str, port: int) -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket on the same port; with port 0, retry until both are free."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(50):
        udp = socket.socket(family, socket.SOCK_DGRAM)
        udp.bind((host, port))
        chosen = udp.getsockname()[1]
        tcp = socket.socket(family, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            tcp.bind((host, chosen))
        except OSError:
            udp.close()
            tcp.close()
            if port:
                raise
            continue
        tcp.listen(64)
        return udp, tcp
    raise OSError("no free port for UDP and TCP")


async def serve(host: str, port: int, authority: Authority) -> None:
    udp_sock, tcp_sock = _bind_pair(host, port)
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: _Udp(authority), sock=udp_sock)
    server = await asyncio.start_server(lambda r, w: _tcp_client(authority, r, w), sock=tcp_sock)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"PORT {udp_sock.getsockname()[1]}", flush=True)
    await stop.wait()
    server.close()
    transport.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--behaviour", action="append", default=[], metavar="NAME=MODE")
    parser.add_argument("zones", nargs="+", type=Path)
    args = parser.parse_args(argv)
    behaviours = []
    for item in args.behaviour:
        name, _, mode = item.partition("=")
        if mode not in MODES:
            parser.error(f"unknown mode {mode!r} (one of {sorted(MODES)})")
        behaviours.append(Behaviour(dns.name.from_text(name), mode))
    try:
        zones = [load_zone(p) for p in args.zones]
    except (OSError, dns.exception.DNSException) as exc:
        print(f"cannot load zones: {exc}", file=sys.stderr, flush=True)
        return 2
    asyncio.run(serve(args.host, args.port, Authority(zones, behaviours)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
