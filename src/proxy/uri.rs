//! The request path as APISIX sees it: percent-decoded, slashes merged, dot segments resolved (nginx's
//! `$uri`), and its safe re-encoding for the upstream request line, so the router and the upstream see
//! the same path.

use std::borrow::Cow;

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

/// Bytes re-encoded when a normalized path is forwarded: everything outside RFC 3986 `pchar` and `/`.
const PATH_UNSAFE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// Why a request path is refused (400).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PathError {
    #[error("path does not start with /")]
    NotAbsolute,
    #[error("path escapes the root with ..")]
    AboveRoot,
    #[error("path contains a NUL byte")]
    Nul,
}

/// Decodes and normalizes a raw request path the way nginx builds `$uri`.
pub(crate) fn normalize(raw: &str) -> Result<String, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if is_normal(raw) {
        return Ok(raw.to_owned());
    }
    let decoded = percent_decode_str(raw).decode_utf8_lossy();
    if decoded.contains('\0') {
        return Err(PathError::Nul);
    }
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/').skip(1) {
        match segment {
            "" | "." => {}
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    // A trailing slash (or a trailing `.`/`..` segment, which names a directory) is kept.
    let last = decoded.rsplit('/').next().unwrap_or_default();
    if out.is_empty() || decoded.ends_with('/') || last == "." || last == ".." {
        out.push('/');
    }
    Ok(out)
}

/// Whether a raw path is its own normal form: nothing encoded, no NUL, no `.` or `..` segment and
/// no empty one but the first (before the leading `/`) and the last (a trailing `/`). Most request
/// paths are, and this one pass over the bytes is all they cost.
fn is_normal(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'%' | b'\0' => return false,
            b'/' => {
                if !plain_segment(&bytes[start..i], start == 0) {
                    return false;
                }
                start = i + 1;
            }
            _ => {}
        }
    }
    plain_segment(&bytes[start..], true)
}

/// A segment the normal form keeps as it is; an empty one only where `may_be_empty`.
fn plain_segment(segment: &[u8], may_be_empty: bool) -> bool {
    match segment {
        b"" => may_be_empty,
        b"." | b".." => false,
        _ => true,
    }
}

/// Encodes a normalized path for the upstream request line; borrowed when nothing needs encoding.
pub(crate) fn encode_path(path: &str) -> Cow<'_, str> {
    utf8_percent_encode(path, PATH_UNSAFE).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_slashes_and_resolves_dots() {
        assert_eq!(normalize("/a//b/./c/../d").as_deref(), Ok("/a/b/d"));
        assert_eq!(
            normalize("/azure///http////trigger").as_deref(),
            Ok("/azure/http/trigger")
        );
        assert_eq!(normalize("/").as_deref(), Ok("/"));
        assert_eq!(normalize("/a/b/").as_deref(), Ok("/a/b/"));
        assert_eq!(normalize("/a/b/..").as_deref(), Ok("/a/"));
        assert_eq!(normalize("/a/.b/c.").as_deref(), Ok("/a/.b/c."));
        assert_eq!(normalize("/a/.").as_deref(), Ok("/a/"));
        assert_eq!(normalize("/a//").as_deref(), Ok("/a/"));
    }

    #[test]
    fn encoded_dot_segments_are_resolved_like_plain_ones() {
        assert_eq!(normalize("/a/%2e%2e/b").as_deref(), Ok("/b"));
        assert_eq!(normalize("/%2e%2e/etc/passwd"), Err(PathError::AboveRoot));
        assert_eq!(normalize("/../x"), Err(PathError::AboveRoot));
    }

    #[test]
    fn a_path_is_normal_when_normalizing_leaves_it_as_it_is() {
        let paths = [
            "/", "//", "/a", "/a/", "/a//", "//a", "/a//b", "/a/./b", "/a/../b", "/.", "/..",
            "/a/.", "/a/..", "/./", "/.a", "/a.", "/..a", "/a../b", "/a%20b", "/a\0b", "/a/b/c/",
            "///",
        ];
        for path in paths {
            let by_definition = !path.contains(['%', '\0'])
                && !path.contains("//")
                && !path.split('/').any(|s| s == "." || s == "..");
            assert_eq!(is_normal(path), by_definition, "{path:?}");
            if is_normal(path) {
                assert_eq!(normalize(path).as_deref(), Ok(path), "{path:?}");
            }
        }
    }

    #[test]
    fn decodes_and_reencodes_safely() {
        let p = normalize("/with%20space/%E4%BD%A0").unwrap_or_default();
        assert_eq!(p, "/with space/你");
        assert_eq!(encode_path(&p), "/with%20space/%E4%BD%A0");
        assert_eq!(encode_path("/a?b#c%d"), "/a%3Fb%23c%25d");
        assert_eq!(normalize("/a%00b"), Err(PathError::Nul));
    }
}
