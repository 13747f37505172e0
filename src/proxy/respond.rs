//! Responses abgate writes itself: the outcome endpoint's answers, refusals (403 for a
//! force without the token, 400 for a bad force), and the 502/504 that says which
//! upstream failed. Bodies are JSON: `{"error": "...", "item": n|null}` — except for a
//! gRPC call, which gets what a gRPC client can read: a trailers-only response with
//! `grpc-status` and `grpc-message`.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;
use std::future::Future;
use std::pin::Pin;

/// The JSON error body: what went wrong and, for an outcome body, the offending item.
pub fn json_error(msg: &str, item: Option<usize>) -> String {
    serde_json::json!({"error": msg, "item": item}).to_string()
}

/// Write a complete local response: `status`, an optional JSON body, and the
/// `Set-Cookie` values of ids minted for this request. Returned as a boxed future so the
/// hooks that can answer locally — on rare paths — do not carry its state in the future
/// every request allocates.
pub fn respond<'a>(
    session: &'a mut Session,
    status: u16,
    body: Option<String>,
    set_cookies: &'a [String],
) -> Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>> {
    Box::pin(async move {
        let mut resp = ResponseHeader::build(status, Some(3))?;
        for c in set_cookies {
            resp.append_header("set-cookie", c.as_str())?;
        }
        match body {
            Some(b) => {
                resp.insert_header("content-type", "application/json")?;
                resp.insert_header("content-length", b.len().to_string())?;
                session.write_response_header(Box::new(resp), false).await?;
                session
                    .write_response_body(Some(Bytes::from(b)), true)
                    .await
            }
            None => {
                resp.insert_header("content-length", "0")?;
                session.write_response_header(Box::new(resp), true).await
            }
        }
    })
}

/// Whether `req` is a gRPC call (`content-type: application/grpc…`).
pub fn is_grpc(req: &pingora::http::RequestHeader) -> bool {
    req.headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The gRPC status of abgate's own answer to a failed call: DEADLINE_EXCEEDED (4) for a
/// timeout (HTTP 504), UNAVAILABLE (14) for any other backend failure, INTERNAL (13) for
/// abgate's own.
pub fn grpc_code_for(http_status: u16) -> u32 {
    match http_status {
        504 => 4,
        500 => 13,
        _ => 14,
    }
}

/// Answer a gRPC call locally: HTTP 200, trailers-only (`grpc-status`, `grpc-message`
/// percent-encoded as the gRPC spec asks), so the client reports the status and message
/// instead of failing to parse a JSON body.
pub fn respond_grpc<'a>(
    session: &'a mut Session,
    code: u32,
    message: &'a str,
    set_cookies: &'a [String],
) -> Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>> {
    Box::pin(async move {
        let mut resp = ResponseHeader::build(200, Some(4))?;
        for c in set_cookies {
            resp.append_header("set-cookie", c.as_str())?;
        }
        resp.insert_header("content-type", "application/grpc")?;
        resp.insert_header("grpc-status", code.to_string())?;
        let mut encoded = String::with_capacity(message.len());
        for b in message.bytes() {
            if (0x20..=0x7e).contains(&b) && b != b'%' {
                encoded.push(b as char);
            } else {
                encoded.push_str(&format!("%{b:02X}"));
            }
        }
        resp.insert_header("grpc-message", encoded)?;
        session.write_response_header(Box::new(resp), true).await
    })
}
