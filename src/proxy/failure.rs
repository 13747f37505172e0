//! Failure classification: whose fault a failed request is (the backend's, the
//! client's, or abgate's), the `error` kind its exposure records, and the status the
//! client gets (502, 504 on timeout, 400 for a bad request, nothing for a client that
//! went away); and the gRPC status of a response, which can make a 200 an error.

use crate::events::ErrorKind;
use pingora::{Error, ErrorSource, ErrorType};

/// Whether `e` is the client closing or breaking its connection.
pub fn client_went_away(e: &Error) -> bool {
    e.esource() == &ErrorSource::Downstream
        && matches!(
            e.etype(),
            ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed
        )
}

/// The error kind of a backend failure.
pub fn classify(e: &Error) -> ErrorKind {
    kind_of(e.etype())
}

/// The error kind of a backend failure of type `t`: one rule for served requests and
/// shadow copies.
pub fn kind_of(t: &ErrorType) -> ErrorKind {
    match t {
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
            ErrorKind::Timeout
        }
        ErrorType::ConnectRefused
        | ErrorType::ConnectNoRoute
        | ErrorType::ConnectError
        | ErrorType::TLSHandshakeFailure
        | ErrorType::TLSHandshakeTimedout
        | ErrorType::InvalidCert
        | ErrorType::HandshakeError
        | ErrorType::SocketError => ErrorKind::Connect,
        ErrorType::HTTPStatus(c) if *c >= 500 => ErrorKind::Upstream5xx,
        ErrorType::InvalidHTTPHeader | ErrorType::H1Error | ErrorType::InvalidH2 => {
            ErrorKind::Protocol
        }
        _ => ErrorKind::Reset,
    }
}

/// The `grpc-status` of a response (its trailers, or the header of a trailers-only
/// response), if it has one that is a number.
pub fn grpc_status(headers: &http::HeaderMap) -> Option<u32> {
    let v = headers.get("grpc-status")?;
    std::str::from_utf8(v.as_bytes()).ok()?.trim().parse().ok()
}

/// Why a request's framing is refused, if it is: more than one `Content-Length` (as
/// separate headers or a list such as `5, 5`) or one that is not a number. RFC 9112
/// §6.3 lets a recipient reject these; forwarding them lets the backend reject the
/// request instead, which would count against the variant.
///
/// Hot path: one header lookup per request.
pub fn bad_framing(headers: &http::HeaderMap) -> Option<&'static str> {
    let mut values = headers.get_all(http::header::CONTENT_LENGTH).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return Some("abgate: bad request: more than one Content-Length header");
    }
    let v = first.as_bytes();
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return Some("abgate: bad request: Content-Length must be one decimal number");
    }
    None
}

/// Whether the request head is larger than `limit` bytes (`server.max_header_bytes`):
/// the request line plus each header line as written on the wire (`name: value\r\n`).
///
/// Hot path: one pass over the headers, no allocation; stops as soon as it is over.
pub fn head_too_large(req: &pingora::http::RequestHeader, limit: usize) -> bool {
    let line = req.method.as_str().len() + req.raw_path().len() + 12;
    let mut total = line;
    for (name, value) in req.headers.iter() {
        total += name.as_str().len() + value.len() + 4;
        if total > limit {
            return true;
        }
    }
    total > limit
}

/// The error kind of a failure to connect.
pub fn connect_failure(e: &Error) -> ErrorKind {
    if matches!(e.etype(), ErrorType::ConnectTimedout) {
        ErrorKind::Timeout
    } else {
        ErrorKind::Connect
    }
}

/// The status to answer a failed request with, recording the error kind in `error`
/// (0: the client is gone, answer nothing).
pub fn status_for(e: &Error, error: &mut Option<ErrorKind>) -> u16 {
    match e.esource() {
        ErrorSource::Upstream => {
            let kind = *error.get_or_insert_with(|| classify(e));
            if kind == ErrorKind::Timeout {
                504
            } else {
                502
            }
        }
        ErrorSource::Downstream if client_went_away(e) => 0,
        ErrorSource::Downstream => 400,
        _ => {
            *error = Some(ErrorKind::Proxy);
            500
        }
    }
}
