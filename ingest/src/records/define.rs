//! The `record_kind!` macro that turns a kind's column list into its
//! [`RecordKind`](super::RecordKind) impl.

/// `$record.$path`, where the path defaults to the column's name.
macro_rules! field {
    ($record:ident, $column:ident) => {
        $record.$column
    };
    ($record:ident, $column:ident, $($path:ident).+) => {
        $record.$($path).+
    };
}

/// Defines a record kind: `impl RecordKind for $ty` from one line per
/// column: `name [roles] "unit", "meaning";`, or `name = path.to.field ...`
/// when the engine keeps the value under another path.
macro_rules! record_kind {
    (
        $ty:ty {
            name: $name:literal,
            api: $api:literal,
            doc: $doc:literal,
            notes: $notes:literal,
            $(overwrite_if: $overwrite_if:literal,)?
            $(sqlite_only: $sqlite_only:literal,)?
            columns: {
                $(
                    $column:ident $(= $($path:ident).+)? : $cell:ty
                        [$($role:ident)*] $unit:literal, $meaning:literal;
                )+
            }
        }
    ) => {
        impl $crate::records::RecordKind for $ty {
            const NAME: &'static str = $name;
            const API_NAME: &'static str = $api;
            const DOC: &'static str = $doc;
            const NOTES: &'static str = $notes;
            const COLUMNS: &'static [$crate::records::Column] = &[$(
                $crate::records::Column {
                    name: stringify!($column),
                    ty: <$cell as $crate::records::Cell>::TYPE,
                    roles: &[$($crate::records::Role::$role),*],
                    unit: $unit,
                    doc: $meaning,
                }
            ),+];
            $(const OVERWRITE_IF: Option<&'static str> = Some($overwrite_if);)?
            $(const SQLITE_ONLY: bool = $sqlite_only;)?

            fn visit<'a>(&'a self, f: &mut dyn FnMut($crate::records::Value<'a>)) {
                let record = self;
                $(
                    let value: &$cell = &field!(record, $column $(, $($path).+)?);
                    f($crate::records::Cell::value(value));
                )+
            }

            #[allow(unused_assignments)]
            fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
                let mut record = Self::default();
                let mut idx = 0;
                $(
                    field!(record, $column $(, $($path).+)?) =
                        <$cell as $crate::records::Cell>::read(row, idx, stringify!($column))?;
                    idx += 1;
                )+
                Ok(record)
            }
        }
    };
}
