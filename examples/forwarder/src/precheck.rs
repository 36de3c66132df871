//! The limits a config file is held to before it is parsed: its size, and
//! how deep its flow collections (`[` and `{`) nest. The YAML parser takes
//! time that grows with the square of that depth (100,000 levels in a
//! 200 KB file: 45 s); the config needs two.

use std::io::Read;
use std::path::Path;

/// The largest config file read: some million blacklist entries.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// The deepest nesting of `[` and `{` allowed.
pub const MAX_NESTING: usize = 32;

/// Reads the config file, refusing one over [`MAX_FILE_BYTES`].
///
/// # Errors
/// A message naming the file: unreadable, too big, or not UTF-8.
pub fn read(path: &Path) -> Result<String, String> {
    let cannot = |e: std::io::Error| format!("cannot read config file {}: {e}", path.display());
    let file = std::fs::File::open(path).map_err(cannot)?;
    let mut text = String::new();
    // One byte past the limit tells a file at the limit from a bigger one,
    // whatever the file's metadata says (a pipe, a file still growing).
    file.take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(cannot)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(format!(
            "config file {} is larger than {} MiB, the limit",
            path.display(),
            MAX_FILE_BYTES / (1024 * 1024)
        ));
    }
    Ok(text)
}

/// Refuses text whose `[` and `{` nest deeper than [`MAX_NESTING`],
/// naming the line and column (1-based) of the first bracket too deep.
/// Brackets in comments and quoted strings are text; the scan is one pass
/// over the bytes.
///
/// # Errors
/// `line L, column C: nested deeper than 32 levels of [ and {, the limit`.
pub fn nesting(text: &str) -> Result<(), String> {
    #[derive(Clone, Copy, PartialEq)]
    enum In {
        Plain,
        Comment,
        Single,
        /// Just after a `'` in a single-quoted string: its end, or the
        /// first of `''`, a quote in the string.
        SingleEnd,
        Double,
    }
    let mut state = In::Plain;
    let mut depth = 0usize;
    let (mut line, mut column) = (1, 0);
    // The last character outside whitespace on this line, in plain text:
    // a quote opens a string only where a value starts.
    let mut prev: Option<char> = None;
    // Whether the character just before is whitespace or the line's start:
    // a `#` starts a comment only there.
    let mut after_space = true;
    let mut escaped = false;
    for c in text.chars() {
        column += 1;
        if c == '\n' {
            (line, column, prev, after_space) = (line + 1, 0, None, true);
            if matches!(state, In::Comment | In::SingleEnd) {
                state = In::Plain;
            }
            continue;
        }
        if state == In::SingleEnd {
            if c == '\'' {
                state = In::Single;
                continue;
            }
            state = In::Plain;
        }
        match state {
            In::Comment | In::SingleEnd => {}
            In::Single if c == '\'' => state = In::SingleEnd,
            In::Double if escaped => escaped = false,
            In::Double if c == '\\' => escaped = true,
            In::Double if c == '"' => (state, prev) = (In::Plain, Some('"')),
            In::Single | In::Double => {}
            In::Plain => {
                match c {
                    '#' if after_space => state = In::Comment,
                    '\'' | '"'
                        if matches!(prev, None | Some(':' | '-' | '[' | '{' | ',' | '?')) =>
                    {
                        state = if c == '\'' { In::Single } else { In::Double };
                    }
                    '[' | '{' => {
                        depth += 1;
                        if depth > MAX_NESTING {
                            return Err(format!(
                                "line {line}, column {column}: nested deeper than \
                                 {MAX_NESTING} levels of [ and {{, the limit"
                            ));
                        }
                    }
                    ']' | '}' => depth = depth.saturating_sub(1),
                    _ => {}
                }
                if !c.is_whitespace() {
                    prev = Some(c);
                }
            }
        }
        after_space = c.is_whitespace();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_flow_nesting_only_outside_comments_and_strings() {
        let deep = format!("a: {}", "[".repeat(MAX_NESTING + 1));
        let err = nesting(&deep).unwrap_err();
        assert!(
            err.starts_with("line 1, column 36: nested deeper than 32"),
            "{err}"
        );
        let at_limit = format!("a: {}{}", "[".repeat(MAX_NESTING), "]".repeat(MAX_NESTING));
        assert_eq!(nesting(&at_limit), Ok(()));
        let hidden = "[".repeat(100);
        for text in [
            format!("# {hidden}\na: 1 # {hidden}\n"),
            format!("a: '{hidden}'\nb: \"{hidden}\\\" {hidden}\"\n"),
            format!("a: 'it''s {hidden}'\n"),
        ] {
            assert_eq!(nesting(&text), Ok(()), "{text}");
        }
        // A quote inside a plain value opens no string; `#` inside a word
        // opens no comment.
        let err = nesting(&format!("a: it's {hidden}")).unwrap_err();
        assert!(err.starts_with("line 1, column 41"), "{err}");
        let err = nesting(&format!("\nb: x#{hidden}")).unwrap_err();
        assert!(err.starts_with("line 2, column 38"), "{err}");
    }
}
