"""CPU of the node's own per-image work in a box transfer, beyond what ``floor.py``'s empty pair does.

The box floor (``floor.py --which box``) anonymizes with pydicom, hashes and writes each file durably,
and nothing else. A node must also, on the receiver, parse and validate what arrives, look for an
anonymization key to re-identify it, and index it (``SliceboxContext.ingest``); and on the sender
read the stored file, parse it and record the anonymization key (``SliceboxContext.anonymized_bytes``).
This measures, in one thread of this process (``time.process_time``, so waiting on the disk is not
counted), the CPU per image of:

* receiver: ``FileSystemStorage.write`` alone (the floor's write) and ``SliceboxContext.ingest`` of
  the same anonymized files from source ``box`` (a fresh SQLite node, fsync on);
* sender: the floor's anonymization (``floor._anonymizer``: parse, ``anonymize``, ``write_part10``)
  and ``SliceboxContext.anonymized_bytes`` of the stored originals (basic profile).

    python bench/node_work.py [--count 400]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import floor
import harness  # noqa: F401  (puts tests/ on sys.path for the generators)
import ingest_rest

from slicebox_lab.anonymization import Profile
from slicebox_lab.context import SliceboxContext
from slicebox_lab.model import Source
from slicebox_lab.storage import FileSystemStorage


def cpu_ms(items: Iterable[Any], work: Callable[[Any], object]) -> float:
    """CPU ms per item of ``work`` over ``items``."""
    items = list(items)
    start = time.process_time()
    for item in items:
        work(item)
    return (time.process_time() - start) * 1000 / len(items)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=400, help="CT images of 512² (default 400)")
    args = parser.parse_args(argv)
    blobs = ingest_rest.generate(args.count, 512, 10)
    anonymize = floor._anonymizer()
    anonymized = [anonymize(b) for b in blobs]
    with tempfile.TemporaryDirectory(prefix="bench-node-work-") as tmp:
        storage = FileSystemStorage(Path(tmp) / "files")
        write = cpu_ms(enumerate(anonymized), lambda x: storage.write(f"{x[0]:032x}", x[1]))
        context = SliceboxContext.open(Path(tmp) / "node", "", "", fsync=True)
        try:
            ingest = cpu_ms(anonymized, lambda data: context.ingest(data, Source("box", "partner")))
            ids = [context.ingest(b, Source("user", "bench")).image.id for b in blobs]
            node_anonymize = cpu_ms(ids, lambda image_id: context.anonymized_bytes(image_id, Profile()))
        finally:
            context.close()
    floor_anonymize = cpu_ms(blobs, anonymize)
    print(f"{args.count} CT 512², CPU ms per image (one thread)")
    print(f"receiver: durable write alone {write:.2f}, node ingest {ingest:.2f}: the node adds {ingest - write:.2f}")
    print(
        f"sender: anonymization alone {floor_anonymize:.2f}, node anonymized_bytes {node_anonymize:.2f}: "
        f"the node adds {node_anonymize - floor_anonymize:.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
