//! Server-sent event streams of the mock: one event every `interval_ms`, optionally
//! aborted after `fail_after` events.

use super::{BoxError, Ctx, MockBody};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Frame;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};
use std::time::Duration;

/// A body fed by a channel: each item becomes one DATA frame (or HTTP/1.1 chunk), an
/// `Err` aborts the response.
struct ChannelBody {
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, BoxError>>,
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.rx
            .poll_recv(cx)
            .map(|item| item.map(|r| r.map(Frame::data)))
    }
}

/// The error a stream told to fail ends with.
#[derive(Debug)]
struct StreamAborted(u64);

impl std::fmt::Display for StreamAborted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "mock stream aborted after {} events (fail_after)",
            self.0
        )
    }
}

impl std::error::Error for StreamAborted {}

/// `events` server-sent events, one every `interval`; with `fail_after = Some(k)` the
/// body errors after `min(k, events)` of them.
pub(super) fn event_stream(
    ctx: &Ctx,
    events: u64,
    interval: Duration,
    fail_after: Option<u64>,
) -> MockBody {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let name = serde_json::Value::from(ctx.opts.name.as_str()).to_string();
    let stats = ctx.stats.clone();
    tokio::spawn(async move {
        let sent = events.min(fail_after.unwrap_or(u64::MAX));
        for i in 0..sent {
            tokio::time::sleep(interval).await;
            // Written by hand to keep the documented key order.
            let event = format!("data: {{\"token\":{i},\"backend\":{name}}}\n\n");
            if tx.send(Ok(Bytes::from(event))).await.is_err() {
                return; // the client went away
            }
        }
        if fail_after.is_some() {
            stats.aborted.fetch_add(1, Relaxed);
            let _ = tx
                .send(Err(Box::new(StreamAborted(sent)) as BoxError))
                .await;
        }
    });
    ChannelBody { rx }.boxed()
}
