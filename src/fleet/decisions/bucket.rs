//! The bucket's broker calls the decision store makes beyond plain KV operations, each
//! bounded by [`OP_TIMEOUT`].

use super::plan::Current;
use crate::fleet::FleetConn;
use async_nats::jetstream::kv;
use std::time::Duration;

/// Longest wait for one broker operation.
pub const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// Values kept per key in the bucket (the last generations of each decision).
pub const HISTORY: i64 = 10;

/// The bucket of `conn`, opened, or created when it does not exist yet.
pub async fn open_or_create(conn: &FleetConn) -> Result<kv::Store, String> {
    let js = conn.jetstream();
    let name = conn.settings.bucket.clone();
    match bounded(js.get_key_value(name.as_str())).await {
        Ok(Ok(s)) => Ok(s),
        _ => create_bucket(js, &name).await,
    }
}

/// The bucket kept in `kv`, opened (or created) now if it is not there yet; `None`
/// while the broker cannot give it.
pub async fn cached(conn: &FleetConn, kv: &mut Option<kv::Store>) -> Option<kv::Store> {
    if kv.is_none() {
        *kv = open_or_create(conn).await.ok();
    }
    kv.clone()
}

/// Create the bucket's stream as `async_nats`'s `create_key_value` would, without its
/// account query: the account-info answer of nats-server 2.9 does not parse in the
/// client, the stream calls do. Two sidecars creating it at once is fine (same config).
pub async fn create_bucket(
    js: &async_nats::jetstream::Context,
    name: &str,
) -> Result<kv::Store, String> {
    use async_nats::jetstream::stream;
    let config = stream::Config {
        name: format!("KV_{name}"),
        description: Some("abgate fleet: decisions and heartbeats".into()),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: HISTORY,
        storage: stream::StorageType::File,
        num_replicas: 1,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    };
    bounded(js.get_or_create_stream(config))
        .await?
        .map_err(|e| e.to_string())?;
    bounded(js.get_key_value(name))
        .await?
        .map_err(|e| e.to_string())
}

/// The current value of `key`, if it holds a decision.
pub async fn read(kv: &kv::Store, key: &str) -> Result<Option<Current>, String> {
    let entry = bounded(kv.entry(key)).await?.map_err(|e| e.to_string())?;
    match entry {
        Some(e) if e.operation == kv::Operation::Put => {
            let value = serde_json::from_slice(&e.value)
                .map_err(|err| format!("unreadable value of {key}: {err}"))?;
            Ok(Some(Current {
                revision: e.revision,
                value,
            }))
        }
        _ => Ok(None),
    }
}

/// `f`, or an error after [`OP_TIMEOUT`].
pub async fn bounded<T>(f: impl std::future::Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(OP_TIMEOUT, f)
        .await
        .map_err(|_| format!("no answer from the broker within {OP_TIMEOUT:?}"))
}
