//! `xxd`-style hex dump of the bytes a connection reads and writes.

use std::fmt::Write;

use crate::io::Direction;

/// Formats `bytes` as `xxd` does: offset, 16 bytes in groups of two, printable ASCII.
pub(crate) fn xxd(bytes: &[u8], offset: u64) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(16) * 68);
    for (i, line) in bytes.chunks(16).enumerate() {
        let _ = write!(out, "{:08x}: ", offset + (i as u64) * 16);
        for col in 0..16 {
            match line.get(col) {
                Some(b) => {
                    let _ = write!(out, "{b:02x}");
                }
                None => out.push_str("  "),
            }
            if col % 2 == 1 {
                out.push(' ');
            }
        }
        out.push(' ');
        out.extend(line.iter().map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '.'
            }
        }));
        out.push('\n');
    }
    out
}

/// Emits one TRACE event with the dump of `bytes`, which start at `offset`
/// in the connection's stream of that direction.
#[cold]
pub(crate) fn trace(
    sid: &str,
    id: u64,
    peer: std::net::SocketAddr,
    dir: Direction,
    offset: u64,
    bytes: &[u8],
) {
    if bytes.is_empty() || !tracing::enabled!(target: "monconn::hexdump", tracing::Level::TRACE) {
        return;
    }
    tracing::trace!(
        target: "monconn::hexdump",
        sid,
        id,
        %peer,
        direction = dir.as_str(),
        offset,
        len = bytes.len(),
        "\n{}",
        xxd(bytes, offset)
    );
}

#[cfg(test)]
mod tests {
    use super::xxd;

    #[test]
    fn formats_like_xxd() {
        let dump = xxd(b"GET / HTTP/1.1\r\nHost: a\r\n", 0x10);
        assert_eq!(
            dump,
            "00000010: 4745 5420 2f20 4854 5450 2f31 2e31 0d0a  GET / HTTP/1.1..\n\
             00000020: 486f 7374 3a20 610d 0a                   Host: a..\n"
        );
    }

    #[test]
    fn empty_is_empty() {
        assert_eq!(xxd(b"", 0), "");
    }
}
