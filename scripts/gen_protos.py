"""Generate poller/proto/ from protos/*.proto (run by `make protos`).

The proto files are mapped to the virtual path poller/proto/ so that the
generated modules import each other as `poller.proto.x_pb2`; the proto
package (and so every wire path) stays `monitoring`.

    python scripts/gen_protos.py [OUT_DIR]   # OUT_DIR defaults to the repo root
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
VIRTUAL = "poller/proto"


def generate(out_dir: Path) -> list[Path]:
    """Write the generated modules under out_dir/poller/proto and return them."""
    (out_dir / VIRTUAL).mkdir(parents=True, exist_ok=True)
    sources = sorted(PROTOS.glob("*.proto"))
    import grpc_tools

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"--proto_path={VIRTUAL}={PROTOS}",
        f"--proto_path={well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(str(s) for s in sources),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted((out_dir / VIRTUAL).glob("*_pb2*.py*"))


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT
    for path in generate(target):
        print(path.relative_to(target))
