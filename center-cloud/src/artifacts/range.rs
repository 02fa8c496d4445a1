//! One byte range of an HTTP `Range` header (RFC 9110 §14), the part of a download a
//! device resuming an interrupted transfer asks for.

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
