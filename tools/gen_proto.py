"""Generate the Python protobuf and gRPC modules from proto/ into a package directory."""

import sys
from pathlib import Path

from grpc_tools import protoc  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parent.parent


def generate(out_dir: Path) -> None:
    """Write *_pb2.py, *_pb2.pyi (and *_pb2_grpc.py for services) for every proto file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    protos = sorted((ROOT / "proto" / "eventmail").glob("*.proto"))
    # The -I<package>=<dir> mapping makes generated imports package-qualified
    # ("from eventmail.proto import x_pb2") instead of top-level.
    args = [
        "protoc",
        f"-Ieventmail/proto={ROOT / 'proto' / 'eventmail'}",
        f"--python_out={out_dir.parent.parent}",
        f"--pyi_out={out_dir.parent.parent}",
        f"--grpc_python_out={out_dir.parent.parent}",
        *[str(p) for p in protos],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for grpc_module in out_dir.glob("*_pb2_grpc.py"):
        grpc_module.write_text(answer_unimplemented(grpc_module.read_text()))
    (out_dir / "__init__.py").write_text('"""Generated protobuf modules (make proto); do not edit."""\n')


# grpc_tools gives each servicer method a default body that sets UNIMPLEMENTED and then raises
# NotImplementedError. `context.abort` is gRPC's own way to end a call with a status: the peer
# sees the same UNIMPLEMENTED, and the server logs no stray exception.
DEFAULT_BODY = (
    "        context.set_code(grpc.StatusCode.UNIMPLEMENTED)\n"
    "        context.set_details('Method not implemented!')\n"
    "        raise NotImplementedError('Method not implemented!')\n"
)
ABORT_BODY = "        context.abort(grpc.StatusCode.UNIMPLEMENTED, 'Method not implemented!')\n"


def answer_unimplemented(source: str) -> str:
    return source.replace(DEFAULT_BODY, ABORT_BODY)


if __name__ == "__main__":
    generate(Path(sys.argv[1]).resolve())
