"""Mutual TLS for the replication channel: each node pins the other's certificate, both ways."""

from pathlib import Path

import grpc

# Records carry whole messages' blobs: allow the largest message the SMTP listeners accept
# (50 MiB by default) plus framing, in both directions.
MAX_MESSAGE_BYTES = 80 << 20

# LIBRARIES.md §6: without http2.ping_timeout_ms a hung peer is noticed only after 60 s; with a
# 1 s keepalive and a 2 s ping timeout a black-holed link is noticed in about 3 s.
KEEPALIVE_MS = 1000
PING_TIMEOUT_MS = 2000

_COMMON: list[tuple[str, int | str]] = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", KEEPALIVE_MS),
    ("grpc.keepalive_timeout_ms", PING_TIMEOUT_MS),
    ("grpc.http2.ping_timeout_ms", PING_TIMEOUT_MS),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]

SERVER_OPTIONS: list[tuple[str, int | str]] = [
    *_COMMON,
    # Accept the client's frequent pings instead of answering GOAWAY too_many_pings.
    ("grpc.http2.min_recv_ping_interval_without_data_ms", KEEPALIVE_MS // 2),
    ("grpc.http2.max_ping_strikes", 0),
]


def client_options(peer_node: str) -> list[tuple[str, int | str]]:
    # The peer's certificate names the peer node; the address may be an IP or a proxy.
    return [*_COMMON, ("grpc.ssl_target_name_override", peer_node), ("grpc.enable_retries", 0)]


def server_credentials(cert: Path, key: Path, peer_cert: Path) -> grpc.ServerCredentials:
    """Present our certificate; accept only clients presenting the pinned peer certificate."""
    return grpc.ssl_server_credentials(
        [(key.read_bytes(), cert.read_bytes())], root_certificates=peer_cert.read_bytes(), require_client_auth=True
    )


def channel_credentials(cert: Path, key: Path, peer_cert: Path) -> grpc.ChannelCredentials:
    """Trust only the pinned peer certificate; present ours as the client certificate."""
    return grpc.ssl_channel_credentials(
        root_certificates=peer_cert.read_bytes(), private_key=key.read_bytes(), certificate_chain=cert.read_bytes()
    )
