//! Where the shipper sends events: a [`Publisher`] takes one message (subject, id,
//! payload) and answers with a future of the broker's acknowledgement.
//!
//! The shipper only needs these three operations, so another broker (Kafka: a producer
//! `send` is a delivery future too) is one more implementation of this trait and no
//! change to the shipper. [`JetStream`] is the implementation in use.

use super::FleetConn;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use std::borrow::Cow;
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

/// What the broker said about one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acked {
    /// The broker already had a message with this id (a retry): stored once.
    pub duplicate: bool,
}

/// The acknowledgement of one sent message, resolved when the broker answers.
pub type AckFuture = BoxFuture<'static, Result<Acked, ShipError>>;

/// A broker the shipper publishes to.
pub trait Publisher: Send + Sync + 'static {
    /// Whether the connection is up now (the shipper waits instead of publishing into
    /// a dead connection).
    fn ready(&self) -> bool;

    /// Make sure the destination exists (create the stream if missing). Called before
    /// the first publish and again after any failure.
    fn prepare(&self) -> BoxFuture<'_, Result<(), ShipError>>;

    /// Send one message; resolves once it is handed to the connection, with the future
    /// of its acknowledgement. Messages are sent in the order of the calls.
    fn publish(
        &self,
        subject: Cow<'static, str>,
        msg_id: &str,
        payload: Bytes,
    ) -> BoxFuture<'_, Result<AckFuture, ShipError>>;
}

/// Publishes to a JetStream stream, `Nats-Msg-Id` set to the event id so the stream
/// stores a retried event once (within [`DUPLICATE_WINDOW`]).
pub struct JetStream {
    conn: Arc<FleetConn>,
    stream: String,
}

impl JetStream {
    /// A publisher to the stream `stream` over `conn`.
    pub fn new(conn: Arc<FleetConn>, stream: &str) -> JetStream {
        JetStream {
            conn,
            stream: stream.to_string(),
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

    fn prepare(&self) -> BoxFuture<'_, Result<(), ShipError>> {
        Box::pin(async move {
            self.conn
                .jetstream()
                .get_or_create_stream(Self::stream_config(&self.stream))
                .await
                .map(|_| ())
                .map_err(|e| ShipError::Stream(e.to_string()))
        })
    }

    fn publish(
        &self,
        subject: Cow<'static, str>,
        msg_id: &str,
        payload: Bytes,
    ) -> BoxFuture<'_, Result<AckFuture, ShipError>> {
        let msg = async_nats::jetstream::message::PublishMessage::build()
            .payload(payload)
            .message_id(msg_id);
        let subject = match subject {
            Cow::Borrowed(s) => async_nats::Subject::from_static(s),
            Cow::Owned(s) => async_nats::Subject::from(s),
        };
        Box::pin(async move {
            let ack = self
                .conn
                .jetstream()
                .send_publish(subject, msg)
                .await
                .map_err(|e| ShipError::Publish(e.to_string()))?;
            let ack: AckFuture = Box::pin(async move {
                ack.await
                    .map(|a| Acked {
                        duplicate: a.duplicate,
                    })
                    .map_err(|e| ShipError::Ack(e.to_string()))
            });
            Ok(ack)
        })
    }
}
