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
    (out_dir / "__init__.py").write_text('"""Generated protobuf modules (make proto); do not edit."""\n')


if __name__ == "__main__":
    generate(Path(sys.argv[1]).resolve())
