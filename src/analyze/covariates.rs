//! The covariates file of CUPED: one pre-experiment value per unit, `unit_id,value`.
//!
//! Blank lines are skipped and a first line whose value is not a finite number is taken
//! for a header; any other line that is not `unit_id,finite number` is an error naming the line, so a
//! wrong file is never half read.

use super::AnalyzeError;
use rustc_hash::FxHashMap as HashMap;

/// Read a covariates CSV (`unit_id,value`, optional header line).
pub fn read_covariates(path: &std::path::Path) -> Result<HashMap<String, f64>, AnalyzeError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| AnalyzeError::Covariates(format!("{}: {e}", path.display())))?;
    let mut out = HashMap::default();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let (u, v) = line.split_once(',').ok_or_else(|| {
            AnalyzeError::Covariates(format!(
                "{}:{}: expected `unit_id,value`",
                path.display(),
                i + 1
            ))
        })?;
        match v.trim().parse::<f64>() {
            Ok(x) if x.is_finite() => {
                out.insert(u.trim().to_string(), x);
            }
            _ if i == 0 => {} // header
            _ => {
                return Err(AnalyzeError::Covariates(format!(
                    "{}:{}: `{}` is not a finite number",
                    path.display(),
                    i + 1,
                    v.trim()
                )))
            }
        }
    }
    Ok(out)
}
