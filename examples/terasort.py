"""TeraSort with Riera: generate 1M gensort records (100 MB), sort them, validate the order.

Run:  riera run examples/terasort.py [RECORDS]      (or: python examples/terasort.py)

The sort itself is four lines on the public API (see riera/apps/terasort/job.py):

    riera.read_files(in_dir)                                   # one row per file: path, size, bytes
        .map_batches(parse_records, batch_format="pyarrow")    # -> key (10 B), record (100 B view)
        .sort("key")                                           # sample -> range partition -> local sort
        .select("record").write_binary(out_dir, column="record")
"""

import shutil
import sys
import tempfile
import time

from riera.apps.terasort import job

records = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
work = tempfile.mkdtemp(prefix="riera-terasort-")

t = time.perf_counter()
job.generate(f"{work}/in", records)
print(f"generated {records:,} records in {time.perf_counter() - t:.2f} s")

t = time.perf_counter()
manifest = job.sort(f"{work}/in", f"{work}/out")
print(f"sorted into {len(manifest['files'])} files in {time.perf_counter() - t:.2f} s")

check = job.validate(f"{work}/out").report
print(f"records={check.records:,} checksum={check.checksum:x} sorted={check.ok}")
shutil.rmtree(work)
assert check.ok and check.records == records
