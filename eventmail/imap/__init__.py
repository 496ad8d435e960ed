"""IMAP4rev2 / IMAP4rev1 server: sans-IO wire, sessions over the store, asyncio listeners."""

from eventmail.imap.server import start_imap
from eventmail.imap.wire import Limits

__all__ = ["Limits", "start_imap"]
