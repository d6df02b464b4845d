//! The per-kind tables of `docs/SCHEMA.md`, generated from the definitions.
//!
//! The document keeps its prose; each generated part stands between
//! `<!-- BEGIN GENERATED name ... -->` and `<!-- END GENERATED name -->`
//! lines. A test compares them with [`regions`]; run it with
//! `FLEETPULSE_BLESS=1` to write them instead.

use std::fmt::Write as _;

use super::{Column, Kind, KindVisitor, RecordKind, Role, each_kind};

/// The generated regions of `docs/SCHEMA.md`: `(name, text)`.
pub fn regions() -> Vec<(&'static str, String)> {
    let mut tables = Tables::default();
    each_kind(&mut tables);
    vec![
        ("sqlite-tables", tables.sqlite),
        ("line-protocol-measurements", tables.measurements),
    ]
}

/// The SQLite table and the line-protocol measurement of one kind, as the
/// document shows them.
pub fn tables_of<R: RecordKind>() -> (String, String) {
    let mut tables = Tables::default();
    tables.kind::<R>();
    (tables.sqlite, tables.measurements)
}

/// `doc` with every generated region replaced by its text from `regions`.
/// Errors name a region whose markers are missing.
pub fn splice(doc: &str, regions: &[(&str, String)]) -> Result<String, String> {
    let mut out = doc.to_owned();
    for (name, text) in regions {
        let begin = format!("<!-- BEGIN GENERATED {name} ");
        let end = format!("<!-- END GENERATED {name} -->");
        let start = out
            .find(&begin)
            .ok_or_else(|| format!("no `{begin}...-->` line"))?;
        let body = start + out[start..].find('\n').ok_or("unterminated marker")? + 1;
        let stop = out[body..]
            .find(&end)
            .map(|i| body + i)
            .ok_or_else(|| format!("no `{end}` line"))?;
        out.replace_range(body..stop, &format!("\n{text}\n"));
    }
    Ok(out)
}

/// Collects each kind's SQLite table and line-protocol measurement, a blank
/// line between kinds.
#[derive(Default)]
struct Tables {
    sqlite: String,
    measurements: String,
}

impl KindVisitor for Tables {
    fn kind<R: RecordKind>(&mut self) {
        if !self.sqlite.is_empty() {
            self.sqlite.push('\n');
        }
        sqlite_table::<R>(&mut self.sqlite);
        if R::SQLITE_ONLY {
            return;
        }
        if !self.measurements.is_empty() {
            self.measurements.push('\n');
        }
        measurement_table::<R>(&mut self.measurements);
    }
}

/// The meaning of a column, with an enum's names when the text does not
/// already give them.
fn meaning(c: &Column) -> String {
    match c.ty.kind {
        Kind::Enum { names, .. } if !c.doc.contains(&format!("`{}`", names[0])) => {
            let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
            let (last, rest) = quoted.split_last().expect("an enum has names");
            format!("{}: {} or {last}", c.doc, rest.join(", "))
        }
        _ => c.doc.to_owned(),
    }
}

/// A Markdown table: the header row, then `rows`.
fn table(out: &mut String, header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) {
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(header.len()));
    for row in rows {
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
}

fn sqlite_table<R: RecordKind>(out: &mut String) {
    let key: Vec<String> = R::COLUMNS
        .iter()
        .filter(|c| c.is(Role::Key))
        .map(|c| match c.name {
            "window" => "\"window\"".to_owned(),
            name => name.to_owned(),
        })
        .collect();
    let notes = if R::NOTES.is_empty() {
        String::new()
    } else {
        format!(" {}", R::NOTES)
    };
    let _ = writeln!(
        out,
        "### `{}`\n\nPrimary key `({})`, `WITHOUT ROWID`. {}{notes}\n",
        R::NAME,
        key.join(", "),
        R::DOC
    );
    let rows = R::COLUMNS.iter().map(|c| {
        let name = format!("`{}`", c.name);
        vec![name, c.ty.sql().into(), c.unit.into(), meaning(c)]
    });
    table(out, &["column", "type", "unit", "meaning"], rows);
}

fn measurement_table<R: RecordKind>(out: &mut String) {
    let _ = writeln!(out, "### Measurement `{}`\n", R::NAME);
    let mut tags: Vec<&Column> = R::COLUMNS.iter().filter(|c| c.is(Role::Tag)).collect();
    tags.sort_by_key(|c| c.name);
    let tags = tags.into_iter().map(|c| {
        let name = format!("`{}`", c.name);
        vec![
            name,
            "tag".into(),
            "string".into(),
            c.unit.into(),
            meaning(c),
        ]
    });
    let fields = R::COLUMNS.iter().filter(|c| c.is_field()).map(|c| {
        let absent = if c.ty.optional {
            "; **left out** when absent"
        } else {
            ""
        };
        let name = format!("`{}`", c.name);
        let ty = c.ty.line_protocol().into();
        vec![name, "field".into(), ty, c.unit.into(), meaning(c) + absent]
    });
    let time = R::COLUMNS.iter().filter(|c| c.is(Role::Time)).map(|c| {
        let name = format!("`{}`", c.name);
        vec![
            "*time*".into(),
            "timestamp".into(),
            String::new(),
            "ns since epoch".into(),
            name,
        ]
    });
    let rows = tags.chain(fields).chain(time);
    table(out, &["key", "kind", "type", "unit", "meaning"], rows);
}

/// The cells of the table rows (those starting with ``| ` ``) under the
/// heading `### {heading}` of `doc`, up to the next heading; the first cell
/// without its backticks. For tests that read the document back.
#[cfg(test)]
pub(crate) fn table_rows(doc: &str, heading: &str) -> Vec<Vec<String>> {
    let start = doc
        .find(&format!("### {heading}\n"))
        .unwrap_or_else(|| panic!("docs/SCHEMA.md has no `### {heading}`"));
    doc[start..]
        .lines()
        .skip(1)
        .take_while(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let mut row = vec![cells[1].trim_matches('`').to_owned()];
            row.extend(cells[2..cells.len() - 1].iter().map(|c| c.to_string()));
            row
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// docs/SCHEMA.md holds the generated tables as they are now; with
    /// `FLEETPULSE_BLESS=1` the test writes them.
    #[test]
    fn schema_md_holds_the_generated_tables() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/SCHEMA.md");
        let doc = std::fs::read_to_string(&path).unwrap();
        let spliced = splice(&doc, &regions()).unwrap();
        if std::env::var_os("FLEETPULSE_BLESS").is_some() {
            std::fs::write(&path, &spliced).unwrap();
        } else {
            assert!(
                doc == spliced,
                "docs/SCHEMA.md is out of date with ingest/src/records: run \
                 `FLEETPULSE_BLESS=1 cargo test -p fleetpulse --lib records::docs`"
            );
        }
    }

    #[test]
    fn splice_replaces_only_between_the_markers() {
        let doc =
            "intro\n<!-- BEGIN GENERATED a (edit x) -->\nold\n<!-- END GENERATED a -->\nend\n";
        let out = splice(doc, &[("a", "new".to_owned())]).unwrap();
        assert_eq!(
            out,
            "intro\n<!-- BEGIN GENERATED a (edit x) -->\n\nnew\n<!-- END GENERATED a -->\nend\n"
        );
        assert_eq!(splice(&out, &[("a", "new".to_owned())]).unwrap(), out);
        assert!(
            splice(doc, &[("b", String::new())])
                .unwrap_err()
                .contains("b")
        );
    }
}
