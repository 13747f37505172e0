//! `abgate analyze --emit-sql duckdb|spark`: one SQL `SELECT` that makes an engine do the
//! heavy part of the analysis — the per-unit aggregation over every event — and return
//! only the sufficient statistics of [`super::sufficient`], one row per experiment ×
//! variant × metric (and a few more kinds of rows), which `--summary` then reads.
//!
//! The rules are those of the direct analysis (docs/analysis.md), stated in SQL: each
//! `event_id` once; a unit enters an experiment at its first non-forced exposure (holdout
//! exposures carry no assignment); a unit seen in two variants is counted as mixed and
//! left out; an outcome counts for a unit if its `ts` is not before the unit's first
//! exposure; binomial = any value > 0, continuous = the sum, 0 without outcomes. Means
//! and sums of squared deviations are computed in two passes (the mean from an exact
//! decimal sum in one CTE, the deviations in the next): stable, independent of the order
//! of the rows, and the same formulas in every engine and in
//! [`crate::stats::Moments::of`].
//!
//! One template serves both dialects; [`Dialect`] holds the few places where they must
//! differ: how the JSON Lines (or Parquet) and the covariates CSV are read, how an array
//! is exploded into rows, and how a string literal is quoted.

use super::sufficient::{experiments_of, metric_slots};
use crate::config::{Config, MetricKind};
use std::fmt::Write as _;

/// The SQL dialects `--emit-sql` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// DuckDB (tested in CI with the `duckdb` Python package).
    DuckDb,
    /// Spark SQL 3.2 or later (`spark.sql(...)`; see docs/analysis.md for how it was
    /// tested).
    Spark,
}

/// The columns of the event log the query reads, with their types in both dialects
/// (explicit: `error` is null in most rows, so inferring types would guess).
const EVENT_COLUMNS: [(&str, &str, &str); 9] = [
    ("type", "VARCHAR", "STRING"),
    ("ts", "VARCHAR", "STRING"),
    ("unit_id", "VARCHAR", "STRING"),
    (
        "assignments",
        "STRUCT(experiment VARCHAR, variant VARCHAR, unit_id VARCHAR, forced BOOLEAN)[]",
        "ARRAY<STRUCT<experiment: STRING, variant: STRING, unit_id: STRING, forced: BOOLEAN>>",
    ),
    ("metric", "VARCHAR", "STRING"),
    ("value", "DOUBLE", "DOUBLE"),
    ("latency_ms", "DOUBLE", "DOUBLE"),
    ("error", "VARCHAR", "STRING"),
    ("event_id", "VARCHAR", "STRING"),
];

impl Dialect {
    /// A string literal.
    fn lit(self, s: &str) -> String {
        match self {
            Dialect::DuckDb => format!("'{}'", s.replace('\'', "''")),
            // Spark reads backslash escapes in literals (and concatenates adjacent ones)
            Dialect::Spark => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
        }
    }

    /// The rows of `array` (in a select list, aliased by the caller).
    fn explode(self, array: &str) -> String {
        match self {
            Dialect::DuckDb => format!("UNNEST({array})"),
            Dialect::Spark => format!("explode({array})"),
        }
    }

    /// One row per line of the event files at `paths`, with the columns of
    /// [`EVENT_COLUMNS`] and `file`; an unreadable line gives a row of nulls.
    fn lines(self, paths: &[String], parquet: bool) -> String {
        let cols: Vec<&str> = EVENT_COLUMNS.iter().map(|c| c.0).collect();
        match self {
            Dialect::DuckDb => {
                let list: Vec<String> = paths.iter().map(|p| self.lit(p)).collect();
                let list = list.join(", ");
                if parquet {
                    return format!(
                        "SELECT {}, filename AS file FROM read_parquet([{list}], filename = true)",
                        cols.join(", ")
                    );
                }
                let types: Vec<String> = EVENT_COLUMNS
                    .iter()
                    .map(|(name, duck, _)| format!("{name}: '{duck}'"))
                    .collect();
                format!(
                    "SELECT {}, filename AS file\n    FROM read_json([{list}], format = 'newline_delimited', ignore_errors = true, filename = true,\n      columns = {{{}}})",
                    cols.join(", "),
                    types.join(", ")
                )
            }
            Dialect::Spark => {
                let quoted = |p: &str| format!("`{}`", p.replace('`', "``"));
                if parquet {
                    let parts: Vec<String> = paths
                        .iter()
                        .map(|p| {
                            format!(
                                "SELECT {}, input_file_name() AS file FROM parquet.{}",
                                cols.join(", "),
                                quoted(p)
                            )
                        })
                        .collect();
                    return parts.join("\n    UNION ALL ");
                }
                let ddl: Vec<String> = EVENT_COLUMNS
                    .iter()
                    .map(|(name, _, spark)| format!("`{name}` {spark}"))
                    .collect();
                let ddl = self.lit(&ddl.join(", "));
                let texts: Vec<String> = paths
                    .iter()
                    .map(|p| {
                        format!(
                            "SELECT from_json(value, {ddl}) AS j, input_file_name() AS file FROM text.{} WHERE TRIM(value) <> ''",
                            quoted(p)
                        )
                    })
                    .collect();
                let fields: Vec<String> = cols.iter().map(|c| format!("j.{c} AS {c}")).collect();
                format!(
                    "SELECT {}, file FROM (\n      {}\n    ) t",
                    fields.join(", "),
                    texts.join("\n      UNION ALL ")
                )
            }
        }
    }

    /// `unit_id, value` (as strings) of the covariates CSV at `path`.
    fn covariate_rows(self, path: &str) -> String {
        match self {
            Dialect::DuckDb => format!(
                "SELECT c0, c1 FROM read_csv({}, header = false, auto_detect = false, columns = {{'c0': 'VARCHAR', 'c1': 'VARCHAR'}})",
                self.lit(path)
            ),
            Dialect::Spark => format!(
                "SELECT _c0 AS c0, _c1 AS c1 FROM csv.`{}`",
                path.replace('`', "``")
            ),
        }
    }
}

/// What the query reads.
#[derive(Debug, Clone)]
pub struct SqlInput {
    /// Event files or globs, as the engine will see them.
    pub events: Vec<String>,
    /// Whether they are Parquet files with the columns of the JSON Lines (else JSON
    /// Lines).
    pub parquet: bool,
    /// The covariates CSV (`unit_id,value`, optional header), for CUPED.
    pub covariates: Option<String>,
}

/// The query, in `dialect`, for the experiments and metrics of `cfg`.
pub fn emit(cfg: &Config, dialect: Dialect, input: &SqlInput) -> String {
    let d = dialect;
    let mut q = String::new();
    let _ = writeln!(
        q,
        "-- abgate analyze --emit-sql: the sufficient statistics of every experiment of {} (config {}).\n\
         -- Save the result as CSV with a header and read it with `abgate analyze --config F --summary FILE`.\n\
         -- Columns: docs/analysis.md, section Scale-out analysis.",
        cfg.source.display(),
        cfg.version
    );
    for e in cfg.layers.iter().flat_map(|l| &l.experiments) {
        if e.bandit.is_some() {
            let _ = writeln!(
                q,
                "-- note: `{}` is a bandit experiment: {}",
                e.name,
                super::experiment::BANDIT_NEEDS_EVENTS
            );
        }
    }
    let _ = writeln!(
        q,
        "WITH\n-- every line: one row each, all nulls for an unreadable one\nlines AS (\n  {}\n),",
        d.lines(&input.events, input.parquet)
    );
    q.push_str(EVENTS);
    let _ = writeln!(
        q,
        "-- the variants and metrics of the config\nvariants AS (\n  {}\n),",
        variants_table(cfg, d)
    );
    let _ = writeln!(q, "metrics AS (\n  {}\n),", metrics_table(cfg, d));
    let _ = writeln!(
        q,
        "-- one row per request and experiment: the non-forced assignments to a variant of the config\n\
         requests AS (\n  \
           SELECT x.a.experiment AS experiment, x.a.variant AS variant, COALESCE(x.a.unit_id, x.unit_id) AS unit_id,\n         \
           x.ts AS ts, x.latency_ms AS latency_ms, CASE WHEN x.error IS NULL THEN 0.0 ELSE 1.0 END AS failed\n  \
           FROM (SELECT unit_id, ts, latency_ms, error, {} AS a FROM events WHERE type = 'exposure') x\n  \
           JOIN variants v ON v.experiment = x.a.experiment AND v.variant = x.a.variant\n  \
           WHERE NOT COALESCE(x.a.forced, FALSE)\n),",
        d.explode("assignments")
    );
    q.push_str(UNITS);
    match &input.covariates {
        Some(path) => {
            let _ = writeln!(
                q,
                "-- CUPED: the covariate of each unit (a header line is not a number and drops out);\n\
                 -- a unit without one gets the mean covariate of the experiment's counted units\n\
                 covariate_rows AS (\n  {}\n),",
                d.covariate_rows(path)
            );
            q.push_str(COVARIATES);
        }
        None => q.push_str(NO_COVARIATES),
    }
    q.push_str(MOMENTS);
    q
}

/// The events: each `event_id` once, events without an id all kept.
const EVENTS: &str = "\
-- the events: each event_id once (an event shipped twice counts once), events without an id all kept
events AS (
  SELECT type, ts, unit_id, assignments, metric, value, latency_ms, error FROM lines
  WHERE type IS NOT NULL AND event_id IS NULL
  UNION ALL
  SELECT type, ts, unit_id, assignments, metric, value, latency_ms, error FROM (
    SELECT l.*, ROW_NUMBER() OVER (PARTITION BY event_id ORDER BY ts) AS copy FROM lines l
    WHERE type IS NOT NULL AND event_id IS NOT NULL
  ) d
  WHERE copy = 1
),
";

/// Units, outcomes and per-unit values.
const UNITS: &str = "\
-- per experiment and unit: the first exposure, and how many variants it saw
units AS (
  SELECT experiment, unit_id, MIN(ts) AS first_ts, MIN(variant) AS variant, COUNT(DISTINCT variant) AS variants
  FROM requests WHERE unit_id IS NOT NULL
  GROUP BY experiment, unit_id
),
-- the units that count: seen in one variant only
counted AS (
  SELECT experiment, unit_id, first_ts, variant FROM units WHERE variants = 1
),
outcomes AS (
  SELECT unit_id, metric, value, ts FROM events
  WHERE type = 'outcome' AND unit_id IS NOT NULL AND value IS NOT NULL
),
-- per counted unit and metric: 1 if any value > 0 else 0 (binomial), the sum (continuous),
-- over the outcomes from its first exposure on; 0 without outcomes
unit_values AS (
  SELECT u.experiment AS experiment, u.variant AS variant, u.unit_id AS unit_id, m.metric AS metric,
         CASE WHEN m.kind = 'binomial'
              THEN COALESCE(MAX(CASE WHEN o.value > 0 THEN 1.0 ELSE 0.0 END), 0.0)
              ELSE COALESCE(SUM(o.value), 0.0) END AS y
  FROM counted u
  JOIN metrics m ON m.experiment = u.experiment
  LEFT JOIN outcomes o ON o.unit_id = u.unit_id AND o.metric = m.metric AND o.ts >= u.first_ts
  GROUP BY u.experiment, u.variant, u.unit_id, m.metric, m.kind
),
";

/// The covariate of each observation, with covariates.
const COVARIATES: &str = "\
covariates AS (
  SELECT TRIM(c0) AS unit_id, MIN(TRY_CAST(TRIM(c1) AS DOUBLE)) AS x FROM covariate_rows
  WHERE TRY_CAST(TRIM(c1) AS DOUBLE) IS NOT NULL
  GROUP BY TRIM(c0)
),
covariate_fill AS (
  SELECT u.experiment AS experiment, CAST(SUM(CAST(c.x AS DECIMAL(38, 18))) AS DOUBLE) / COUNT(c.x) AS x_fill
  FROM counted u JOIN covariates c ON c.unit_id = u.unit_id
  GROUP BY u.experiment
),
observations AS (
  SELECT v.experiment AS experiment, v.variant AS variant, v.metric AS metric, v.y AS y, COALESCE(c.x, f.x_fill) AS x
  FROM unit_values v
  LEFT JOIN covariates c ON c.unit_id = v.unit_id
  LEFT JOIN covariate_fill f ON f.experiment = v.experiment
),
";

/// The observations, without covariates.
const NO_COVARIATES: &str = "\
observations AS (
  SELECT experiment, variant, metric, y, CAST(NULL AS DOUBLE) AS x FROM unit_values
),
";

/// Two passes (means, then deviations) and the result rows.
const MOMENTS: &str = "\
-- two passes: the means, from exact decimal sums (a floating-point sum's error depends on the
-- order of the rows, and a mean off in its 13th digit is a lift off in its 9th), then the sums
-- of squared deviations from them (never Σy² − n·ȳ²)
metric_means AS (
  SELECT experiment, variant, metric, COUNT(*) AS n,
         CAST(SUM(CAST(y AS DECIMAL(38, 18))) AS DOUBLE) / COUNT(y) AS mean,
         CAST(SUM(CAST(x AS DECIMAL(38, 18))) AS DOUBLE) / COUNT(x) AS x_mean
  FROM observations
  GROUP BY experiment, variant, metric
),
metric_moments AS (
  SELECT o.experiment AS experiment, o.variant AS variant, o.metric AS metric, m.n AS n, m.mean AS mean,
         SUM((o.y - m.mean) * (o.y - m.mean)) AS m2,
         m.x_mean AS x_mean,
         SUM((o.x - m.x_mean) * (o.x - m.x_mean)) AS x_m2,
         SUM((o.y - m.mean) * (o.x - m.x_mean)) AS c_xy
  FROM observations o
  JOIN metric_means m ON m.experiment = o.experiment AND m.variant = o.variant AND m.metric = o.metric
  GROUP BY o.experiment, o.variant, o.metric, m.n, m.mean, m.x_mean
),
request_means AS (
  SELECT experiment, variant, COUNT(latency_ms) AS n_latency,
         CAST(SUM(CAST(latency_ms AS DECIMAL(38, 18))) AS DOUBLE) / COUNT(latency_ms) AS latency_mean,
         COUNT(*) AS n, CAST(SUM(CAST(failed AS DECIMAL(38, 18))) AS DOUBLE) / COUNT(*) AS error_mean
  FROM requests
  GROUP BY experiment, variant
),
request_moments AS (
  SELECT r.experiment AS experiment, r.variant AS variant,
         m.n_latency AS n_latency, m.latency_mean AS latency_mean,
         SUM((r.latency_ms - m.latency_mean) * (r.latency_ms - m.latency_mean)) AS latency_m2,
         m.n AS n, m.error_mean AS error_mean,
         SUM((r.failed - m.error_mean) * (r.failed - m.error_mean)) AS error_m2
  FROM requests r
  JOIN request_means m ON m.experiment = r.experiment AND m.variant = r.variant
  GROUP BY r.experiment, r.variant, m.n_latency, m.latency_mean, m.n, m.error_mean
),
-- units over time: new units per second when every first exposure is in one clock hour, else per minute
time_keys AS (
  SELECT experiment, CASE WHEN SUBSTR(MIN(first_ts), 1, 13) = SUBSTR(MAX(first_ts), 1, 13) THEN 19 ELSE 16 END AS key_len
  FROM counted GROUP BY experiment
)
SELECT 'metric' AS kind, experiment, variant, metric, CAST(NULL AS STRING) AS time,
       n, mean, m2, x_mean, x_m2, c_xy
FROM metric_moments
UNION ALL
SELECT 'request', experiment, variant, 'latency_ms', NULL, n_latency, latency_mean, latency_m2, NULL, NULL, NULL
FROM request_moments
UNION ALL
SELECT 'request', experiment, variant, 'error_rate', NULL, n, error_mean, error_m2, NULL, NULL, NULL
FROM request_moments
UNION ALL
SELECT 'units', experiment, variant, NULL, NULL, COUNT(*), NULL, NULL, NULL, NULL, NULL
FROM counted GROUP BY experiment, variant
UNION ALL
SELECT 'mixed', experiment, NULL, NULL, NULL, COUNT(*), NULL, NULL, NULL, NULL, NULL
FROM units WHERE variants > 1 GROUP BY experiment
UNION ALL
SELECT 'new_units', c.experiment, c.variant, NULL, SUBSTR(c.first_ts, 1, k.key_len), COUNT(*), NULL, NULL, NULL, NULL, NULL
FROM counted c JOIN time_keys k ON k.experiment = c.experiment
GROUP BY c.experiment, c.variant, SUBSTR(c.first_ts, 1, k.key_len)
UNION ALL
SELECT 'read', NULL, NULL, 'files', NULL, COUNT(DISTINCT file), NULL, NULL, NULL, NULL, NULL FROM lines
UNION ALL
SELECT 'read', NULL, NULL, 'lines', NULL, COUNT(*), NULL, NULL, NULL, NULL, NULL FROM lines
UNION ALL
SELECT 'read', NULL, NULL, 'skipped', NULL, COUNT(*), NULL, NULL, NULL, NULL, NULL FROM lines WHERE type IS NULL
UNION ALL
SELECT 'read', NULL, NULL, 'exposures', NULL, COUNT(*), NULL, NULL, NULL, NULL, NULL FROM events WHERE type = 'exposure'
UNION ALL
SELECT 'read', NULL, NULL, 'outcomes', NULL, COUNT(*), NULL, NULL, NULL, NULL, NULL FROM events WHERE type = 'outcome'
UNION ALL
SELECT 'read', NULL, NULL, 'events', NULL, COUNT(*), NULL, NULL, NULL, NULL, NULL FROM events
ORDER BY kind, experiment, variant, metric, time
";

/// `variants(experiment, variant)`: every variant of every experiment of `cfg`.
fn variants_table(cfg: &Config, d: Dialect) -> String {
    let rows: Vec<Vec<String>> = experiments_of(cfg)
        .into_iter()
        .flat_map(|(li, ei)| {
            let e = &cfg.layers[li].experiments[ei];
            e.variants
                .iter()
                .map(|v| vec![d.lit(&e.name), d.lit(&v.name)])
                .collect::<Vec<_>>()
        })
        .collect();
    table(&["experiment", "variant"], &rows)
}

/// `metrics(experiment, metric, kind)`: the metrics each experiment reports.
fn metrics_table(cfg: &Config, d: Dialect) -> String {
    let rows: Vec<Vec<String>> = experiments_of(cfg)
        .into_iter()
        .flat_map(|(li, ei)| {
            let e = &cfg.layers[li].experiments[ei];
            metric_slots(cfg, e)
                .into_iter()
                .map(|mi| {
                    let m = &cfg.metrics[mi];
                    let kind = match m.kind {
                        MetricKind::Binomial => "binomial",
                        MetricKind::Continuous => "continuous",
                    };
                    vec![d.lit(&e.name), d.lit(&m.name), d.lit(kind)]
                })
                .collect::<Vec<_>>()
        })
        .collect();
    table(&["experiment", "metric", "kind"], &rows)
}

/// A constant table of string columns as `SELECT … UNION ALL SELECT …` (portable where
/// `VALUES` lists are not); typed and empty when there are no rows.
fn table(columns: &[&str], rows: &[Vec<String>]) -> String {
    if rows.is_empty() {
        let cols: Vec<String> = columns
            .iter()
            .map(|c| format!("CAST(NULL AS STRING) AS {c}"))
            .collect();
        return format!("SELECT {} WHERE 1 = 0", cols.join(", "));
    }
    let selects: Vec<String> = rows
        .iter()
        .map(|r| {
            let cols: Vec<String> = r
                .iter()
                .zip(columns)
                .map(|(v, c)| format!("{v} AS {c}"))
                .collect();
            format!("SELECT {}", cols.join(", "))
        })
        .collect();
    selects.join("\n  UNION ALL ")
}

/// The paths the engine reads for the `--events` arguments: a local file or directory is
/// made absolute (the engine may run in another directory); a local directory becomes
/// globs of its `*.jsonl` and `*.json` files (those that exist: DuckDB rejects a glob that
/// matches nothing), or of its `*.parquet` files; anything else (a file, a glob, a URL
/// such as `s3://bucket/events/*.jsonl`) is passed as given. Also whether the input is
/// Parquet (every path ends in `.parquet`).
pub fn engine_paths(events: &[std::path::PathBuf]) -> (Vec<String>, bool) {
    let mut out = Vec::new();
    let mut parquet = true;
    for p in events {
        if p.is_dir() {
            let p = std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
            let p = &p;
            let exts: Vec<&str> = ["jsonl", "json", "parquet"]
                .into_iter()
                .filter(|ext| has_files(p, ext))
                .collect();
            parquet &= exts == ["parquet"];
            for ext in exts {
                out.push(format!("{}/*.{ext}", p.display()));
            }
        } else {
            // a local file by its absolute path, so the engine may run elsewhere
            let p = std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
            let s = p.to_string_lossy().to_string();
            parquet &= s.ends_with(".parquet");
            out.push(s);
        }
    }
    let parquet = parquet && !out.is_empty();
    (out, parquet)
}

fn has_files(dir: &std::path::Path, ext: &str) -> bool {
    std::fs::read_dir(dir).is_ok_and(|rd| {
        rd.filter_map(|e| e.ok())
            .any(|e| e.path().is_file() && e.path().extension().is_some_and(|x| x == ext))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
[upstream.a]
addrs = ["127.0.0.1:1"]
[routing]
default_upstream = "a"
[[metric]]
name = "conversion"
kind = "binomial"
[[metric]]
name = "revenue"
kind = "continuous"
[[layer]]
name = "model"
  [[layer.experiment]]
  name = "ranker"
  traffic = 1.0
  primary_metric = "conversion"
  metrics = ["revenue", "conversion"]
    [[layer.experiment.variant]]
    name = "control"
    weight = 1
    [[layer.experiment.variant]]
    name = "treatment"
    weight = 1
"#;

    fn cfg() -> Config {
        crate::config::test_support::parse(CONFIG).unwrap()
    }

    fn input(cov: bool) -> SqlInput {
        SqlInput {
            events: vec!["/logs/it's/*.jsonl".into()],
            parquet: false,
            covariates: cov.then(|| "/cov.csv".to_string()),
        }
    }

    /// The dialects differ only in the lines that read files, explode the assignments
    /// and quote literals: every other line of the two queries is the same.
    #[test]
    fn the_dialects_differ_only_where_they_must() {
        let (duck, spark) = (
            emit(&cfg(), Dialect::DuckDb, &input(true)),
            emit(&cfg(), Dialect::Spark, &input(true)),
        );
        let (dl, sl): (Vec<&str>, Vec<&str>) = (duck.lines().collect(), spark.lines().collect());
        let differing: Vec<(&str, &str)> = dl
            .iter()
            .zip(&sl)
            .filter(|(a, b)| a != b)
            .map(|(a, b)| (*a, *b))
            .collect();
        for (a, b) in &differing {
            let reads = |s: &str| {
                s.contains("read_json")
                    || s.contains("FROM text.")
                    || s.contains("SELECT type, ts,")
                    || s.contains("SELECT j.type")
                    || s.contains("columns = {")
                    || s.contains("read_csv")
                    || s.contains("csv.`")
                    || s.contains(") t")
                    || s.trim().is_empty()
            };
            let explodes = a.contains("UNNEST(assignments)") && b.contains("explode(assignments)");
            assert!(
                reads(a) && reads(b) || explodes,
                "unexpected difference:\n{a}\n{b}"
            );
        }
        assert!(differing.len() <= 6, "{differing:#?}");
        // the Spark schema and the paths are quoted for Spark
        assert!(spark.contains("from_json(value, '`type` STRING, `ts` STRING"));
        assert!(spark.contains(
            "ARRAY<STRUCT<experiment: STRING, variant: STRING, unit_id: STRING, forced: BOOLEAN>>"
        ));
        assert!(spark.contains("FROM text.`/logs/it's/*.jsonl`"));
        assert!(duck.contains("read_json(['/logs/it''s/*.jsonl'], format = 'newline_delimited'"));
        assert!(spark.contains("FROM csv.`/cov.csv`"));
    }

    #[test]
    fn config_tables_list_every_variant_and_each_metric_once() {
        let q = emit(&cfg(), Dialect::DuckDb, &input(false));
        assert!(q.contains(
            "SELECT 'ranker' AS experiment, 'control' AS variant\n  UNION ALL SELECT 'ranker' AS experiment, 'treatment' AS variant"
        ));
        assert_eq!(q.matches("AS metric, 'binomial' AS kind").count(), 1);
        assert_eq!(q.matches("AS metric, 'continuous' AS kind").count(), 1);
        assert!(q.contains("CAST(NULL AS DOUBLE) AS x FROM unit_values"));
        assert!(!q.contains("covariate_rows"));
        assert_eq!(Dialect::Spark.lit(r"a'b\c"), r"'a\'b\\c'");
        assert_eq!(Dialect::DuckDb.lit(r"a'b\c"), r"'a''b\c'");
    }

    #[test]
    fn no_naive_sum_of_squares() {
        let q = emit(&cfg(), Dialect::Spark, &input(true));
        assert!(!q.contains("y * o.y") && !q.contains("SUM(y * y)") && !q.contains("POW"));
        assert!(q.contains("SUM((o.y - m.mean) * (o.y - m.mean))"));
    }

    #[test]
    fn local_directories_become_globs_of_the_files_they_hold() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("events-1.jsonl"), "").unwrap();
        let (paths, parquet) = engine_paths(&[dir.path().to_path_buf()]);
        assert_eq!(paths, [format!("{}/*.jsonl", dir.path().display())]);
        assert!(!parquet);
        let (paths, parquet) = engine_paths(&["s3://b/x/*.parquet".into()]);
        assert_eq!(paths, ["s3://b/x/*.parquet"]);
        assert!(parquet);
    }
}
