"""The scale-out analysis on a real engine, against the direct analysis of the same logs.

Run (from the repository root, after `cargo build --release`):
  python3 benches/analyze_sql.py duckdb                    # the 2M-line log of benches/analyze_throughput.rs
  python3 benches/analyze_sql.py duckdb --parquet          # … and the same log converted to Parquet
  python3 benches/analyze_sql.py spark                     # PySpark in local mode (pip-installs pyspark; needs Java 17+)
  python3 benches/analyze_sql.py spark --config DIR/abgate.toml --events DIR/events --covariates DIR/cov.csv

For each engine: times `abgate analyze --format json` (direct), runs the query of
`--emit-sql ENGINE` (DuckDB with 1 and 2 threads; Spark with local[2]) and saves its
result as CSV with a header, times `abgate analyze --summary` on it, and compares the two
JSON reports field by field (numbers within 1e-9 relative, everything else equal). Exits 1
on a difference. Not part of `make test` (tests/analyze_sql.rs runs DuckDB there).

The default log is the one `cargo bench --bench analyze_throughput` writes to
target/bench-events/; `ABGATE_KEEP_LOGS=DIR cargo test --test analyze_sql` leaves the
synthetic logs of the end-to-end test (duplicates, mixed units, CUPED) in DIR.
"""
import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))


def run(cmd):
    t = time.time()
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr}")
    return out.stdout, time.time() - t


def close(a, b, path, worst):
    """Compare two JSON values; returns the largest relative difference seen."""
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        rel = 0.0 if a == b else abs(a - b) / max(abs(a), abs(b))
        if rel > 1e-9:
            sys.exit(f"{path}: direct {a} vs summary {b} (relative {rel:.2e})")
        return max(worst, rel)
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            worst = close(x, y, f"{path}[{i}]", worst)
        return worst
    if isinstance(a, dict) and isinstance(b, dict) and list(a) == list(b):
        for k in a:
            worst = close(a[k], b[k], f"{path}.{k}", worst)
        return worst
    if a != b:
        sys.exit(f"{path}: direct {a!r} vs summary {b!r}")
    return worst


def duckdb_csv(query, out, threads):
    import duckdb
    con = duckdb.connect()
    con.execute(f"SET threads = {threads}")
    t = time.time()
    con.execute(f"COPY ({query}) TO '{out}' (HEADER)")
    return time.time() - t


def spark_csv(query, out):
    try:
        import pyspark  # noqa: F401
    except ImportError:
        print("installing pyspark (pip) …", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "pyspark"], check=True)
    from pyspark.sql import SparkSession
    spark = (SparkSession.builder.master("local[2]").appName("abgate")
             .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    t = time.time()
    df = spark.sql(query)
    rows = df.collect()
    secs = time.time() - t
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(df.columns)
        for r in rows:
            w.writerow(["" if v is None else repr(v) if isinstance(v, float) else v for v in r])
    print(f"spark {spark.version}", file=sys.stderr)
    spark.stop()
    return secs


def to_parquet(events, out):
    """The JSON Lines converted to Parquet with the query's columns (DuckDB)."""
    import duckdb
    cols = ("type: 'VARCHAR', ts: 'VARCHAR', unit_id: 'VARCHAR', assignments: 'STRUCT(experiment VARCHAR, "
            "variant VARCHAR, unit_id VARCHAR, forced BOOLEAN)[]', metric: 'VARCHAR', value: 'DOUBLE', "
            "latency_ms: 'DOUBLE', error: 'VARCHAR', event_id: 'VARCHAR'")
    duckdb.connect().execute(
        f"COPY (SELECT * FROM read_json('{events}', format = 'newline_delimited', ignore_errors = true, "
        f"columns = {{{cols}}})) TO '{out}' (FORMAT parquet)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("engine", choices=["duckdb", "spark"])
    ap.add_argument("--abgate", default=os.path.join(TARGET, "release", "abgate"))
    ap.add_argument("--config", default=os.path.join(ROOT, "target", "bench-events", "abgate.toml"))
    ap.add_argument("--events", default=os.path.join(ROOT, "target", "bench-events", "bench-2000000.jsonl"))
    ap.add_argument("--covariates")
    ap.add_argument("--parquet", action="store_true", help="also run DuckDB on the log converted to Parquet")
    a = ap.parse_args()
    base = [a.abgate, "analyze", "--config", a.config]
    cov = ["--covariates", a.covariates] if a.covariates else []
    direct, t_direct = run(base + ["--events", a.events, "--format", "json"] + cov)
    print(f"direct analysis: {t_direct:.2f} s")
    tmp = tempfile.mkdtemp(prefix="abgate-sql-")
    runs = [(a.engine, a.events, t) for t in ([1, 2] if a.engine == "duckdb" else [2])]
    if a.parquet:
        pq = os.path.join(tmp, "events.parquet")
        t = time.time()
        to_parquet(a.events, pq)
        print(f"converted to Parquet in {time.time() - t:.2f} s ({os.path.getsize(pq) >> 20} MiB)")
        runs += [("duckdb", pq, 1), ("duckdb", pq, 2)]
    for engine, events, threads in runs:
        query, _ = run(base + ["--events", events, "--emit-sql", engine] + cov)
        out = os.path.join(tmp, "stats.csv")
        secs = duckdb_csv(query, out, threads) if engine == "duckdb" else spark_csv(query, out)
        summary, t_summary = run(base + ["--summary", out, "--format", "json"])
        worst = close(json.loads(direct), json.loads(summary), "report", 0.0)
        kind = "Parquet" if events.endswith(".parquet") else "JSON Lines"
        print(f"{engine} ({kind}, {threads} thread{'s' if threads > 1 else ''}): query {secs:.2f} s + "
              f"--summary {t_summary:.3f} s; report equal to the direct one "
              f"(largest relative difference {worst:.1e})")


if __name__ == "__main__":
    main()
