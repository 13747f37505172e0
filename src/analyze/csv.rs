//! A strict reader of CSV as RFC 4180 defines it — what DuckDB's `COPY … (HEADER)` and
//! Spark's CSV writer produce: comma-separated fields, a field in double quotes may hold
//! commas, line breaks and doubled quotes (`""`), records end with LF or CRLF. A stray
//! quote inside an unquoted field, text after a closing quote or an unterminated quote is
//! an error naming the line, never a guess. (The summaries are small, so this is all the
//! CSV abgate needs; see docs/development.md for why it is not a dependency.)

/// One record: its fields, and the line it starts on (1-based).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Record {
    /// The line of the file the record starts on.
    pub line: usize,
    /// Its fields, unquoted.
    pub fields: Vec<String>,
}

/// Every record of `text`; blank lines are skipped. The error names the line.
pub(super) fn records(text: &str) -> Result<Vec<Record>, (usize, String)> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    while chars.peek().is_some() {
        let start = line;
        let mut fields = Vec::new();
        let mut field = String::new();
        loop {
            // one field
            if chars.peek() == Some(&'"') {
                chars.next();
                loop {
                    match chars.next() {
                        None => return Err((start, "a quoted field is not closed".into())),
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            field.push('"');
                        }
                        Some('"') => break,
                        Some(c) => {
                            if c == '\n' {
                                line += 1;
                            }
                            field.push(c);
                        }
                    }
                }
                if !matches!(chars.peek(), None | Some(',' | '\n' | '\r')) {
                    return Err((line, "text after a closing quote".into()));
                }
            } else {
                while let Some(&c) = chars.peek() {
                    match c {
                        ',' | '\n' | '\r' => break,
                        '"' => return Err((line, "a quote inside an unquoted field".into())),
                        _ => {
                            field.push(c);
                            chars.next();
                        }
                    }
                }
            }
            fields.push(std::mem::take(&mut field));
            match chars.next() {
                Some(',') => continue,
                Some('\r') => {
                    if chars.next_if_eq(&'\n').is_none() {
                        return Err((line, "a carriage return outside quotes".into()));
                    }
                    break;
                }
                _ => break, // '\n' or the end
            }
        }
        line += 1;
        if !(fields.len() == 1 && fields[0].is_empty()) {
            out.push(Record {
                line: start,
                fields,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(text: &str) -> Vec<Vec<String>> {
        records(text)
            .unwrap()
            .into_iter()
            .map(|r| r.fields)
            .collect()
    }

    #[test]
    fn reads_quoted_fields_and_both_line_ends() {
        assert_eq!(
            fields("a,b,c\r\n1,,\"x,\"\"y\"\"\"\n\n\"multi\nline\",2,3"),
            vec![
                vec!["a", "b", "c"],
                vec!["1", "", "x,\"y\""],
                vec!["multi\nline", "2", "3"]
            ]
        );
        let r = records("h\n\"a\nb\"\nc\n").unwrap();
        assert_eq!(r.iter().map(|r| r.line).collect::<Vec<_>>(), [1, 2, 4]);
        assert_eq!(fields("a,\"\"\n"), vec![vec!["a", ""]]);
    }

    #[test]
    fn refuses_what_is_not_csv() {
        assert_eq!(records("a\nb\"c\n").unwrap_err().0, 2);
        assert_eq!(records("a\n\"b\"c\n").unwrap_err().0, 2);
        assert_eq!(records("a\n\"b\n").unwrap_err().0, 2);
        assert!(records("a\rb").is_err());
    }
}
