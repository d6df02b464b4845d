//! What adding a field to a record kind does: a kind as it was (`Before`)
//! and the same kind with one more line (`After`), and every place the new
//! column must appear: the SQLite table of a fresh file, an old file's table
//! (upgraded in place, old rows kept), the upsert and the reader, the line
//! protocol, the OpenAPI schema and the SCHEMA.md tables.

use std::sync::Arc;

use rusqlite::Connection;

use super::docs::tables_of;
use super::openapi::record_schema;
use super::{Doc, RecordKind};
use crate::sinks::influxdb::encode::encode;
use crate::sinks::sqlite::schema::{create_table, missing_columns_of, upsert};

/// A small record kind of the engine, as released.
#[derive(Debug, Clone, Default, PartialEq)]
struct Before {
    customer: Arc<str>,
    window_start: u64,
    score: f64,
}

/// The same kind after a developer added `champions`.
#[derive(Debug, Clone, Default, PartialEq)]
struct After {
    customer: Arc<str>,
    window_start: u64,
    score: f64,
    champions: u32,
}

/// The `pulse` kind's definition with `$extra` columns after its three.
macro_rules! pulse {
    ($ty:ty { $($extra:tt)* }) => {
        record_kind! {
            $ty {
                name: "pulse",
                api: "Pulse",
                doc: "A test kind.",
                notes: "",
                columns: {
                    customer: Arc<str> [Key Tag] "id", "customer id";
                    window_start: u64 [Key Time] "ms since epoch", "start of the day";
                    score: f64 [] "score 0..100", "a score";
                    $($extra)*
                }
            }
        }
    };
}

pulse!(Before {});
// The one line a developer adds:
pulse!(After { champions: u32 [] "operators", "operators with the most hours"; });

fn write<R: RecordKind>(conn: &Connection, record: &R) {
    conn.execute(&upsert::<R>(), rusqlite::params_from_iter(record.values()))
        .unwrap();
}

fn read_all<R: RecordKind>(conn: &Connection) -> Vec<R> {
    let columns: Vec<String> = R::COLUMNS
        .iter()
        .map(|c| format!("\"{}\"", c.name))
        .collect();
    let sql = format!(
        "SELECT {} FROM \"{}\" ORDER BY customer, window_start",
        columns.join(", "),
        R::NAME
    );
    let mut stmt = conn.prepare(&sql).unwrap();
    stmt.query_map([], R::read)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn a_new_field_appears_in_every_store_the_api_and_the_docs() {
    let after = After {
        customer: "acme".into(),
        window_start: 86_400_000,
        score: 71.5,
        champions: 3,
    };

    // SQLite, fresh file: the column is there and round-trips.
    let fresh = Connection::open_in_memory().unwrap();
    assert!(create_table::<After>().contains("\"champions\" INTEGER NOT NULL"));
    fresh.execute_batch(&create_table::<After>()).unwrap();
    write(&fresh, &after);
    assert_eq!(read_all::<After>(&fresh), vec![after.clone()]);

    // SQLite, a file of the release before: the table gains the column with
    // a default, the old row keeps its values, new writes fill it, and the
    // old build still writes (its upsert names only its columns).
    let old = Connection::open_in_memory().unwrap();
    old.execute_batch(&create_table::<Before>()).unwrap();
    let before = Before {
        customer: "zeta".into(),
        window_start: 0,
        score: 10.0,
    };
    write(&old, &before);
    let missing = missing_columns_of::<After>(&old).unwrap();
    assert_eq!(missing, ["\"champions\" INTEGER NOT NULL DEFAULT 0"]);
    for column in &missing {
        old.execute_batch(&format!("ALTER TABLE pulse ADD COLUMN {column}"))
            .unwrap();
    }
    assert!(missing_columns_of::<After>(&old).unwrap().is_empty());
    write(&old, &after);
    write(
        &old,
        &Before {
            score: 11.0,
            ..before.clone()
        },
    );
    let zeta = After {
        customer: "zeta".into(),
        window_start: 0,
        score: 11.0,
        champions: 0,
    };
    assert_eq!(read_all::<After>(&old), vec![after.clone(), zeta]);

    // Line protocol: a field.
    let mut line = String::new();
    encode(&after, &mut line).unwrap();
    assert_eq!(
        line,
        "pulse,customer=acme score=71.5,champions=3i 86400000000000\n"
    );

    // The API: the document and its schema.
    let doc = serde_json::to_value(Doc(&after)).unwrap();
    assert_eq!(doc["champions"], 3);
    let schema = serde_json::to_value(record_schema::<After>()).unwrap();
    assert_eq!(schema["properties"]["champions"]["type"], "integer");
    assert!(
        schema["required"]
            .as_array()
            .unwrap()
            .contains(&"champions".into())
    );

    // The docs.
    let (sqlite, measurement) = tables_of::<After>();
    assert!(
        sqlite.contains(
            "| `champions` | INTEGER NOT NULL | operators | operators with the most hours |"
        ),
        "{sqlite}"
    );
    assert!(
        measurement.contains(
            "| `champions` | field | integer | operators | operators with the most hours |"
        ),
        "{measurement}"
    );
    let (before_sqlite, _) = tables_of::<Before>();
    assert!(!before_sqlite.contains("champions"));
}
