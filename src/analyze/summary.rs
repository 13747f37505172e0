//! `abgate analyze --summary FILE`: the result of the `--emit-sql` query, saved as CSV with
//! a header, read back into the [`Sufficient`] statistics the direct analysis computes, so
//! the report that follows is the direct analysis's own.
//!
//! The columns are a contract (docs/analysis.md, "Scale-out analysis"): they are found by
//! name, in any order, and every one must be there. Every row is checked against the
//! config — an experiment, variant or metric it does not define, a row given twice, a
//! count that is not a whole number, a statistic that is not a finite number — and the
//! first problem stops the read with the file, line and column.

use super::csv::{records, Record};
use super::sufficient::{experiments_of, Covariate, ExperimentStats, Sufficient};
use super::AnalyzeError;
use crate::config::Config;
use crate::stats::Moments;
use std::collections::HashSet;
use std::path::Path;

/// The columns of a summary, in the order the query writes them.
pub const COLUMNS: [&str; 11] = [
    "kind",
    "experiment",
    "variant",
    "metric",
    "time",
    "n",
    "mean",
    "m2",
    "x_mean",
    "x_m2",
    "c_xy",
];

/// Read the summary CSV at `path` for `cfg`.
pub fn read_summary(cfg: &Config, path: &Path) -> Result<Sufficient, AnalyzeError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| AnalyzeError::Summary(format!("{}: {e}", path.display())))?;
    parse_summary(cfg, &text)
        .map_err(|(line, msg)| AnalyzeError::Summary(format!("{}:{line}: {msg}", path.display())))
}

/// A problem and the line it is on.
type Located = (usize, String);

/// Read a summary from its text.
fn parse_summary(cfg: &Config, text: &str) -> Result<Sufficient, Located> {
    let recs = records(text)?;
    let Some((header, rows)) = recs.split_first() else {
        return Err((
            1,
            format!("empty: expected a header with {}", COLUMNS.join(",")),
        ));
    };
    let at: Vec<usize> = COLUMNS
        .iter()
        .map(|c| {
            header.fields.iter().position(|h| h == c).ok_or_else(|| {
                (
                    header.line,
                    format!(
                        "no column `{c}` in the header (expected {})",
                        COLUMNS.join(",")
                    ),
                )
            })
        })
        .collect::<Result<_, _>>()?;
    let exps = experiments_of(cfg);
    let mut out = Sufficient {
        experiments: exps
            .iter()
            .map(|&at| ExperimentStats::empty(cfg, at))
            .collect(),
        ..Default::default()
    };
    let mut seen = HashSet::new();
    let mut events = None;
    for rec in rows {
        let row = Row {
            rec,
            at: &at,
            width: header.fields.len(),
        };
        if rec.fields.len() != row.width {
            return Err((
                rec.line,
                format!(
                    "{} fields where the header has {}",
                    rec.fields.len(),
                    row.width
                ),
            ));
        }
        let key: Vec<&str> = (0..5).map(|i| row.get(i)).collect();
        if !seen.insert(key.join("\u{0}")) {
            return Err((rec.line, format!("a second row for {}", key.join(","))));
        }
        if row.get(0) == "read" {
            read_row(&row, &mut out, &mut events)?;
        } else {
            experiment_row(cfg, &exps, &row, &mut out)?;
        }
    }
    let read = &mut out.read;
    if let Some(events) = events {
        read.duplicates = read
            .lines
            .saturating_sub(read.skipped)
            .saturating_sub(events);
    }
    Ok(out)
}

/// One record, its fields found by column.
struct Row<'a> {
    rec: &'a Record,
    at: &'a [usize],
    width: usize,
}

impl Row<'_> {
    /// The field of column `COLUMNS[i]`.
    fn get(&self, i: usize) -> &str {
        &self.rec.fields[self.at[i]]
    }

    fn bad(&self, i: usize, what: &str) -> Located {
        (
            self.rec.line,
            format!(
                "column `{}` (field {}): `{}` {what}",
                COLUMNS[i],
                self.at[i] + 1,
                self.get(i)
            ),
        )
    }

    /// `n`: a count.
    fn count(&self) -> Result<u64, Located> {
        self.get(5)
            .parse()
            .map_err(|_| self.bad(5, "is not a whole number ≥ 0"))
    }

    /// A finite number, or `None` when the field is empty.
    fn number(&self, i: usize) -> Result<Option<f64>, Located> {
        let s = self.get(i);
        if s.is_empty() {
            return Ok(None);
        }
        match s.parse::<f64>() {
            Ok(x) if x.is_finite() => Ok(Some(x)),
            _ => Err(self.bad(i, "is not a finite number")),
        }
    }

    /// n, mean and m2 (mean and m2 may be empty only when n is 0).
    fn moments(&self) -> Result<Moments, Located> {
        let n = self.count()?;
        let (mean, m2) = (self.number(6)?, self.number(7)?);
        match (mean, m2) {
            (Some(mean), Some(m2)) if m2 >= 0.0 => Ok(Moments { n, mean, m2 }),
            (Some(_), Some(_)) => Err(self.bad(7, "is negative")),
            _ if n == 0 => Ok(Moments::default()),
            (None, _) => Err(self.bad(6, "is empty")),
            (_, None) => Err(self.bad(7, "is empty")),
        }
    }

    /// The covariate columns: all three or none.
    fn covariate(&self) -> Result<Option<Covariate>, Located> {
        match (self.number(8)?, self.number(9)?, self.number(10)?) {
            (Some(mean), Some(m2), Some(c_xy)) => Ok(Some(Covariate { mean, m2, c_xy })),
            (None, None, None) => Ok(None),
            _ => Err((
                self.rec.line,
                "x_mean, x_m2 and c_xy must be all given or all empty".into(),
            )),
        }
    }
}

/// A `read` row: what the engine read.
fn read_row(row: &Row, out: &mut Sufficient, events: &mut Option<u64>) -> Result<(), Located> {
    let n = row.count()?;
    let r = &mut out.read;
    match row.get(3) {
        "files" => r.files = n as usize,
        "lines" => r.lines = n,
        "skipped" => r.skipped = n,
        "exposures" => r.exposures = n,
        "outcomes" => r.outcomes = n,
        "events" => *events = Some(n),
        _ => return Err(row.bad(3, "is not a counter of `read` rows")),
    }
    Ok(())
}

/// A row about one experiment.
fn experiment_row(
    cfg: &Config,
    exps: &[(usize, usize)],
    row: &Row,
    out: &mut Sufficient,
) -> Result<(), Located> {
    let name = row.get(1);
    let Some(xi) = exps
        .iter()
        .position(|&(li, ei)| *cfg.layers[li].experiments[ei].name == *name)
    else {
        return Err(row.bad(
            1,
            "is not an experiment of the config (was the summary computed with another config?)",
        ));
    };
    let (li, ei) = exps[xi];
    let e = &cfg.layers[li].experiments[ei];
    let st = &mut out.experiments[xi];
    let kind = row.get(0);
    if kind == "mixed" {
        st.mixed = row.count()?;
        return Ok(());
    }
    let Some(v) = e.variants.iter().position(|x| *x.name == *row.get(2)) else {
        return Err(row.bad(2, &format!("is not a variant of experiment `{name}`")));
    };
    match kind {
        "units" => st.units[v] = row.count()?,
        "new_units" => {
            let n = row.count()?;
            let per_variant = st
                .new_units
                .entry(row.get(4).to_string())
                .or_insert_with(|| vec![0; e.variants.len()]);
            per_variant[v] = n;
        }
        "request" => {
            let m = row.moments()?;
            match row.get(3) {
                "latency_ms" => st.latency[v] = m,
                "error_rate" => st.errors[v] = m,
                _ => return Err(row.bad(3, "is not `latency_ms` or `error_rate`")),
            }
        }
        "metric" => {
            let metric = row.get(3);
            let Some(slot) = st
                .metrics
                .iter()
                .position(|(mi, _)| *cfg.metrics[*mi].name == *metric)
            else {
                return Err(row.bad(3, &format!("is not a metric of experiment `{name}`")));
            };
            let vm = &mut st.metrics[slot].1[v];
            vm.y = row.moments()?;
            vm.x = row.covariate()?;
        }
        _ => {
            return Err(row.bad(
                0,
                "is not a kind of row (metric, request, units, mixed, new_units, read)",
            ))
        }
    }
    Ok(())
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
[[layer]]
name = "model"
  [[layer.experiment]]
  name = "ranker"
  traffic = 1.0
  primary_metric = "conversion"
    [[layer.experiment.variant]]
    name = "control"
    weight = 1
    [[layer.experiment.variant]]
    name = "treatment"
    weight = 1
"#;

    const HEADER: &str = "kind,experiment,variant,metric,time,n,mean,m2,x_mean,x_m2,c_xy\n";

    fn parse(body: &str) -> Result<Sufficient, Located> {
        let cfg = crate::config::test_support::parse(CONFIG).unwrap();
        parse_summary(&cfg, &format!("{HEADER}{body}"))
    }

    #[test]
    fn reads_every_kind_of_row() {
        let s = parse(
            "metric,ranker,treatment,conversion,,4,0.25,0.75,1.5,2,0.5\n\
             request,ranker,control,latency_ms,,3,10,2,,,\n\
             request,ranker,control,error_rate,,3,0,0,,,\n\
             units,ranker,control,,,3,,,,,\n\
             mixed,ranker,,,,1,,,,,\n\
             new_units,ranker,control,,2026-11-23T02:05,3,,,,,\n\
             read,,,lines,,20,,,,,\n\
             read,,,skipped,,1,,,,,\n\
             read,,,events,,17,,,,,\n",
        )
        .unwrap();
        let e = &s.experiments[0];
        assert_eq!(e.units, [3, 0]);
        assert_eq!(e.mixed, 1);
        let t = e.metrics[0].1[1];
        assert_eq!(
            (t.y.n, t.y.mean, t.y.m2, t.x.unwrap().c_xy),
            (4, 0.25, 0.75, 0.5)
        );
        assert!(e.metrics[0].1[0].x.is_none());
        assert_eq!(e.latency[0].mean, 10.0);
        assert_eq!(e.new_units["2026-11-23T02:05"], [3, 0]);
        assert_eq!(
            (s.read.lines, s.read.skipped, s.read.duplicates),
            (20, 1, 2)
        );
    }

    #[test]
    fn columns_are_found_by_name() {
        let cfg = crate::config::test_support::parse(CONFIG).unwrap();
        let s = parse_summary(
            &cfg,
            "n,kind,experiment,variant,metric,time,mean,m2,x_mean,x_m2,c_xy\n7,units,ranker,control,,,,,,,\n",
        )
        .unwrap();
        assert_eq!(s.experiments[0].units, [7, 0]);
    }

    #[test]
    fn errors_name_the_line_and_the_column() {
        let cfg = crate::config::test_support::parse(CONFIG).unwrap();
        let e = parse_summary(&cfg, "kind,experiment,variant,metric,time,n,mean,m2\n").unwrap_err();
        assert_eq!(e.0, 1);
        assert!(e.1.contains("no column `x_mean`"), "{}", e.1);
        let e =
            parse("units,ranker,control,,,3,,,,,\nmetric,ranker,control,conversion,,4,0.2x,1,,,\n")
                .unwrap_err();
        assert_eq!(e.0, 3);
        assert!(
            e.1.contains("column `mean` (field 7): `0.2x` is not a finite number"),
            "{}",
            e.1
        );
        for (body, what) in [
            (
                "units,other,control,,,3,,,,,\n",
                "not an experiment of the config",
            ),
            (
                "units,ranker,b,,,3,,,,,\n",
                "not a variant of experiment `ranker`",
            ),
            (
                "metric,ranker,control,revenue,,3,1,1,,,\n",
                "not a metric of experiment",
            ),
            ("units,ranker,control,,,-3,,,,,\n", "not a whole number"),
            (
                "units,ranker,control,,,3,,,,,\nunits,ranker,control,,,3,,,,,\n",
                "a second row",
            ),
            (
                "metric,ranker,control,conversion,,4,0.5,1,1,,\n",
                "all given or all empty",
            ),
            (
                "metric,ranker,control,conversion,,4,,1,,,\n",
                "`mean` (field 7): `` is empty",
            ),
            (
                "units,ranker,control,,,3\n",
                "6 fields where the header has 11",
            ),
            ("nonsense,ranker,control,,,3,,,,,\n", "not a kind of row"),
            (
                "metric,ranker,control,conversion,,4,0.5,NaN,,,\n",
                "not a finite number",
            ),
        ] {
            let e = parse(body).unwrap_err();
            assert!(e.1.contains(what), "{body}: {}", e.1);
        }
    }
}
