//! Keys, values and the generation rule of the fleet's decisions: pure, no network.
//!
//! One key per experiment and variant, `decision.<experiment>.<variant>` (names are
//! letters, digits, `_` and `-`, so the key is unambiguous and valid in NATS), holding
//! the variant's latest decision with a `generation`. A generation moves from `g` to
//! `g + 1` only by a compare-and-set on the revision that held `g` (generation 1: KV
//! `create`, which fails if the key exists), so exactly one writer takes each
//! generation: "created once" holds per generation, and a reader orders values by
//! generation without trusting clocks. The bucket keeps the earlier generations as
//! history.

use crate::guard::{Action, Decision};
use serde::{Deserialize, Serialize};

/// Prefix of the decision keys.
pub const DECISION_PREFIX: &str = "decision.";
/// Prefix of the heartbeat keys (`instance.<name>`).
pub const INSTANCE_PREFIX: &str = "instance.";

/// The key of the decisions about `variant` of `experiment`.
pub fn decision_key(experiment: &str, variant: &str) -> String {
    format!("{DECISION_PREFIX}{experiment}.{variant}")
}

/// The heartbeat key of `instance`.
pub fn instance_key(instance: &str) -> String {
    format!("{INSTANCE_PREFIX}{instance}")
}

/// A decision as stored in the bucket: the decision (its fields flattened, as in the
/// event log), who took it, and its generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetDecision {
    /// 1 for the key's first decision, then one more per change.
    pub generation: u64,
    /// The instance that took it.
    pub instance: String,
    /// The decision.
    #[serde(flatten)]
    pub decision: Decision,
}

/// A value read from the bucket, with the revision it has there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Current {
    /// Its revision (stream sequence) in the bucket.
    pub revision: u64,
    /// The value.
    pub value: FleetDecision,
}

/// What a decision makes of a variant. Decisions of the same stance are the same
/// decision for the fleet: a second rollback adopts the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stance {
    /// Served as assigned (`resume`; an `alert`, which is never shared, changes nothing).
    Served,
    /// Served by control (`rollback`, `manual_rollback`).
    RolledBack,
    /// The experiment is paused.
    Paused,
}

/// The stance `action` leaves a variant in.
pub fn stance(action: Action) -> Stance {
    match action {
        Action::Rollback | Action::ManualRollback => Stance::RolledBack,
        Action::Pause => Stance::Paused,
        Action::Resume | Action::Alert => Stance::Served,
    }
}

/// How to share a local decision, given the key's current value in the bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// No value yet: create the key (generation 1); fails if another writer was first.
    Create,
    /// Replace `revision` with generation `generation` (compare-and-set).
    Update {
        /// The revision read; the write fails if the key has moved on.
        revision: u64,
        /// The new generation: the current one plus one.
        generation: u64,
    },
    /// Keep the bucket's value: it already says the same (the first writer wins), or it
    /// is a later decision than ours (taken while we were cut off).
    Adopt,
}

/// The rule: the same stance is adopted (first writer wins); a different stance is
/// written as the next generation unless the fleet's value was decided later than ours
/// (a resume issued while this sidecar was cut off wins over the rollback it took
/// before, and a later rollback over an earlier resume).
pub fn plan(current: Option<&Current>, local: &Decision) -> Plan {
    let Some(c) = current else {
        return Plan::Create;
    };
    let theirs = &c.value.decision;
    if stance(theirs.action) == stance(local.action) || theirs.ts > local.ts {
        return Plan::Adopt;
    }
    Plan::Update {
        revision: c.revision,
        generation: c.value.generation + 1,
    }
}

/// Whether a value read at `revision` is news, given the revision last known for its key.
pub fn is_news(known: Option<&Current>, revision: u64) -> bool {
    known.is_none_or(|k| revision > k.revision)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    fn decision(action: Action, at_s: u64) -> Decision {
        let mut d = Decision::manual(&Arc::from("exp"), &Arc::from("b"), action);
        d.ts = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + at_s);
        d
    }

    fn current(revision: u64, generation: u64, d: Decision) -> Current {
        Current {
            revision,
            value: FleetDecision {
                generation,
                instance: "pod-a".into(),
                decision: d,
            },
        }
    }

    #[test]
    fn first_decision_creates_the_key_at_generation_one() {
        assert_eq!(plan(None, &decision(Action::Rollback, 0)), Plan::Create);
    }

    #[test]
    fn a_second_rollback_adopts_the_first_whoever_was_later() {
        let first = current(7, 1, decision(Action::Rollback, 10));
        assert_eq!(
            plan(Some(&first), &decision(Action::Rollback, 11)),
            Plan::Adopt
        );
        assert_eq!(
            plan(Some(&first), &decision(Action::Rollback, 9)),
            Plan::Adopt
        );
        // A manual rollback is the same stance as a guardrail's.
        assert_eq!(
            plan(Some(&first), &decision(Action::ManualRollback, 12)),
            Plan::Adopt
        );
    }

    #[test]
    fn resume_after_a_rollback_takes_the_next_generation_on_its_revision() {
        let rolled = current(7, 1, decision(Action::Rollback, 10));
        assert_eq!(
            plan(Some(&rolled), &decision(Action::Resume, 20)),
            Plan::Update {
                revision: 7,
                generation: 2
            }
        );
    }

    #[test]
    fn rollback_after_a_resume_needs_a_new_generation_too() {
        let resumed = current(9, 2, decision(Action::Resume, 20));
        assert_eq!(
            plan(Some(&resumed), &decision(Action::Rollback, 30)),
            Plan::Update {
                revision: 9,
                generation: 3
            }
        );
    }

    #[test]
    fn a_rollback_taken_before_the_fleets_resume_adopts_the_resume() {
        // Cut off, this sidecar rolled back at t=15; meanwhile the fleet resumed at t=20.
        let resumed = current(9, 2, decision(Action::Resume, 20));
        assert_eq!(
            plan(Some(&resumed), &decision(Action::Rollback, 15)),
            Plan::Adopt
        );
    }

    #[test]
    fn pause_and_rollback_are_different_stances() {
        let paused = current(3, 1, decision(Action::Pause, 10));
        assert_eq!(
            plan(Some(&paused), &decision(Action::ManualRollback, 11)),
            Plan::Update {
                revision: 3,
                generation: 2
            }
        );
        assert_eq!(
            plan(Some(&paused), &decision(Action::Pause, 11)),
            Plan::Adopt
        );
    }

    #[test]
    fn only_a_later_revision_is_news() {
        let k = current(5, 1, decision(Action::Rollback, 0));
        assert!(is_news(None, 1));
        assert!(!is_news(Some(&k), 5));
        assert!(!is_news(Some(&k), 4));
        assert!(is_news(Some(&k), 6));
    }

    #[test]
    fn stored_value_is_the_decision_plus_generation_and_instance() {
        let v = FleetDecision {
            generation: 3,
            instance: "pod-b".into(),
            decision: decision(Action::Rollback, 0),
        };
        let text = serde_json::to_string(&v).unwrap();
        assert!(
            text.starts_with(r#"{"generation":3,"instance":"pod-b","ts":"#),
            "{text}"
        );
        assert!(text.contains(r#""experiment":"exp","variant":"b","action":"rollback""#));
        assert_eq!(serde_json::from_str::<FleetDecision>(&text).unwrap(), v);
        assert_eq!(decision_key("exp", "b"), "decision.exp.b");
        assert_eq!(instance_key("pod-b"), "instance.pod-b");
    }
}
