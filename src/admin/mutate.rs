//! The admin API's mutations — rollback, pause, resume, reload — behind the token
//! (`Authorization: Bearer <token>`, compared in constant time). The work (a decision's
//! fsyncs, re-reading and compiling a config) runs on the blocking pool, never on the
//! threads that proxy requests.

use super::respond::{error, json_resp, Resp};
use crate::guard::{Action, Decision};
use crate::runtime::{App, ReloadOutcome};
use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde_json::json;
use std::sync::Arc;

pub fn check_token(app: &App, req: &Request<Incoming>) -> Option<Resp> {
    let snap = app.snapshot.load();
    let presented = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if snap.token.is_none() {
        return Some(error(
            StatusCode::UNAUTHORIZED,
            &format!(
                "no admin token configured: set ${} and restart",
                snap.config.admin.token_env
            ),
        ));
    }
    if !snap.token_ok(presented.as_bytes()) {
        let from = req
            .extensions()
            .get::<std::net::SocketAddr>()
            .map_or_else(|| "?".to_string(), |a| a.ip().to_string());
        app.refused(
            "admin_token",
            &format!("{} {}", req.method(), req.uri().path()),
            &from,
        );
        return Some(error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong token: send Authorization: Bearer <token>",
        ));
    }
    None
}

/// Mutations run one at a time, on a blocking thread: each persists the state with
/// fsyncs, and a burst of them (a script in a loop, 64 clients at once) then costs the
/// process one thread's worth of work, queued in the admin clients' own latency, instead
/// of a blocking thread each competing with the proxy for the CPU.
static ONE_AT_A_TIME: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// Run `f` as the one admin mutation in progress, off the async threads.
pub(super) async fn serialized<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let _turn = ONE_AT_A_TIME.acquire().await.ok()?;
    tokio::task::spawn_blocking(f).await.ok()
}

/// `POST /admin/experiments/{name}/{rollback|resume|pause}`.
pub async fn experiment(app: &Arc<App>, name: &str, action: &str) -> Resp {
    let (app, name, action) = (app.clone(), name.to_string(), action.to_string());
    serialized(move || mutate(&app, &name, &action))
        .await
        .unwrap_or_else(|| error(StatusCode::INTERNAL_SERVER_ERROR, "admin task failed"))
}

/// `POST /admin/reload`.
pub async fn reload(app: &Arc<App>) -> Resp {
    let a = app.clone();
    match serialized(move || a.reload("POST /admin/reload")).await {
        Some(Ok(ReloadOutcome::Applied { version })) => json_resp(
            StatusCode::OK,
            json!({"result": "applied", "version": version}),
        ),
        Some(Ok(ReloadOutcome::Unchanged)) => json_resp(
            StatusCode::OK,
            json!({"result": "unchanged", "version": app.snapshot.load().config.version}),
        ),
        Some(Err(e)) => json_resp(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"result": "rejected", "error": e.to_string(), "serving": app.snapshot.load().config.version}),
        ),
        None => error(StatusCode::INTERNAL_SERVER_ERROR, "reload task failed"),
    }
}

fn mutate(app: &App, name: &str, action: &str) -> Resp {
    let snap = app.snapshot.load();
    let Some(exp) = snap.find(name) else {
        return error(StatusCode::NOT_FOUND, &format!("no experiment `{name}`"));
    };
    let action = match action {
        "rollback" => Action::ManualRollback,
        "pause" => Action::Pause,
        _ => Action::Resume,
    };
    for (i, v) in exp.config.variants.iter().enumerate() {
        if i == exp.config.control {
            continue;
        }
        let decision = Decision::manual(&exp.config.name, &v.name, action);
        if let Err(e) = app.decide(exp, i, decision) {
            return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
        }
    }
    json_resp(
        StatusCode::OK,
        json!({"experiment": name, "state": exp.state().state_word()}),
    )
}

#[cfg(test)]
mod tests {
    use super::serialized;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::sync::Arc;

    /// What keeps a burst of mutations from starving the proxy: each runs off the
    /// thread that received it (a blocking thread, never an async worker), and never two
    /// at once. Inline on the caller's thread, or unserialized, this fails.
    #[test]
    fn mutations_run_off_the_async_threads_one_at_a_time() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let caller = std::thread::current().id();
        let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let threads = rt.block_on(async {
            let calls = (0..16).map(|_| {
                let (running, most) = (running.clone(), most.clone());
                serialized(move || {
                    let now = running.fetch_add(1, SeqCst) + 1;
                    most.fetch_max(now, SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(2));
                    running.fetch_sub(1, SeqCst);
                    std::thread::current().id()
                })
            });
            futures_util::future::join_all(calls).await
        });
        assert_eq!(threads.len(), 16);
        for t in threads {
            assert_ne!(t.expect("answered"), caller, "ran on the async thread");
        }
        assert_eq!(most.load(SeqCst), 1, "two mutations ran at once");
    }
}
