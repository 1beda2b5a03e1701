"""A pandas-style ETL over CSV files: clean, enrich with a join, aggregate, write Parquet.

Run:  riera run examples/etl.py [OUT_DIR]

The script writes its own input (orders split over several CSV files, and a customers file),
then reads them back in parallel.
"""

import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

import riera

work = Path(tempfile.mkdtemp(prefix="riera-etl-"))
out = sys.argv[1] if len(sys.argv) > 1 else str(work / "revenue")

# -- input: 200k orders in 4 CSV files, 1,000 customers -------------------------------------
rng = np.random.default_rng(7)
n = 200_000
orders = pd.DataFrame(
    {
        "order_id": np.arange(n),
        "customer_id": rng.integers(0, 1_000, n),
        "product": rng.choice(["Freezer", "Ar Condicionado", "Microondas", "Fogão"], n),
        "quantity": rng.integers(-1, 6, n),  # a few bad rows with quantity <= 0
        "unit_price": rng.uniform(50, 2_500, n).round(2),
    }
)
(work / "orders").mkdir()
for i in range(4):
    orders.iloc[i * n // 4 : (i + 1) * n // 4].to_csv(
        work / "orders" / f"orders-{i}.csv", index=False
    )
customers = pd.DataFrame(
    {
        "customer_id": np.arange(1_000),
        "region": rng.choice(["Norte", "Nordeste", "Sudeste", "Sul", "Centro-Oeste"], 1_000),
    }
)
customers.to_csv(work / "customers.csv", index=False)


# -- the pipeline --------------------------------------------------------------------------------
def add_revenue(df: pd.DataFrame) -> pd.DataFrame:
    """Runs on each partition as a pandas DataFrame with Arrow-backed columns."""
    df = df[df["quantity"] > 0]
    return df.assign(revenue=df["quantity"] * df["unit_price"])


revenue = (
    riera.read_csv(work / "orders", partition_bytes=2 * 2**20)
    .map_batches(add_revenue)
    .join(riera.read_csv(work / "customers.csv"), on="customer_id")
    .group_by(["region", "product"])
    .agg(orders=("order_id", "count"), revenue=("revenue", "sum"), avg=("revenue", "mean"))
    .sort(["region", "revenue"], descending=[False, True])
)
revenue.explain()
manifest = revenue.write_parquet(out, mode="overwrite")
print(f"wrote {manifest['rows']} rows in {len(manifest['files'])} file(s) to {out}")

# Check against plain pandas on the same data.
clean = orders[orders["quantity"] > 0].assign(revenue=lambda d: d["quantity"] * d["unit_price"])
expected = clean.merge(customers, on="customer_id").groupby(["region", "product"])["revenue"].sum()
got = riera.read_parquet(out).to_pandas().set_index(["region", "product"])["revenue"]
assert np.allclose(got.sort_index().values, expected.sort_index().values)
print(riera.read_parquet(out).to_pandas().head(10).to_string(index=False))
shutil.rmtree(work)  # the generated input (and the output, unless OUT_DIR was given elsewhere)
