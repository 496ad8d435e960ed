"""Opens the store as every part of eventmail uses it: with the junk, thread and METADATA projections and the message hooks registered."""

from pathlib import Path

from .junk.features import stored_features
from .junk.projection import JUNK_PROJECTION
from .junk.training import junk_training_flags
from .mail.metadata import METADATA_PROJECTION
from .mail.threads import THREAD_INDEX, thread_of
from .mime.structure import parse_structure
from .proto import events_pb2 as pb
from .store import IDLE_SECONDS, Mailbox, Registration, Store


def message_facts(raw: bytes, origin: pb.Origin | None, mailbox: Mailbox) -> tuple[pb.MessageStructure, pb.JunkFeatures]:
    """What the store records with a message whose caller did not parse it (import, hand-off):
    its MIME structure and its junk features. CPU-bound: the store calls it in a thread."""
    return parse_structure(raw), stored_features(raw, origin, mailbox.special_use)


# The one registration: the server, the CLI, replication and the tools open the store with it,
# and `export --at` and `junk play` fold events through it (DESIGN.md "Projections").
REGISTRATION = Registration(
    projections=(JUNK_PROJECTION, THREAD_INDEX, METADATA_PROJECTION),
    message_facts=message_facts,
    copy_flags=junk_training_flags,
    thread_of=thread_of,
)


async def open_store(
    directory: Path, master_key: bytes, writable: bool = True, idle_seconds: float = IDLE_SECONDS,
    tolerate_damage: bool = False,
) -> Store:
    """`Store.open` with eventmail's registration."""
    return await Store.open(
        directory, master_key, writable, idle_seconds, tolerate_damage, registration=REGISTRATION
    )
