"""The server's threads share a bounded number of glibc malloc arenas."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Eight threads allocate, then glibc's malloc_info reports one <heap> per arena in use.
PROGRAM = """
import ctypes, sys, threading
from eventmail import serve
if sys.argv[1] == "shared":
    serve.share_malloc_arenas()
held = []
def allocate():
    held.append([bytes(64) + bytes([i % 256]) for i in range(20000)])
threads = [threading.Thread(target=allocate) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
f = libc.fopen(sys.argv[2].encode(), b"w")
libc.malloc_info(0, f)
libc.fclose(f)
print(open(sys.argv[2]).read().count("<heap nr="))
"""


def _arenas(tmp_path: Path, mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROGRAM, mode, str(tmp_path / f"{mode}.xml")],
                         capture_output=True, text=True, timeout=60, cwd=ROOT, check=True)
    return int(out.stdout)


def test_threads_share_at_most_the_configured_malloc_arenas(tmp_path: Path) -> None:
    try:
        import ctypes
        ctypes.CDLL(None).malloc_info  # noqa: B018
    except AttributeError:
        pytest.skip("not glibc: no malloc arenas")
    from eventmail.serve import MALLOC_ARENAS

    assert _arenas(tmp_path, "default") > MALLOC_ARENAS  # the test can see arenas multiply
    assert _arenas(tmp_path, "shared") <= MALLOC_ARENAS
