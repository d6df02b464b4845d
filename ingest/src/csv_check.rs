//! A check the `csv` crate does not make: a quoted field whose closing
//! quote never comes. The crate reads such a field to the end of the file,
//! so the rows after it become text of that one field (a touchpoint's
//! notes holding three more touchpoints) and nothing says so. Every CSV
//! input of operators (touchpoints, contract events, backfill readings)
//! runs its bytes through [`QuoteScan`] and refuses the file, naming the
//! line where the quote opened.
//!
//! The scan follows the crate's reading of RFC 4180 with its defaults
//! (`,` between fields, `\n`, `\r` or `\r\n` after a record, `"` to quote):
//! a `"` opens a quoted field only as the first byte of a field; inside
//! one, `""` is a quote and a lone `"` closes it (what follows up to the
//! next `,` or line end is plain text, where a `"` is just a character).
//! A quoted field may span lines (notes of several lines stay allowed).

use std::io::{self, Read};

/// Where a quoted field opened that never closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unclosed {
    /// 1-based line of the opening quote.
    pub line: u64,
    /// 0-based index of the field within its record.
    pub field: usize,
}

impl Unclosed {
    /// What is wrong, for an error that names the file, line and column.
    pub fn message(&self) -> String {
        "a quoted value opens here and its closing `\"` never comes: the rest of the file \
         would be read as this one value; close the quote (a `\"` inside a quoted value is \
         written `\"\"`)"
            .to_string()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the first byte of a field.
    FieldStart,
    /// In a field that is not quoted.
    Plain,
    /// In a quoted field.
    Quoted,
    /// After a `"` in a quoted field: closes it, or escapes a second `"`.
    QuoteInQuoted,
}

/// The quote state of CSV bytes fed in order.
#[derive(Debug, Clone)]
pub struct QuoteScan {
    state: State,
    /// 1-based line of the next byte.
    line: u64,
    /// Field index of the current field within its record.
    field: usize,
    /// Where the open quoted field started, while in one.
    opened: Option<Unclosed>,
    /// Bytes fed so far.
    fed: u64,
    /// Bytes of a byte order mark at the start, skipped.
    bom: u64,
}

impl Default for QuoteScan {
    fn default() -> Self {
        Self {
            state: State::FieldStart,
            line: 1,
            field: 0,
            opened: None,
            fed: 0,
            bom: 0,
        }
    }
}

const BOM: [u8; 3] = [0xEF, 0xBB, 0xBF];

impl QuoteScan {
    /// Feeds the next bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            let at = self.fed;
            self.fed += 1;
            // A UTF-8 byte order mark at the start (the crate skips one).
            if at == self.bom && at < 3 && b == BOM[at as usize] {
                self.bom += 1;
                continue;
            }
            self.byte(b);
        }
    }

    fn byte(&mut self, b: u8) {
        let end_field = |s: &mut Self| {
            s.field += 1;
            s.state = State::FieldStart;
        };
        let end_record = |s: &mut Self| {
            s.field = 0;
            s.state = State::FieldStart;
        };
        match (self.state, b) {
            (State::Quoted, b'"') => self.state = State::QuoteInQuoted,
            (State::Quoted, _) => {}
            (State::QuoteInQuoted, b'"') => self.state = State::Quoted,
            (State::FieldStart, b'"') => {
                self.state = State::Quoted;
                self.opened = Some(Unclosed {
                    line: self.line,
                    field: self.field,
                });
            }
            (_, b',') => end_field(self),
            (_, b'\n' | b'\r') => end_record(self),
            _ => self.state = State::Plain,
        }
        if self.state != State::Quoted && self.state != State::QuoteInQuoted {
            self.opened = None;
        }
        if b == b'\n' {
            self.line += 1;
        }
    }

    /// The quoted field left open, if the bytes fed so far end in one.
    /// (`QuoteInQuoted` at the end is a field closed by its last byte.)
    pub fn unclosed(&self) -> Option<Unclosed> {
        match self.state {
            State::Quoted => self.opened,
            _ => None,
        }
    }
}

/// The quoted field of `text` that never closes, if any.
pub fn unclosed_quote(text: &[u8]) -> Option<Unclosed> {
    let mut scan = QuoteScan::default();
    scan.feed(text);
    scan.unclosed()
}

/// A reader that runs what is read from it through a [`QuoteScan`]: the
/// `csv` crate reads a quoted field to the end of the file before it
/// returns its record, so once the record of an unclosed quote is read,
/// [`Scanned::unclosed`] names it.
#[derive(Debug)]
pub struct Scanned<R> {
    inner: R,
    scan: QuoteScan,
    eof: bool,
}

impl<R: Read> Scanned<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            scan: QuoteScan::default(),
            eof: false,
        }
    }

    /// The quoted field left open at the end of the input, once the end
    /// was read.
    pub fn unclosed(&self) -> Option<Unclosed> {
        if self.eof { self.scan.unclosed() } else { None }
    }
}

impl<R: Read> Read for Scanned<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.eof = true;
        }
        self.scan.feed(&buf[..n]);
        Ok(n)
    }
}

/// The name of field `index` of `header` (`row` if there is none).
pub fn column_name<'a>(header: &[&'a str], index: usize) -> &'a str {
    header.get(index).copied().unwrap_or("row")
}

/// The line of `text` on which the record the `csv` crate placed at
/// `position` starts. The crate ends a record at a line's `\r` and starts
/// the next one's position at the `\n` after it, on the line before: read
/// as it says, every error of a CRLF file (any spreadsheet's export) named
/// the line above the one at fault. The crate's count is kept: counting
/// the file's lines again up to each record took time in the square of its
/// length (a 300,000-row import).
pub fn line_of(text: &str, position: &csv::Position) -> u64 {
    let at = usize::try_from(position.byte()).unwrap_or(usize::MAX);
    position.line() + u64::from(text.as_bytes().get(at) == Some(&b'\n'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Option<(u64, usize)> {
        unclosed_quote(text.as_bytes()).map(|u| (u.line, u.field))
    }

    #[test]
    fn an_unclosed_quote_is_found_at_the_line_it_opened() {
        let header = "customer,kind,notes\n";
        // The bug's file: an open quote, then three rows it would swallow.
        let text = format!("{header}a,training,\"oops\na,kickoff,x\na,webinar,y\n");
        assert_eq!(at(&text), Some((2, 2)));
        // Open in the header, in the first field, at the end without newline.
        assert_eq!(at("\"customer,kind\n"), Some((1, 0)));
        assert_eq!(at(&format!("{header}\"a,b,c")), Some((2, 0)));
        // After a multi-line quoted value, on a later line.
        let text = format!("{header}a,b,\"one\ntwo\"\na,b,\"three\n");
        assert_eq!(at(&text), Some((4, 2)));
        // CRLF line ends.
        assert_eq!(at("a,b\r\nc,\"d\r\ne,f\r\n"), Some((2, 1)));
        // Behind a byte order mark.
        assert_eq!(at("\u{feff}\"a,b\nc,d\n"), Some((1, 0)));
        // The closing quote is escaped: still open.
        assert_eq!(at("a,\"b\"\"\n"), Some((1, 1)));
    }

    /// A record's line, with `\n` and with `\r\n` line ends alike, a
    /// quoted value of two lines before it.
    #[test]
    fn a_record_s_line_is_its_own_whatever_the_line_ends() {
        for end in ["\n", "\r\n"] {
            let text = ["h,n", "a,\"x", "y\"", "b,c", "d,e"].join(end) + end;
            let mut reader = csv::ReaderBuilder::new().from_reader(text.as_bytes());
            let lines: Vec<u64> = (reader.records())
                .map(|r| line_of(&text, r.unwrap().position().unwrap()))
                .collect();
            assert_eq!(lines, [2, 4, 5], "{end:?}");
        }
    }

    #[test]
    fn well_formed_quoting_passes() {
        for text in [
            "customer,kind,notes\na,b,\"one\ntwo\"\na,b,c\n",
            "a,\"say \"\"hi\"\"\",c\n",
            "a,\"\"\n",
            "a,b\"c,d\n",                  // a quote inside a plain field
            "a, \"b,c\n",                  // not the first byte: plain
            "a,\"b\"c\"d,e\n",             // text after a closed quote
            "a,\"x\"",                     // closed by the last byte
            "a,\"x\r\ny\"\r\nb,c\r\n",     // CRLF inside a quoted value
            "\u{feff}\"customer\",kind\n", // a quoted header behind a BOM
            "",
        ] {
            assert_eq!(at(text), None, "{text:?}");
        }
    }

    #[test]
    fn a_scanned_reader_says_so_once_it_read_the_end() {
        let text = b"a,b\nc,\"d\ne,f\n";
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(Scanned::new(&text[..]));
        let mut record = csv::StringRecord::new();
        assert!(reader.read_record(&mut record).unwrap());
        // The crate read the quoted field to the end of the input.
        assert!(reader.read_record(&mut record).unwrap());
        assert_eq!(&record[1], "d\ne,f\n");
        let open = reader.get_ref().unclosed().unwrap();
        assert_eq!((open.line, open.field), (2, 1));
    }
}
