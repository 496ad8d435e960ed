"""Fetch an MTA-STS policy over HTTPS with aiohttp, names resolved through the project's resolver (RFC 8461 §3.3)."""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass, field

import aiohttp
import aiohttp.abc

from ..mailauth.resolver import Resolver
from .mtasts import MAX_POLICY_BYTES, StsError, StsPolicy, parse_policy

# RFC 8461 §3.3 asks for a timeout on the fetch without a number; Mox and Postfix's
# postfix-mta-sts-resolver use 10 to 60 s. The queue retries, so a short bound costs little.
FETCH_TIMEOUT = 20.0
WELL_KNOWN = "/.well-known/mta-sts.txt"


class PolicyFetchError(Exception):
    """The policy could not be fetched or did not parse; the caller falls back to its cache (RFC 8461 §5.1)."""


class _ResolverAdapter(aiohttp.abc.AbstractResolver):
    """aiohttp's name resolution through our Resolver, so the fetch never asks the system resolver."""

    def __init__(self, resolver: Resolver) -> None:
        self._resolver = resolver

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[aiohttp.abc.ResolveResult]:
        results: list[aiohttp.abc.ResolveResult] = []
        for rdtype, fam in (("AAAA", socket.AF_INET6), ("A", socket.AF_INET)):
            if family not in (socket.AF_UNSPEC, fam):
                continue
            answer = await self._resolver.query(host, rdtype)
            for address in answer.addresses():
                results.append(
                    {
                        "hostname": host,
                        "host": address,
                        "port": port,
                        "family": fam,
                        "proto": 0,
                        "flags": socket.AI_NUMERICHOST,
                    }
                )
        if not results:
            raise OSError(f"no address for {host}")
        return results

    async def close(self) -> None:
        return None


@dataclass(frozen=True)
class FetchConfig:
    """How to fetch. `ssl_context` None means the system's trusted CAs (PKIX, RFC 8461 §3.3)."""

    port: int = 443
    timeout: float = FETCH_TIMEOUT
    ssl_context: ssl.SSLContext | None = field(default=None, compare=False)


def policy_url(domain: str, port: int = 443) -> str:
    """RFC 8461 §3.3: https://mta-sts.DOMAIN/.well-known/mta-sts.txt (the port only differs in tests)."""
    authority = f"mta-sts.{domain}" if port == 443 else f"mta-sts.{domain}:{port}"
    return f"https://{authority}{WELL_KNOWN}"


async def fetch_policy(domain: str, resolver: Resolver, config: FetchConfig | None = None) -> StsPolicy:
    """GET the domain's policy and parse it; raise PolicyFetchError with the reason on any failure."""
    config = config or FetchConfig()
    context = config.ssl_context or ssl.create_default_context()
    if not context.check_hostname or context.verify_mode != ssl.CERT_REQUIRED:
        # RFC 8461 §3.3: the certificate must chain to a trusted root and name mta-sts.DOMAIN.
        raise ValueError("MTA-STS fetch needs a verifying SSL context (CERT_REQUIRED, check_hostname)")
    connector = aiohttp.TCPConnector(
        resolver=_ResolverAdapter(resolver), ssl=context, use_dns_cache=False, limit=1
    )
    timeout = aiohttp.ClientTimeout(total=config.timeout)
    url = policy_url(domain, config.port)
    try:
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, trust_env=False, auto_decompress=True
        ) as session:
            # RFC 8461 §3.3: redirects MUST NOT be followed; HTTP caching headers are ignored
            # (max_age governs), so nothing conditional is sent.
            async with session.get(url, allow_redirects=False, headers={"Accept": "text/plain"}) as resp:
                if resp.status != 200:
                    raise PolicyFetchError(f"{url}: HTTP {resp.status}, need 200")
                # RFC 8461 §3.2: the media type is text/plain (parameters such as charset allowed).
                if resp.content_type != "text/plain":
                    raise PolicyFetchError(f"{url}: media type {resp.content_type!r}, need text/plain")
                if resp.content_length is not None and resp.content_length > MAX_POLICY_BYTES:
                    raise PolicyFetchError(f"{url}: {resp.content_length} octets, more than {MAX_POLICY_BYTES}")
                body = bytearray()
                async for chunk in resp.content.iter_chunked(8192):
                    body += chunk
                    if len(body) > MAX_POLICY_BYTES:
                        raise PolicyFetchError(f"{url}: body over {MAX_POLICY_BYTES} octets")
    except PolicyFetchError:
        raise
    except TimeoutError as exc:
        raise PolicyFetchError(f"{url}: timed out after {config.timeout} s") from exc
    except (aiohttp.ClientError, OSError, ssl.SSLError, ValueError) as exc:
        raise PolicyFetchError(f"{url}: {type(exc).__name__}: {exc}") from exc
    try:
        return parse_policy(bytes(body))
    except StsError as exc:
        raise PolicyFetchError(f"{url}: {exc}") from exc
