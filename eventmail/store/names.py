"""The names of a data directory's streams, and what an account name may be."""

import re

SYSTEM = "system"
QUEUE = "queue"
NODE_STATE = "node-state.json"
ACCOUNT_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def account_stream(name: str) -> str:
    return f"account/{name}"


def handoff_stream(node: str) -> str:
    """The stream in which node `node` records mail it accepted while not the primary."""
    return f"handoff/{node}"
