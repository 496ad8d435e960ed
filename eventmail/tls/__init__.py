"""TLS: certificates (self-signed for localserve and tests; ACME later) and server contexts."""
