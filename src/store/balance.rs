//! Prepaid balance: charges and the ledger. The balance column and its ledger row always
//! change in the same transaction (SPEC §9.2).

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::db::work::Table;
use crate::db::{Arg, Handle, Tx};
use crate::domain::money::{ChargeAmount, LedgerKind};
use crate::domain::pagination::Page;
use crate::error::{AppError, AppResult};
use crate::{sql_all, sql_optional, sql_scalar_optional};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BalanceRow {
    pub user_id: i64,
    pub balance: i64,
    pub updated_at: DateTime<Utc>,
}
crate::lite_row!(BalanceRow {
    user_id,
    balance,
    updated_at
});

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LedgerRow {
    pub id: i64,
    pub kind: String,
    pub amount: i64,
    pub balance_after: i64,
    pub order_id: Option<i64>,
    pub created_at: DateTime<Utc>,
}
crate::lite_row!(LedgerRow {
    id,
    kind,
    amount,
    balance_after,
    order_id,
    created_at
});

pub struct Charge {
    pub user_id: i64,
    pub amount: ChargeAmount,
    pub max_balance: i64,
    pub now: DateTime<Utc>,
}

/// Add `amount` to the balance unless that would pass `max_balance`; writes the CHARGE entry.
/// One conditional UPDATE: concurrent charges serialize on the row and none can overshoot. On
/// a PostgreSQL batch the same rule runs against the batch's locked, cached balance and the
/// batch's flush writes it (`db/work.rs`): charges then cost no statement of their own.
pub async fn charge(tx: &mut Tx, cmd: Charge) -> AppResult<BalanceRow> {
    let amount = cmd.amount.get();
    let row = match crate::db::work::balance(tx, cmd.user_id).await? {
        Some(cached) => {
            let balance = cached.ok_or_else(|| AppError::user_not_found(cmd.user_id))?;
            if balance > cmd.max_balance.saturating_sub(amount) {
                return Err(limit_exceeded(balance, amount, cmd.max_balance));
            }
            crate::db::work::set_balance(tx, cmd.user_id, balance + amount, cmd.now);
            BalanceRow {
                user_id: cmd.user_id,
                balance: balance + amount,
                updated_at: cmd.now,
            }
        }
        None => {
            let updated = sql_optional!(BalanceRow; tx,
                "UPDATE users SET balance = balance + $1, balance_updated_at = $2
                 WHERE id = $3 AND balance <= $4 - $1
                 RETURNING id AS user_id, balance, balance_updated_at AS updated_at",
                amount, cmd.now, cmd.user_id, cmd.max_balance)?;
            let Some(row) = updated else {
                let balance: Option<i64> = sql_scalar_optional!(
                    tx,
                    "SELECT balance FROM users WHERE id = $1",
                    cmd.user_id
                )?;
                return Err(match balance {
                    None => AppError::user_not_found(cmd.user_id),
                    Some(balance) => limit_exceeded(balance, amount, cmd.max_balance),
                });
            };
            row
        }
    };
    append_ledger(
        tx,
        cmd.user_id,
        LedgerKind::Charge,
        amount,
        row.balance,
        None,
        cmd.now,
    )
    .await?;
    Ok(row)
}

fn limit_exceeded(balance: i64, amount: i64, max_balance: i64) -> AppError {
    AppError::bad_request(
        "BALANCE_LIMIT_EXCEEDED",
        format!("charging {amount} would take the balance past the maximum of {max_balance}"),
        json!({ "balance": balance, "amount": amount, "maxBalance": max_balance }),
    )
}

/// Record a ledger entry; `magnitude` is signed by `kind`.
pub async fn append_ledger(
    tx: &mut Tx,
    user_id: i64,
    kind: LedgerKind,
    magnitude: i64,
    balance_after: i64,
    order_id: Option<i64>,
    now: DateTime<Utc>,
) -> AppResult<()> {
    crate::db::work::insert(
        tx,
        Table::Ledger,
        vec![vec![
            Arg::I64(user_id),
            Arg::Text(kind.as_str().to_string()),
            Arg::I64(kind.signed(magnitude)),
            Arg::I64(balance_after),
            Arg::OptI64(order_id),
            Arg::Time(now),
        ]],
    )
    .await?;
    Ok(())
}

pub async fn get_balance(h: &mut impl Handle, user_id: i64) -> AppResult<BalanceRow> {
    sql_optional!(BalanceRow; h,
        "SELECT id AS user_id, balance, balance_updated_at AS updated_at FROM users WHERE id = $1",
        user_id)?
    .ok_or_else(|| AppError::user_not_found(user_id))
}

/// Ledger entries newest first; `page.after` is the last id of the previous page.
pub async fn ledger(h: &mut impl Handle, user_id: i64, page: Page) -> AppResult<Vec<LedgerRow>> {
    Ok(sql_all!(LedgerRow; h,
        "SELECT id, kind, amount, balance_after, order_id, created_at FROM balance_ledger
         WHERE user_id = $1 AND ($2 IS NULL OR id < $2)
         ORDER BY id DESC LIMIT $3",
        user_id, page.after, page.fetch_limit())?)
}
