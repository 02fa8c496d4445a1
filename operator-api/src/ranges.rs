//! Downloads in byte ranges (RFC 9110 §14): one range of a `Range` header, the part
//! of a file a client resuming an interrupted transfer asks for, and the answer's
//! head (200 whole, 206 with `Content-Range`, or 416), the same at the center and at
//! an edge.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder};

/// What a `Range` header asks of a file of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    /// The whole file: no header, or one this server ignores (several ranges, other
    /// units, a malformed one), as the RFC allows.
    Whole,
    /// Bytes `first..=last`, within the file.
    Part { first: u64, last: u64 },
    /// A range that starts past the end: 416.
    Unsatisfiable,
}

/// Reads the `Range` header value `header` against a file of `size` bytes.
pub fn wanted(header: Option<&str>, size: u64) -> Wanted {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Wanted::Whole;
    };
    if spec.contains(',') {
        return Wanted::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Wanted::Whole;
    };
    let number = |s: &str| s.trim().parse::<u64>().ok();
    match (first.trim().is_empty(), number(first), number(last)) {
        // `-n`: the last n bytes.
        (true, _, Some(n)) => {
            if n == 0 || size == 0 {
                Wanted::Unsatisfiable
            } else {
                Wanted::Part {
                    first: size.saturating_sub(n),
                    last: size - 1,
                }
            }
        }
        (false, Some(first), end) if last.trim().is_empty() || end.is_some() => {
            if first >= size {
                return Wanted::Unsatisfiable;
            }
            let last = end.map_or(size - 1, |l| l.min(size - 1));
            if last < first {
                return Wanted::Whole;
            }
            Wanted::Part { first, last }
        }
        _ => Wanted::Whole,
    }
}

/// The bytes a download sends: `first..first + length`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub first: u64,
    pub length: u64,
}

/// How to answer a download.
pub enum Answer {
    /// With this head, then the bytes of this span.
    Send(HttpResponseBuilder, Span),
    /// With this 416, complete: the range starts past the end.
    Unsatisfiable(HttpResponse),
}

/// How to answer `req` for a file of `size` bytes whose content is identified by
/// `etag` (its digest).
pub fn answer(req: &HttpRequest, size: u64, etag: &str, filename: &str) -> Answer {
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok());
    let (status, first, last) =
        match wanted(range, size) {
            Wanted::Whole => (StatusCode::OK, 0, size.saturating_sub(1)),
            Wanted::Part { first, last } => (StatusCode::PARTIAL_CONTENT, first, last),
            Wanted::Unsatisfiable => {
                return Answer::Unsatisfiable(HttpResponse::build(StatusCode::RANGE_NOT_SATISFIABLE)
                .insert_header((header::CONTENT_RANGE, format!("bytes */{size}")))
                .json(serde_json::json!({
                    "status": 416,
                    "message": format!("range starts past the end of the file ({size} bytes)"),
                    "data": null,
                    "code": "INVALID_ARGUMENT",
                    "field": "range",
                })));
            }
        };
    let mut head = HttpResponse::build(status);
    head.content_type("application/octet-stream")
        .insert_header((header::ACCEPT_RANGES, "bytes"))
        .insert_header((header::ETAG, format!("\"{etag}\"")))
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{filename}\""),
        ));
    if status == StatusCode::PARTIAL_CONTENT {
        head.insert_header((
            header::CONTENT_RANGE,
            format!("bytes {first}-{last}/{size}"),
        ));
    }
    let length = if size == 0 { 0 } else { last - first + 1 };
    head.no_chunking(length);
    Answer::Send(head, Span { first, length })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_read_as_the_rfc_says() {
        let part = |first, last| Wanted::Part { first, last };
        assert_eq!(wanted(None, 100), Wanted::Whole);
        assert_eq!(wanted(Some("bytes=0-9"), 100), part(0, 9));
        assert_eq!(wanted(Some("bytes=90-"), 100), part(90, 99));
        assert_eq!(wanted(Some("bytes=90-500"), 100), part(90, 99));
        assert_eq!(wanted(Some("bytes=-10"), 100), part(90, 99));
        assert_eq!(wanted(Some("bytes=-500"), 100), part(0, 99));
        assert_eq!(wanted(Some("bytes=100-"), 100), Wanted::Unsatisfiable);
        assert_eq!(wanted(Some("bytes=-0"), 100), Wanted::Unsatisfiable);
        assert_eq!(wanted(Some("bytes=0-1,5-6"), 100), Wanted::Whole);
        assert_eq!(wanted(Some("items=0-1"), 100), Wanted::Whole);
        assert_eq!(wanted(Some("bytes=9-3"), 100), Wanted::Whole);
        assert_eq!(wanted(Some("bytes=x-3"), 100), Wanted::Whole);
        assert_eq!(wanted(Some("bytes=3-x"), 100), Wanted::Whole);
    }
}
