//! Sidecars in a fleet for the fleet tests: `abgate serve` processes with `[fleet]` on
//! the two-backend setup, each with its own dirs, read and driven through the admin API;
//! waits over several of them; the decision bucket's history read from the broker.
#![allow(dead_code)]

use super::nats::NatsServer;
use super::{
    agent, events, start, start_file, two_backend, Abgate, MockServer, DIR_PLACEHOLDER, TOKEN,
};
use serde_json::Value;
use std::time::{Duration, Instant, SystemTime};

/// The experiment of [`two_backend`].
pub const EXP: &str = "ranker_v2";
/// The bucket key of its treatment's decision.
pub const KEY: &str = "decision.ranker_v2.treatment";

/// One sidecar's config: the two-backend setup on `a` and `b`, in the fleet at `nats`,
/// with the guardrails `guard` (none if empty).
pub fn sidecar_config(
    nats: &str,
    instance: &str,
    a: &MockServer,
    b: &MockServer,
    guard: &str,
) -> String {
    fleet_config(nats, instance, a, b, guard, false)
}

/// [`sidecar_config`] with `share_windows` set.
pub fn fleet_config(
    nats: &str,
    instance: &str,
    a: &MockServer,
    b: &MockServer,
    guard: &str,
    share_windows: bool,
) -> String {
    let mut c = two_backend(DIR_PLACEHOLDER, a.addr, b.addr).raw(&format!(
        "[fleet]\nnats_url = \"{nats}\"\ninstance = \"{instance}\"\nship_events = false\nshare_windows = {share_windows}\n"
    ));
    if !guard.is_empty() {
        c = c.guardrails(EXP, guard);
    }
    c.toml()
}

/// A running sidecar and its dirs (events, state).
pub struct Sidecar {
    pub g: Abgate,
    pub dir: tempfile::TempDir,
}

impl Sidecar {
    pub fn start(config: &str) -> Sidecar {
        let dir = tempfile::tempdir().unwrap();
        let g = start(dir.path(), config);
        Sidecar { g, dir }
    }

    /// Stop and start again on the same dirs and config.
    pub fn restart(self) -> Sidecar {
        let Sidecar { g, dir } = self;
        let config = g.config.clone();
        g.stop();
        let g = start_file(dir.path(), &config);
        Sidecar { g, dir }
    }

    pub fn get(&self, path: &str) -> Value {
        agent()
            .get(&self.g.admin_url(path))
            .call()
            .unwrap()
            .into_json()
            .unwrap()
    }

    /// The experiment as `GET /admin/experiments` shows it.
    pub fn experiment(&self) -> Value {
        self.get("/admin/experiments")["experiments"][0].clone()
    }

    pub fn state(&self) -> String {
        self.experiment()["state"].as_str().unwrap().to_string()
    }

    pub fn fleet(&self) -> Value {
        self.get("/admin/fleet")
    }

    pub fn connected(&self) -> bool {
        self.fleet()["connected"] == true
    }

    /// `POST /admin/experiments/EXP/<action>` with the token; expects a 200.
    pub fn post(&self, action: &str) {
        let r = agent()
            .post(
                &self
                    .g
                    .admin_url(&format!("/admin/experiments/{EXP}/{action}")),
            )
            .set("authorization", &format!("Bearer {TOKEN}"))
            .call()
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    /// `guardrail` events in this sidecar's log.
    pub fn guardrail_events(&self) -> Vec<Value> {
        events(&self.dir.path().join("events"))
            .into_iter()
            .filter(|e| e["type"] == "guardrail")
            .collect()
    }

    /// `state.dir/fleet.json` (the fleet state it knows and its pending decisions).
    pub fn fleet_file(&self) -> Value {
        std::fs::read(self.dir.path().join("state").join("fleet.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null)
    }

    /// The treatment's `rolled_back` flag as `GET /admin/experiments` shows it.
    pub fn treatment_rolled_back(&self) -> bool {
        self.experiment()
            .pointer("/variants/1/rolled_back")
            .and_then(Value::as_bool)
            .unwrap()
    }
}

/// Wait until every sidecar is connected and sees `n` fresh instances (bounded).
pub fn wait_connected(sidecars: &[Sidecar], n: u64) {
    for s in sidecars {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let f = s.fleet();
            if f["connected"] == true && f["instances_fresh"].as_u64() == Some(n) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the fleet did not assemble within 20 s: {f}\n{}",
                logs(&sidecars.iter().collect::<Vec<_>>())
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

/// Poll every sidecar until each is in `want`; returns each one's delay since `t0` (ms).
pub fn wait_all(sidecars: &[&Sidecar], want: &str, t0: Instant, secs: u64) -> Vec<u128> {
    let mut at: Vec<Option<u128>> = vec![None; sidecars.len()];
    let deadline = t0 + Duration::from_secs(secs);
    while at.iter().any(Option::is_none) {
        for (i, s) in sidecars.iter().enumerate() {
            if at[i].is_none() && s.state() == want {
                at[i] = Some(t0.elapsed().as_millis());
            }
        }
        assert!(
            Instant::now() < deadline,
            "not every sidecar reached {want} within {secs} s: {at:?}\n{}",
            logs(sidecars)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    at.into_iter().map(Option::unwrap).collect()
}

/// Every sidecar's log, for failure messages.
pub fn logs(sidecars: &[&Sidecar]) -> String {
    sidecars
        .iter()
        .map(|s| s.g.logs())
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// Users of the test's experiment assigned to the treatment.
pub fn treated_users(s: &Sidecar, n: usize) -> Vec<String> {
    let cfg = abgate::config::load_file(&s.g.config).unwrap();
    let exp = &cfg.layers[0].experiments[0];
    (0..)
        .map(|i| format!("u{i}"))
        .filter(|u| abgate::assign::variant_of(exp, u) == 1)
        .take(n)
        .collect()
}

/// The bucket's history of `key`: (generation, action, instance) per revision.
pub fn history(nats: &NatsServer, key: &str) -> Vec<(u64, String, String)> {
    timed_history(nats, key)
        .into_iter()
        .map(|(g, a, i, _)| (g, a, i))
        .collect()
}

/// The bucket's history of `key`: (generation, action, instance, ts) per revision.
pub fn timed_history(nats: &NatsServer, key: &str) -> Vec<(u64, String, String, SystemTime)> {
    use futures_util::StreamExt;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = async_nats::connect(nats.url()).await.unwrap();
        let kv = async_nats::jetstream::new(client)
            .get_key_value("abgate_state")
            .await
            .unwrap();
        let mut h = kv.history(key).await.unwrap();
        let mut out = Vec::new();
        while let Some(Ok(e)) = tokio::time::timeout(Duration::from_secs(2), h.next())
            .await
            .ok()
            .flatten()
        {
            let v: Value = serde_json::from_slice(&e.value).unwrap();
            out.push((
                v["generation"].as_u64().unwrap(),
                v["action"].as_str().unwrap().to_string(),
                v["instance"].as_str().unwrap().to_string(),
                humantime::parse_rfc3339(v["ts"].as_str().unwrap()).unwrap(),
            ));
        }
        out
    })
}
