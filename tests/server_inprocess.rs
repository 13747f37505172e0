//! The server started in process (`abgate::server::start`): it proxies on the listeners
//! the caller bound, its runtime state is readable directly, and `stop` returns only
//! once every exposure of a sent response is on disk.

mod common;
use common::*;

#[test]
fn in_process_server_routes_and_stop_leaves_every_exposure_on_disk() {
    let a = MockServer::builder().name("a").start().unwrap();
    let b = MockServer::builder().name("b").start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let g = start_in_process(dir.path(), &two_backend_config(&a, &b, ""));
    let agent = agent();
    let mut served = std::collections::BTreeMap::new();
    for u in 0..200 {
        let r = agent
            .get(&g.url("/v1/chat"))
            .set("cookie", &format!("abgate_uid=user-{u}"))
            .call()
            .unwrap();
        let variant = r.header("x-abgate-variant").unwrap().to_string();
        *served.entry(variant).or_insert(0) += 1;
    }
    // Both variants served, by hash: 200 users cannot all land on one side of 50/50.
    assert_eq!(served.len(), 2, "{served:?}");
    // Counted in the logging phase, just after each response: poll (bounded).
    wait_for(10, "200 exposures counted", || {
        let snap = g.app().snapshot.load();
        let exp = snap.find("ranker_v2").expect("the experiment is live");
        let n: u64 = exp.runtime.metrics.iter().map(|m| m.exposures.get()).sum();
        (n == 200).then_some(())
    });
    let events_dir = g.dir.join("events");
    let stopped = g.stop();
    assert_eq!(stopped.abandoned, 0);
    assert_eq!(stopped.events_dropped, 0);
    let on_disk = events(&events_dir)
        .iter()
        .filter(|e| e["type"] == "exposure")
        .count();
    assert_eq!(on_disk, 200);
    assert_eq!(stopped.events_written, 200);
}
