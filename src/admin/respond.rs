//! The admin API's responses: plain text for health, JSON for everything else, and
//! errors as `{"error": "..."}` that say what to do.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use serde_json::json;

/// An admin response.
pub type Resp = Response<Full<Bytes>>;

pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Resp {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(body.into()))
        .expect("static response parts are valid")
}

pub fn json_resp(status: StatusCode, v: serde_json::Value) -> Resp {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())))
        .expect("static response parts are valid")
}

pub fn error(status: StatusCode, msg: &str) -> Resp {
    json_resp(status, json!({ "error": msg }))
}
