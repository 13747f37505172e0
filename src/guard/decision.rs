//! The one record of a decision about a variant: a guardrail's rollback or alert, or an
//! operator's rollback, pause or resume.
//!
//! The same value is persisted in `[state] dir` (so a rollback survives a restart), kept
//! as the variant's last decision (the admin API shows it), written to the event log as a
//! `guardrail` event, and counted (`abgate_rollbacks_total`). Its field names and words
//! are the event contract (docs/events.md): the event line is this struct serialized
//! after `"type":"guardrail"`.

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::SystemTime;

/// What was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// A guardrail rolled the variant back to control.
    Rollback,
    /// A guardrail fired on an experiment whose `action = "alert"`: nothing changes.
    Alert,
    /// An operator rolled the variant back (`POST …/rollback`).
    ManualRollback,
    /// An operator paused the experiment: every unit is served by control.
    Pause,
    /// An operator cleared rollbacks and pause.
    Resume,
}

impl Action {
    /// The word written in events and state.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Rollback => "rollback",
            Action::Alert => "alert",
            Action::ManualRollback => "manual_rollback",
            Action::Pause => "pause",
            Action::Resume => "resume",
        }
    }

    /// Whether the variant is served by control after this decision.
    pub fn rolls_back(self) -> bool {
        matches!(self, Action::Rollback | Action::ManualRollback)
    }
}

/// Which rule decided: a guardrail, or `manual` for the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardrailKind {
    /// The sequential test on the error-rate difference.
    ErrorRate,
    /// The latency rule on p99.
    LatencyP99,
    /// The latency rule on p50.
    LatencyP50,
    /// The catastrophic-error breaker.
    Breaker,
    /// An operator's call.
    Manual,
    /// A ramp's `max_wait` passed with too little data and `on_insufficient = "rollback"`.
    RampMaxWait,
}

impl GuardrailKind {
    /// The guardrails a check can fire, in the order their metric series are exported.
    pub const CHECKED: [GuardrailKind; 4] = [
        GuardrailKind::ErrorRate,
        GuardrailKind::LatencyP99,
        GuardrailKind::LatencyP50,
        GuardrailKind::Breaker,
    ];

    /// The word used in events, state and the `guardrail` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            GuardrailKind::ErrorRate => "error_rate",
            GuardrailKind::LatencyP99 => "latency_p99",
            GuardrailKind::LatencyP50 => "latency_p50",
            GuardrailKind::Breaker => "breaker",
            GuardrailKind::Manual => "manual",
            GuardrailKind::RampMaxWait => "ramp_max_wait",
        }
    }
}

/// A decision with the numbers behind it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Decision {
    /// When it was decided (RFC 3339 UTC with microseconds on the wire).
    #[serde(with = "crate::rfc3339")]
    pub ts: SystemTime,
    /// Experiment.
    // State files written before these two fields existed lack them; the store fills
    // them in from its keys.
    #[serde(default = "empty")]
    pub experiment: Arc<str>,
    /// The treatment variant judged.
    #[serde(default = "empty")]
    pub variant: Arc<str>,
    /// What was decided.
    pub action: Action,
    /// Which rule decided.
    pub guardrail: GuardrailKind,
    /// Control's statistic (error rate, or latency in ms).
    pub control: f64,
    /// Treatment's statistic.
    pub treatment: f64,
    /// Always-valid p-value, where a test was run.
    pub p_value: Option<f64>,
    /// Control requests in the window.
    pub n_control: u64,
    /// Treatment requests in the window.
    pub n_treatment: u64,
}

impl Decision {
    /// An operator's decision about one variant (no statistics behind it).
    pub fn manual(experiment: &Arc<str>, variant: &Arc<str>, action: Action) -> Decision {
        Decision {
            ts: SystemTime::now(),
            experiment: experiment.clone(),
            variant: variant.clone(),
            action,
            guardrail: GuardrailKind::Manual,
            control: 0.0,
            treatment: 0.0,
            p_value: None,
            n_control: 0,
            n_treatment: 0,
        }
    }
}

fn empty() -> Arc<str> {
    Arc::from("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_round_trips_through_its_persisted_form() {
        let mut d = Decision::manual(&Arc::from("exp"), &Arc::from("b"), Action::Pause);
        d.ts = humantime::parse_rfc3339("2026-11-22T10:00:00.123456Z").unwrap();
        let text = serde_json::to_string(&d).unwrap();
        assert!(text.starts_with(r#"{"ts":"2026-11-22T10:00:00.123456Z","experiment":"exp","variant":"b","action":"pause","guardrail":"manual""#), "{text}");
        assert_eq!(serde_json::from_str::<Decision>(&text).unwrap(), d);
    }

    #[test]
    fn state_written_without_experiment_and_variant_still_reads() {
        let old = r#"{"ts":"2026-11-22T10:00:00.123456Z","action":"rollback","guardrail":"error_rate","control":0.01,"treatment":0.2,"p_value":0.001,"n_control":500,"n_treatment":480}"#;
        let d: Decision = serde_json::from_str(old).unwrap();
        assert_eq!(d.action, Action::Rollback);
        assert_eq!(d.guardrail, GuardrailKind::ErrorRate);
        assert_eq!(&*d.experiment, "");
    }
}
