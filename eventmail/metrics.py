"""The server's metrics registry (prometheus-client): one place where each metric is defined once."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

# One registry per process rather than the library's global one: tests start several servers'
# code in one interpreter, and a global registry refuses a second metric of the same name.
REGISTRY = CollectorRegistry()

QUEUE_MESSAGES = Gauge("eventmail_queue_messages", "messages in the outbound queue with recipients left",
                       registry=REGISTRY)
QUEUE_ATTEMPTS = Counter("eventmail_queue_attempts", "outbound tries per recipient, by result "
                         "(delivered, deferred, failed)", ["result"], registry=REGISTRY)
QUEUE_NOTICES = Counter("eventmail_queue_notices", "delivery status notices sent to senders, by kind "
                        "(failure, delay)", ["kind"], registry=REGISTRY)
