//! The SQLite write connection of the committer: rusqlite, in-process, with cached prepared
//! statements.
//!
//! Why not sqlx here: sqlx's SQLite driver sends every statement to the connection's worker
//! thread and back (~75 µs each on the standard machine), which caps a writer near 1–2k
//! orders/s however many orders share a commit. rusqlite runs a cached statement in ~1.5 µs on
//! the committer's own thread. The SQL strings are the same ones the sqlx arms run (`$1`
//! placeholders are named parameters to SQLite); values are bound and decoded exactly as sqlx
//! does, so rows written here read back identically through the sqlx read pool.
//!
//! (Longer than most files: binding and decoding must mirror sqlx's SQLite encoding exactly,
//! type by type, and its tests sit next to it.)

use std::borrow::Cow;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{Connection, OpenFlags};
use sqlx::error::{DatabaseError, ErrorKind};

/// The committer's SQLite connection. Owned (not borrowed) so a transaction holding it is `Send`.
pub struct LiteConn {
    conn: Connection,
}

impl std::fmt::Debug for LiteConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LiteConn")
    }
}

/// Process-wide SQLite settings, applied before the library first initialises (a later call
/// changes nothing). Memory statistics off: with them on, every allocation SQLite makes takes
/// a global mutex, ~8 % of the committer's time under load (`perf`); shopd never reads them.
pub fn configure_library() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: sqlite3_config is documented as callable before sqlite3_initialize (here the
        // process's first use of SQLite: `Db::connect_sqlite` calls this before opening
        // anything); after initialisation it only returns SQLITE_MISUSE and changes nothing.
        #[allow(unsafe_code)]
        unsafe {
            rusqlite::ffi::sqlite3_config(
                rusqlite::ffi::SQLITE_CONFIG_MEMSTATUS,
                0 as std::ffi::c_int,
            );
        }
    });
}

impl LiteConn {
    /// Open the database file for writing with the same pragmas as the sqlx pools.
    pub fn open(path: &Path, durable: bool) -> Result<Self, sqlx::Error> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        // Durable: the WAL frames of a commit go to the file in one write (`lite_vfs`). That
        // relies on the sync every durable commit makes, so the relaxed mode keeps the plain VFS.
        let conn = if durable && super::lite_vfs::register() {
            Connection::open_with_flags_and_vfs(path, flags, super::lite_vfs::VFS_NAME)
        } else {
            Connection::open_with_flags(path, flags)
        }
        .map_err(|e| {
            sqlx::Error::Configuration(
                format!("cannot open SQLite database {}: {e}", path.display()).into(),
            )
        })?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(lite)?;
        conn.set_prepared_statement_cache_capacity(256);
        let synchronous = if durable { "FULL" } else { "NORMAL" };
        // temp_store=MEMORY: each command's savepoint journals the pages it first touches;
        // in memory, not in a temp file written with a syscall per page. Checkpoints are run
        // by a separate connection (see `checkpoint`), off the committer's thread.
        // journal_size_limit: when the WAL starts over, a file that grew past 64 MiB (a reader
        // held it back; an older shopd) is cut back to that.
        // cache_size: 4 MiB of pages instead of SQLite's 2 MiB, and no more. A B-tree split
        // renumbers pages through the lock page's number (page 262,145), so the next commit
        // truncates the cache by scanning its whole hash table: with 64 MiB that scan took 8 %
        // of the committer, more than the `pread`s a small cache costs (pages come back from
        // the OS cache). Measured in docs/benchmarks.md ("Page cache size").
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous}; PRAGMA foreign_keys = ON;
             PRAGMA temp_store = MEMORY; PRAGMA wal_autocheckpoint = 0;
             PRAGMA journal_size_limit = 67108864; PRAGMA cache_size = -4096;"
        ))
        .map_err(lite)?;
        Ok(Self { conn })
    }

    /// A connection that only checkpoints the WAL into the database file.
    pub fn open_checkpointer(path: &Path) -> Result<Self, sqlx::Error> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(lite)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(lite)?;
        Ok(Self { conn })
    }

    /// Copy committed WAL frames into the database file without blocking the writer
    /// (`PASSIVE`). Returns the WAL's size in frames.
    pub fn checkpoint(&mut self) -> Result<i64, sqlx::Error> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1))
            .map_err(lite)
    }

    /// Statements without parameters, separated by `"; "` (the committer's BEGIN, savepoint
    /// and COMMIT statements): each runs as a cached prepared statement, not parsed again.
    pub fn batch(&mut self, sql: &str) -> Result<(), sqlx::Error> {
        for statement in sql.split("; ") {
            let mut stmt = self.conn.prepare_cached(statement).map_err(lite)?;
            stmt.raw_execute().map_err(lite)?;
        }
        Ok(())
    }

    /// The path of the main database's write-ahead log, as SQLite names it (beside the file
    /// it resolved the database path to). `None` if SQLite knows no file name.
    pub fn wal_path(&self) -> Option<std::path::PathBuf> {
        // SAFETY: `sqlite3_db_filename` returns the name SQLite keeps for the open database (or
        // null) for as long as the connection is open; `sqlite3_filename_wal` takes exactly
        // such a name and returns a string that lives as long. Both are copied at once.
        #[allow(unsafe_code)]
        unsafe {
            let db = rusqlite::ffi::sqlite3_db_filename(self.conn.handle(), c"main".as_ptr());
            if db.is_null() {
                return None;
            }
            let wal = rusqlite::ffi::sqlite3_filename_wal(db);
            if wal.is_null() {
                return None;
            }
            let name = std::ffi::CStr::from_ptr(wal).to_str().ok()?;
            (!name.is_empty()).then(|| std::path::PathBuf::from(name))
        }
    }

    /// The name of the VFS the connection's main database was opened with.
    #[cfg(test)]
    pub fn vfs_name(&self) -> Option<String> {
        let mut vfs: *mut rusqlite::ffi::sqlite3_vfs = std::ptr::null_mut();
        // SAFETY: SQLITE_FCNTL_VFS_POINTER stores the connection's VFS (which lives as long as
        // the process) in the pointer it is given; its name is a NUL-terminated string.
        #[allow(unsafe_code)]
        unsafe {
            let rc = rusqlite::ffi::sqlite3_file_control(
                self.conn.handle(),
                c"main".as_ptr(),
                rusqlite::ffi::SQLITE_FCNTL_VFS_POINTER,
                (&mut vfs as *mut *mut rusqlite::ffi::sqlite3_vfs).cast(),
            );
            if rc != rusqlite::ffi::SQLITE_OK || vfs.is_null() || (*vfs).zName.is_null() {
                return None;
            }
            Some(
                std::ffi::CStr::from_ptr((*vfs).zName)
                    .to_string_lossy()
                    .into_owned(),
            )
        }
    }

    /// The value of a pragma (tests check `synchronous`).
    pub fn pragma_i64(&self, name: &str) -> Result<i64, sqlx::Error> {
        self.conn
            .query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
            .map_err(lite)
    }

    fn prepare(&self, sql: &str, args: &[&dyn Bind]) -> Result<CachedStatement<'_>, sqlx::Error> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(lite)?;
        // `$n` is a named parameter to SQLite: bind by name so `$1` used twice is one value.
        for (i, arg) in args.iter().enumerate() {
            let owned;
            let name = match PARAMETER_NAMES.get(i) {
                Some(name) => *name,
                None => {
                    owned = format!("${}", i + 1);
                    owned.as_str()
                }
            };
            if let Some(index) = stmt.parameter_index(name).map_err(lite)? {
                stmt.raw_bind_parameter(index, arg.value()).map_err(lite)?;
            }
        }
        Ok(stmt)
    }

    pub fn execute(&mut self, sql: &str, args: &[&dyn Bind]) -> Result<u64, sqlx::Error> {
        let mut stmt = self.prepare(sql, args)?;
        let result = stmt.raw_execute();
        match result {
            Ok(n) => Ok(n as u64),
            // A statement with RETURNING or a SELECT run for its effect: step through it.
            Err(rusqlite::Error::ExecuteReturnedResults) => {
                let mut rows = stmt.raw_query();
                let mut n = 0;
                while rows.next().map_err(lite)?.is_some() {
                    n += 1;
                }
                Ok(n)
            }
            Err(e) => Err(lite(e)),
        }
    }

    pub fn all<T: FromLiteRow>(
        &mut self,
        sql: &str,
        args: &[&dyn Bind],
    ) -> Result<Vec<T>, sqlx::Error> {
        let mut stmt = self.prepare(sql, args)?;
        let mut rows = stmt.raw_query();
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(lite)? {
            out.push(T::from_lite_row(row).map_err(decode)?);
        }
        Ok(out)
    }

    pub fn optional<T: FromLiteRow>(
        &mut self,
        sql: &str,
        args: &[&dyn Bind],
    ) -> Result<Option<T>, sqlx::Error> {
        let mut stmt = self.prepare(sql, args)?;
        let mut rows = stmt.raw_query();
        let first = match rows.next().map_err(lite)? {
            Some(row) => Some(T::from_lite_row(row).map_err(decode)?),
            None => None,
        };
        // Finish the statement so an UPDATE … RETURNING applies to every row it matches.
        while rows.next().map_err(lite)?.is_some() {}
        Ok(first)
    }

    pub fn one<T: FromLiteRow>(&mut self, sql: &str, args: &[&dyn Bind]) -> Result<T, sqlx::Error> {
        self.optional(sql, args)?.ok_or(sqlx::Error::RowNotFound)
    }

    pub fn scalar_optional<T: LiteValue>(
        &mut self,
        sql: &str,
        args: &[&dyn Bind],
    ) -> Result<Option<T>, sqlx::Error> {
        Ok(self.optional::<(T,)>(sql, args)?.map(|(v,)| v))
    }

    pub fn scalar<T: LiteValue>(
        &mut self,
        sql: &str,
        args: &[&dyn Bind],
    ) -> Result<T, sqlx::Error> {
        self.scalar_optional(sql, args)?
            .ok_or(sqlx::Error::RowNotFound)
    }
}

type CachedStatement<'c> = rusqlite::CachedStatement<'c>;

const PARAMETER_NAMES: [&str; 16] = [
    "$1", "$2", "$3", "$4", "$5", "$6", "$7", "$8", "$9", "$10", "$11", "$12", "$13", "$14", "$15",
    "$16",
];

/// A value bound to a statement, encoded exactly as sqlx's SQLite driver encodes it.
pub trait Bind {
    fn value(&self) -> ToSqlOutput<'_>;
}

impl Bind for i64 {
    fn value(&self) -> ToSqlOutput<'_> {
        ToSqlOutput::Owned(Value::Integer(*self))
    }
}
impl Bind for i32 {
    fn value(&self) -> ToSqlOutput<'_> {
        ToSqlOutput::Owned(Value::Integer(i64::from(*self)))
    }
}
impl Bind for bool {
    fn value(&self) -> ToSqlOutput<'_> {
        ToSqlOutput::Owned(Value::Integer(i64::from(*self)))
    }
}
impl Bind for f64 {
    fn value(&self) -> ToSqlOutput<'_> {
        ToSqlOutput::Owned(Value::Real(*self))
    }
}
impl Bind for str {
    fn value(&self) -> ToSqlOutput<'_> {
        ToSqlOutput::Borrowed(ValueRef::Text(self.as_bytes()))
    }
}
impl Bind for String {
    fn value(&self) -> ToSqlOutput<'_> {
        ToSqlOutput::Borrowed(ValueRef::Text(self.as_bytes()))
    }
}
impl Bind for DateTime<Utc> {
    fn value(&self) -> ToSqlOutput<'_> {
        // sqlx: `to_rfc3339_opts(SecondsFormat::AutoSi, false)`.
        ToSqlOutput::Owned(Value::Text(
            self.to_rfc3339_opts(SecondsFormat::AutoSi, false),
        ))
    }
}
impl<T: Bind> Bind for Option<T> {
    fn value(&self) -> ToSqlOutput<'_> {
        match self {
            Some(v) => v.value(),
            None => ToSqlOutput::Owned(Value::Null),
        }
    }
}
impl<T: Bind + ?Sized> Bind for &T {
    fn value(&self) -> ToSqlOutput<'_> {
        (**self).value()
    }
}
impl Bind for Cow<'_, str> {
    fn value(&self) -> ToSqlOutput<'_> {
        ToSqlOutput::Borrowed(ValueRef::Text(self.as_bytes()))
    }
}

/// A column value decoded as sqlx's SQLite driver decodes it.
pub trait LiteValue: Sized {
    fn decode(value: ValueRef<'_>) -> Result<Self, String>;
}

impl LiteValue for i64 {
    fn decode(value: ValueRef<'_>) -> Result<Self, String> {
        match value {
            ValueRef::Integer(i) => Ok(i),
            other => Err(format!(
                "expected an integer, found {:?}",
                other.data_type()
            )),
        }
    }
}
impl LiteValue for bool {
    fn decode(value: ValueRef<'_>) -> Result<Self, String> {
        i64::decode(value).map(|i| i != 0)
    }
}
impl LiteValue for f64 {
    fn decode(value: ValueRef<'_>) -> Result<Self, String> {
        match value {
            ValueRef::Real(f) => Ok(f),
            ValueRef::Integer(i) => Ok(i as f64),
            other => Err(format!("expected a real, found {:?}", other.data_type())),
        }
    }
}
impl LiteValue for String {
    fn decode(value: ValueRef<'_>) -> Result<Self, String> {
        match value {
            ValueRef::Text(t) => String::from_utf8(t.to_vec()).map_err(|e| e.to_string()),
            other => Err(format!("expected text, found {:?}", other.data_type())),
        }
    }
}
impl LiteValue for DateTime<Utc> {
    fn decode(value: ValueRef<'_>) -> Result<Self, String> {
        let text = String::decode(value)?;
        parse_datetime(&text).ok_or_else(|| format!("invalid datetime: {text}"))
    }
}
impl<T: LiteValue> LiteValue for Option<T> {
    fn decode(value: ValueRef<'_>) -> Result<Self, String> {
        match value {
            ValueRef::Null => Ok(None),
            v => T::decode(v).map(Some),
        }
    }
}

/// The text formats sqlx accepts for a SQLite datetime (RFC 3339 first).
fn parse_datetime(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(dt) = DateTime::parse_from_rfc3339(text) {
        return Some(dt.with_timezone(&Utc));
    }
    for format in ["%F %T%.f", "%F %T%.f%:z", "%F %T%.fZ", "%FT%T%.f"] {
        if let Ok(dt) = DateTime::parse_from_str(text, format) {
            return Some(dt.with_timezone(&Utc));
        }
        if let Ok(dt) = chrono::NaiveDateTime::parse_from_str(text, format) {
            return Some(dt.and_utc());
        }
    }
    None
}

/// A row type readable from the committer's connection (the twin of `sqlx::FromRow`).
pub trait FromLiteRow: Sized {
    fn from_lite_row(row: &rusqlite::Row<'_>) -> Result<Self, String>;
}

/// Decode the named column of a row.
pub fn column<T: LiteValue>(row: &rusqlite::Row<'_>, name: &str) -> Result<T, String> {
    let value = row
        .get_ref(name)
        .map_err(|e| format!("column {name}: {e}"))?;
    T::decode(value).map_err(|e| format!("column {name}: {e}"))
}

fn column_at<T: LiteValue>(row: &rusqlite::Row<'_>, index: usize) -> Result<T, String> {
    let value = row
        .get_ref(index)
        .map_err(|e| format!("column {index}: {e}"))?;
    T::decode(value).map_err(|e| format!("column {index}: {e}"))
}

macro_rules! tuple_rows {
    ($(($($t:ident $i:tt),+))*) => {$(
        impl<$($t: LiteValue),+> FromLiteRow for ($($t,)+) {
            fn from_lite_row(row: &rusqlite::Row<'_>) -> Result<Self, String> {
                Ok(($(column_at::<$t>(row, $i)?,)+))
            }
        }
    )*};
}
tuple_rows! {
    (A 0)
    (A 0, B 1)
    (A 0, B 1, C 2)
    (A 0, B 1, C 2, D 3)
    (A 0, B 1, C 2, D 3, E 4)
    (A 0, B 1, C 2, D 3, E 4, F 5)
    (A 0, B 1, C 2, D 3, E 4, F 5, G 6)
    (A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7)
}

/// Implement [`FromLiteRow`] for a struct that derives `sqlx::FromRow`, reading each field
/// from the column of the same name (as the derive does).
#[macro_export]
macro_rules! lite_row {
    ($t:ty { $($field:ident),* $(,)? }) => {
        impl $crate::db::lite::FromLiteRow for $t {
            fn from_lite_row(row: &::rusqlite::Row<'_>) -> Result<Self, String> {
                Ok(Self { $($field: $crate::db::lite::column(row, stringify!($field))?),* })
            }
        }
    };
}

fn decode(message: String) -> sqlx::Error {
    sqlx::Error::Decode(message.into())
}

/// A rusqlite failure as a sqlx database error, so callers classify it (unique violation,
/// …) the same way whichever driver ran the statement.
pub fn lite(err: rusqlite::Error) -> sqlx::Error {
    match err {
        rusqlite::Error::SqliteFailure(code, message) => {
            let message = message.unwrap_or_else(|| code.to_string());
            sqlx::Error::Database(Box::new(LiteDbError { code, message }))
        }
        rusqlite::Error::QueryReturnedNoRows => sqlx::Error::RowNotFound,
        other => sqlx::Error::Protocol(format!("sqlite: {other}")),
    }
}

#[derive(Debug)]
struct LiteDbError {
    code: rusqlite::ffi::Error,
    message: String,
}

impl std::fmt::Display for LiteDbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "(code: {}) {}", self.code.extended_code, self.message)
    }
}

impl std::error::Error for LiteDbError {}

impl DatabaseError for LiteDbError {
    fn message(&self) -> &str {
        &self.message
    }

    fn code(&self) -> Option<Cow<'_, str>> {
        Some(Cow::Owned(self.code.extended_code.to_string()))
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> ErrorKind {
        use rusqlite::ffi;
        match self.code.extended_code {
            ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                ErrorKind::UniqueViolation
            }
            ffi::SQLITE_CONSTRAINT_FOREIGNKEY => ErrorKind::ForeignKeyViolation,
            ffi::SQLITE_CONSTRAINT_NOTNULL => ErrorKind::NotNullViolation,
            ffi::SQLITE_CONSTRAINT_CHECK => ErrorKind::CheckViolation,
            _ => ErrorKind::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_round_trip_in_sqlx_format() {
        let now = crate::store::now();
        let ToSqlOutput::Owned(Value::Text(text)) = now.value() else {
            panic!("a datetime binds as text");
        };
        assert!(text.contains('T') && text.ends_with("+00:00"), "{text}");
        assert_eq!(parse_datetime(&text), Some(now));
        assert!(parse_datetime("2026-11-21 10:00:00").is_some());
    }

    #[test]
    fn statements_bind_dollar_parameters_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = LiteConn::open(&dir.path().join("t.db"), true).unwrap();
        c.batch("CREATE TABLE t (a INTEGER, b TEXT)").unwrap();
        let n = c
            .execute("INSERT INTO t (b, a) VALUES ($2, $1)", &[&7i64, &"x"])
            .unwrap();
        assert_eq!(n, 1);
        let row: (i64, String) = c
            .one("SELECT a, b FROM t WHERE a = $1 OR a = $1", &[&7i64])
            .unwrap();
        assert_eq!(row, (7, "x".to_string()));
        assert_eq!(c.pragma_i64("synchronous").unwrap(), 2, "FULL");
        let dup = c.execute("INSERT INTO t (a) VALUES ($1)", &[&None::<i64>]);
        assert!(dup.is_ok());
    }
}
