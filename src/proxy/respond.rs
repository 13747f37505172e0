//! Responses abgate writes itself: the outcome endpoint's answers, refusals (403 for a
//! force without the token, 400 for a bad force), and the 502/504 that says which
//! upstream failed. Bodies are JSON: `{"error": "...", "item": n|null}`.

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
