//! Statements whose argument list is built at run time: multi-row INSERTs (an order's lines,
//! its history) that save a round trip per row.

use super::{Handle, Raw, lite};

/// A value for a statement whose argument list is built at run time (multi-row INSERTs).
#[derive(Clone, Debug)]
pub enum Arg {
    I64(i64),
    OptI64(Option<i64>),
    Text(String),
    OptText(Option<String>),
    Bool(bool),
    Time(chrono::DateTime<chrono::Utc>),
    OptTime(Option<chrono::DateTime<chrono::Utc>>),
}

impl lite::Bind for Arg {
    fn value(&self) -> rusqlite::types::ToSqlOutput<'_> {
        match self {
            Arg::I64(v) => v.value(),
            Arg::OptI64(v) => v.value(),
            Arg::Text(v) => v.value(),
            Arg::OptText(v) => v.value(),
            Arg::Bool(v) => v.value(),
            Arg::Time(v) => v.value(),
            Arg::OptTime(v) => v.value(),
        }
    }
}

/// Bind a run-time list of [`Arg`]s to an sqlx query of either backend.
macro_rules! bind_args {
    ($query:expr, $args:expr) => {{
        let mut q = $query;
        for arg in $args {
            q = match arg {
                $crate::db::Arg::I64(v) => q.bind(*v),
                $crate::db::Arg::OptI64(v) => q.bind(*v),
                $crate::db::Arg::Text(v) => q.bind(v.as_str()),
                $crate::db::Arg::OptText(v) => q.bind(v.as_deref()),
                $crate::db::Arg::Bool(v) => q.bind(*v),
                $crate::db::Arg::Time(v) => q.bind(*v),
                $crate::db::Arg::OptTime(v) => q.bind(*v),
            };
        }
        q
    }};
}
pub(crate) use bind_args;

/// Execute `sql` with a run-time list of arguments; returns the rows affected.
pub async fn execute_args(
    h: &mut impl Handle,
    sql: &'static str,
    args: &[Arg],
) -> Result<u64, sqlx::Error> {
    h.settle().await?;
    match h.raw() {
        Raw::Sqlite(c) => bind_args!(sqlx::query(sql), args)
            .execute(c)
            .await
            .map(|r| r.rows_affected()),
        Raw::Postgres(c) => bind_args!(sqlx::query(sql), args)
            .execute(c)
            .await
            .map(|r| r.rows_affected()),
        Raw::Lite(c) => {
            let refs: Vec<&dyn lite::Bind> = args.iter().map(|a| a as &dyn lite::Bind).collect();
            c.execute(sql, &refs)
        }
    }
}

/// `head` followed by `rows` groups of `width` placeholders — `VALUES ($1, $2), ($3, $4)` — for
/// a multi-row INSERT that saves a round trip per row. Each distinct shape is built once and
/// kept (statements must be `'static` for the statement caches; the shapes are few).
pub fn multi_row(head: &'static str, width: usize, rows: usize) -> &'static str {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    type Shapes = HashMap<(usize, usize, usize), &'static str>;
    static SHAPES: OnceLock<Mutex<Shapes>> = OnceLock::new();
    let key = (head.as_ptr() as usize, width, rows);
    let shapes = SHAPES.get_or_init(Default::default);
    let mut shapes = match shapes.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    shapes.entry(key).or_insert_with(|| {
        let groups: Vec<String> = (0..rows)
            .map(|r| {
                let cells: Vec<String> =
                    (1..=width).map(|c| format!("${}", r * width + c)).collect();
                format!("({})", cells.join(", "))
            })
            .collect();
        Box::leak(format!("{head} VALUES {}", groups.join(", ")).into_boxed_str())
    })
}
