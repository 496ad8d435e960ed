"""A projection restored from a checkpoint, then grown, holds its pages once in memory, not twice."""

import ctypes
import os
import sqlite3

import pytest

from eventmail.store.projection import VIEW_VERSION, from_bytes


def _sqlite_memory_used() -> int:
    try:
        lib = ctypes.CDLL("libsqlite3.so.0")  # the library the sqlite3 module is linked with
    except OSError:
        pytest.skip("libsqlite3.so.0 not loadable by ctypes: cannot read SQLite's memory counter")
    current, highest = ctypes.c_int64(), ctypes.c_int64()
    lib.sqlite3_status64(0, ctypes.byref(current), ctypes.byref(highest), 0)  # SQLITE_STATUS_MEMORY_USED
    return current.value


def test_a_restored_projection_that_grows_holds_its_data_once_in_memory() -> None:
    source = sqlite3.connect(":memory:", isolation_level=None)
    source.executescript("CREATE TABLE meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;"
                         "CREATE TABLE filler(id INTEGER PRIMARY KEY, data BLOB);")
    source.execute("INSERT INTO meta VALUES ('view', ?)", (VIEW_VERSION,))
    source.executemany("INSERT INTO filler VALUES (?, ?)", [(i, os.urandom(4000)) for i in range(3000)])
    image = source.serialize()
    source.close()

    before = _sqlite_memory_used()
    db = from_bytes(image)
    assert db is not None
    db.execute("INSERT INTO filler VALUES (3000, ?)", (os.urandom(4000),))  # the projection grows
    assert db.execute("SELECT count(*), sum(length(data)) FROM filler").fetchone() == (3001, 12_004_000)
    held = _sqlite_memory_used() - before
    # Deserialized in place, the image is one buffer that SQLite's in-memory file doubles when
    # the database grows past it: up to twice the data, plus the page cache.
    assert held < 1.4 * len(image), f"{held / 1e6:.1f} MB held for a {len(image) / 1e6:.1f} MB image"
    db.close()
