//! `arcade usage`: sessions and the time they ran within a window, by user, game or host.

use protocol::api::{Usage, UsageQuery};
use time::format_description::well_known::Rfc3339;

use super::output::{render, Table};
use super::CliError;
use crate::client::Client;

/// `arcade usage`: a table, the API's JSON with `--json`, or the broker's CSV with `--csv`.
pub(super) async fn show(
    client: &Client,
    query: &UsageQuery,
    csv: bool,
    json: bool,
) -> Result<String, CliError> {
    if csv {
        return Ok(client.usage_csv(query).await?);
    }
    let usage = client.usage(query).await?;
    render(json, &usage, usage_table)
}

/// Seconds as hours with two decimals.
fn hours(seconds: f64) -> String {
    format!("{:.2}", seconds / 3600.0)
}

/// What `arcade usage` prints.
fn usage_table(u: &Usage) -> String {
    let rfc = |t: time::OffsetDateTime| t.format(&Rfc3339).unwrap_or_else(|_| t.to_string());
    let window = format!("from {} to {}\n", rfc(u.from), rfc(u.to));
    if u.rows.is_empty() {
        return format!("{window}no session ran\n");
    }
    let key = u.by.as_str().to_uppercase();
    let mut table = Table::new(&[&key, "SESSIONS", "HOURS", "GPU HOURS"]).right(&[1, 2, 3]);
    for r in &u.rows {
        table.row(vec![
            r.key.clone().unwrap_or_else(|| "-".to_owned()),
            r.sessions.to_string(),
            hours(r.seconds),
            hours(r.gpu_seconds),
        ]);
    }
    window + &table.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::api::{UsageBy, UsageRow};
    use time::macros::datetime;

    #[test]
    fn usage_table_shows_hours() {
        let u = Usage {
            from: datetime!(2026-11-01 00:00:00 UTC),
            to: datetime!(2026-12-01 00:00:00 UTC),
            by: UsageBy::User,
            rows: vec![
                UsageRow {
                    key: Some("ann".into()),
                    sessions: 3,
                    seconds: 5400.0,
                    gpu_seconds: 10800.0,
                },
                UsageRow {
                    key: None,
                    sessions: 1,
                    seconds: 36.0,
                    gpu_seconds: 0.0,
                },
            ],
        };
        assert_eq!(
            usage_table(&u),
            "from 2026-11-01T00:00:00Z to 2026-12-01T00:00:00Z\n\
             USER  SESSIONS  HOURS  GPU HOURS\n\
             ann          3   1.50       3.00\n\
             -            1   0.01       0.00\n"
        );
    }
}
