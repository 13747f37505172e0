//! Where the shipper sends events: a [`Publisher`] sends messages tagged by the shipper
//! and hands back the broker's acknowledgements, each with the tag of its message.
//!
//! The shipper only needs these four operations, so another broker (Kafka: a producer's
//! delivery reports carry what was sent) is one more implementation of this trait and no
//! change to the shipper. [`JetStream`] is the implementation in use.
//!
//! # Why not the client's JetStream publish
//! `async-nats`'s JetStream publish registers a request per message (its own reply
//! subject, a channel and a timer for each) and parses each answer with serde. At one
//! event per proxied request that was the largest cost of the fleet thread. [`JetStream`]
//! instead opens one subscription of its own, `<inbox>.*`, sends every message with the
//! reply subject `<inbox>.<tag>` and reads each answer's tag from its subject and its
//! verdict from a few bytes; the shipper keeps the one timer (on the oldest message in
//! flight). Same protocol, same guarantees: every message still gets its own ack.

use super::FleetConn;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How long JetStream remembers a `Nats-Msg-Id` to drop a second publish of it. A
/// retry after a lost acknowledgement comes well within it.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Why a publish (or the stream set-up) failed. Every failure is retried by the
/// shipper from its checkpoint; none drops an event.
#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    /// The broker is not reachable now.
    #[error("not connected to the broker")]
    NotConnected,
    /// The stream could not be looked up or created.
    #[error("stream set-up failed: {0}")]
    Stream(String),
    /// The message was not sent.
    #[error("publish failed: {0}")]
    Publish(String),
    /// The broker did not acknowledge the message (refused, or no answer in time).
    #[error("no acknowledgement: {0}")]
    Ack(String),
    /// The local event log could not be read or the checkpoint written.
    #[error("event log: {0}")]
    Io(String),
}

/// One answer of the broker: the tag of the message it is about, and whether the
/// message is stored (a duplicate the stream dropped by its id counts as stored).
pub type Ack = (u64, Result<(), ShipError>);

/// A broker the shipper publishes to.
pub trait Publisher: Send + 'static {
    /// Whether the connection is up now (the shipper waits instead of publishing into
    /// a dead connection).
    fn ready(&self) -> bool;

    /// Make sure the destination exists (create the stream if missing) and answers can
    /// be received. Called before the first publish and again after any failure.
    fn prepare(&mut self) -> BoxFuture<'_, Result<(), ShipError>>;

    /// Send one message tagged `tag`; resolves once it is handed to the connection.
    /// Messages are sent in the order of the calls; tags are never reused.
    fn publish(
        &mut self,
        tag: u64,
        subject: Cow<'static, str>,
        msg_id: &str,
        payload: Bytes,
    ) -> impl Future<Output = Result<(), ShipError>> + Send + '_;

    /// The next answer, for any message sent (answers of messages sent before a failure
    /// may still come: the shipper ignores tags it no longer waits for). Cancel-safe:
    /// dropping the future loses no answer. An error here (not in the answer) means no
    /// answer can come any more.
    fn next_ack(&mut self) -> impl Future<Output = Result<Ack, ShipError>> + Send + '_;
}

/// Publishes to a JetStream stream, `Nats-Msg-Id` set to the event id so the stream
/// stores a retried event once (within [`DUPLICATE_WINDOW`]).
pub struct JetStream {
    conn: Arc<FleetConn>,
    stream: String,
    /// `<inbox>.`: the prefix of every reply subject.
    inbox: String,
    /// Answers to `<inbox>.*` (kept across reconnects: the client re-subscribes).
    acks: Option<async_nats::Subscriber>,
}

impl JetStream {
    /// A publisher to the stream `stream` over `conn`.
    pub fn new(conn: Arc<FleetConn>, stream: &str) -> JetStream {
        let inbox = format!("{}.", conn.client().new_inbox());
        JetStream {
            conn,
            stream: stream.to_string(),
            inbox,
            acks: None,
        }
    }

    /// The stream's settings when abgate creates it: every `abgate.events.<type>`
    /// subject, file storage, the duplicate window. An existing stream is used as it is.
    pub fn stream_config(name: &str) -> async_nats::jetstream::stream::Config {
        async_nats::jetstream::stream::Config {
            name: name.to_string(),
            subjects: vec!["abgate.events.>".to_string()],
            storage: async_nats::jetstream::stream::StorageType::File,
            duplicate_window: DUPLICATE_WINDOW,
            ..Default::default()
        }
    }
}

impl Publisher for JetStream {
    fn ready(&self) -> bool {
        self.conn.connected()
    }

    fn prepare(&mut self) -> BoxFuture<'_, Result<(), ShipError>> {
        Box::pin(async move {
            self.conn
                .jetstream()
                .get_or_create_stream(Self::stream_config(&self.stream))
                .await
                .map_err(|e| ShipError::Stream(e.to_string()))?;
            if self.acks.is_none() {
                let sub = self
                    .conn
                    .client()
                    .subscribe(format!("{}*", self.inbox))
                    .await
                    .map_err(|e| ShipError::Stream(format!("cannot receive acks: {e}")))?;
                self.acks = Some(sub);
            }
            Ok(())
        })
    }

    fn publish(
        &mut self,
        tag: u64,
        subject: Cow<'static, str>,
        msg_id: &str,
        payload: Bytes,
    ) -> impl Future<Output = Result<(), ShipError>> + Send + '_ {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, msg_id);
        let subject = match subject {
            Cow::Borrowed(s) => async_nats::Subject::from_static(s),
            Cow::Owned(s) => async_nats::Subject::from(s),
        };
        let mut reply = String::with_capacity(self.inbox.len() + 20);
        reply.push_str(&self.inbox);
        reply.push_str(itoa::Buffer::new().format(tag));
        async move {
            self.conn
                .client()
                .publish_with_reply_and_headers(subject, reply, headers, payload)
                .await
                .map_err(|e| ShipError::Publish(e.to_string()))
        }
    }

    async fn next_ack(&mut self) -> Result<Ack, ShipError> {
        let sub = self.acks.as_mut().ok_or(ShipError::NotConnected)?;
        loop {
            let msg = sub
                .next()
                .await
                .ok_or_else(|| ShipError::Ack("the acknowledgement subscription ended".into()))?;
            let tag = msg
                .subject
                .rsplit('.')
                .next()
                .and_then(|t| t.parse::<u64>().ok());
            if let Some(tag) = tag {
                return Ok((tag, verdict(msg.status, &msg.payload)));
            }
        }
    }
}

/// What a JetStream answer says: stored (`{"stream":…,"seq":…}`, with
/// `"duplicate":true` for an id it already had), or refused (`{"error":{…}}`, or a
/// status such as 503 "no responders" when no stream takes the subject).
pub fn verdict(status: Option<async_nats::StatusCode>, payload: &[u8]) -> Result<(), ShipError> {
    if let Some(s) = status {
        if s != async_nats::StatusCode::OK {
            let why = if s == async_nats::StatusCode::NO_RESPONDERS {
                "no stream takes the subject (503 no responders)".to_string()
            } else {
                format!("status {s}")
            };
            return Err(ShipError::Ack(why));
        }
    }
    if memchr::memmem::find(payload, b"\"error\"").is_some() || payload.is_empty() {
        let text = String::from_utf8_lossy(&payload[..payload.len().min(200)]);
        return Err(ShipError::Ack(format!("refused: {text}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::verdict;
    use async_nats::StatusCode;

    #[test]
    fn answers_are_read_from_their_bytes() {
        assert!(verdict(None, br#"{"stream":"ABGATE_EVENTS","seq":12}"#).is_ok());
        assert!(verdict(None, br#"{"stream":"S","seq":12,"duplicate":true}"#).is_ok());
        let e = verdict(
            None,
            br#"{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"}}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("maximum messages exceeded"), "{e}");
        let e = verdict(Some(StatusCode::NO_RESPONDERS), b"").unwrap_err();
        assert!(e.to_string().contains("no responders"), "{e}");
        assert!(verdict(None, b"").is_err());
    }
}
