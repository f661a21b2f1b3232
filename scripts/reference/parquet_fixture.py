"""Writes crates/dn-data/tests/fixtures/rows.parquet with pyarrow: one chat row (messages as a list of
structs), one prompt/completion row, one row that fits no shape. Run: scripts/reference/run.sh parquet-fixture"""

import pathlib
import sys

import pyarrow as pa
import pyarrow.parquet as pq

out = pathlib.Path(sys.argv[1])
message = pa.struct([("role", pa.string()), ("content", pa.string())])
table = pa.table(
    {
        "messages": pa.array(
            [
                [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello from parquet"}],
                None,
                None,
            ],
            type=pa.list_(message),
        ),
        "prompt": pa.array([None, "2+2?", None]),
        "completion": pa.array([None, "4", None]),
        "note": pa.array(["chat", "pc", "no shape"]),
    }
)
pq.write_table(table, out, compression="snappy")
print(f"wrote {out}")
