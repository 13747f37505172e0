//! `abgate analyze`: the direct analysis of event files, the SQL of the scale-out
//! analysis (`--emit-sql`), and the report from its result (`--summary`).

use super::{Format, SqlEngine};
use crate::analyze::{self, sql};
use crate::config;
use anyhow::Context;
use std::path::PathBuf;

/// The arguments of `abgate analyze`.
pub(super) struct Args {
    pub config: PathBuf,
    pub events: Vec<PathBuf>,
    pub covariates: Option<PathBuf>,
    pub emit_sql: Option<SqlEngine>,
    pub summary: Option<PathBuf>,
    pub format: Format,
    pub out: Option<PathBuf>,
    pub confidence: f64,
    pub tuning: f64,
}

/// Run `abgate analyze`.
pub(super) fn run(a: &Args) -> anyhow::Result<()> {
    if !(a.confidence > 0.5 && a.confidence < 1.0) {
        anyhow::bail!(
            "--confidence {} must be between 0.5 and 1 (e.g. 0.95)",
            a.confidence
        );
    }
    if !(a.tuning > 0.0) {
        anyhow::bail!(
            "--tuning must be positive (default {})",
            crate::stats::MSPRT_TUNING
        );
    }
    let cfg = config::load_file(&a.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    for e in cfg.layers.iter().flat_map(|l| &l.experiments) {
        if e.bandit.is_some() && (a.emit_sql.is_some() || a.summary.is_some()) {
            eprintln!(
                "abgate analyze: note: `{}`: {}",
                e.name,
                analyze::BANDIT_NEEDS_EVENTS
            );
        }
    }
    if let Some(engine) = a.emit_sql {
        return write_out(a, &emit_sql(&cfg, a, engine)?);
    }
    let mut opts = analyze::Options {
        confidence: a.confidence,
        tuning: a.tuning,
        covariates: None,
    };
    let report = match &a.summary {
        Some(path) => analyze::analyze_summary(&cfg, path, &opts)?,
        None => {
            if let Some(c) = &a.covariates {
                opts.covariates = Some(analyze::read_covariates(c)?);
            }
            let started = std::time::Instant::now();
            analyze::analyze(
                &cfg,
                &a.events,
                &opts,
                |n| {
                    eprintln!(
                        "abgate analyze: {n} lines read ({:.1}s)…",
                        started.elapsed().as_secs_f64()
                    )
                },
                |w| eprintln!("abgate analyze: warning: {w}"),
            )?
        }
    };
    let text = match a.format {
        Format::Table => analyze::render::table(&report),
        Format::Json => analyze::render::json(&report),
        Format::Html => analyze::render::html(&report),
    };
    write_out(a, &text)
}

/// The query of `--emit-sql`. A covariates file that is on this machine is checked first
/// (the engine would skip a bad line without a word); one it cannot see (a URL) is not.
fn emit_sql(cfg: &config::Config, a: &Args, engine: SqlEngine) -> anyhow::Result<String> {
    if let Some(c) = a.covariates.as_deref().filter(|c| c.is_file()) {
        analyze::read_covariates(c)?;
    }
    let (events, parquet) = sql::engine_paths(&a.events);
    let dialect = match engine {
        SqlEngine::Duckdb => sql::Dialect::DuckDb,
        SqlEngine::Spark => sql::Dialect::Spark,
    };
    Ok(sql::emit(
        cfg,
        dialect,
        &sql::SqlInput {
            events,
            parquet,
            covariates: a.covariates.as_ref().map(|c| {
                let c = std::fs::canonicalize(c).unwrap_or_else(|_| c.clone());
                c.to_string_lossy().to_string()
            }),
        },
    ))
}

/// Print `text`, or write it to `--out`.
fn write_out(a: &Args, text: &str) -> anyhow::Result<()> {
    match &a.out {
        Some(p) => {
            std::fs::write(p, text).with_context(|| format!("cannot write {}", p.display()))?;
            eprintln!("abgate analyze: wrote {}", p.display());
        }
        None => print!("{text}"),
    }
    Ok(())
}
