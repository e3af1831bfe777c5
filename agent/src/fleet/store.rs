//! Accesses and findings in the fleet's database, written in the detector's fenced batch
//! transaction: the PostgreSQL counterpart of `store::Store::insert_batch`.

use super::{retention, FleetError};
use crate::event::AccessEvent;
use crate::finding::Finding;
use tokio_postgres::{Client, Transaction};

/// Stores accesses and findings not stored before; returns how many of each were new.
pub async fn insert_batch(
    tx: &Transaction<'_>,
    accesses: &[AccessEvent],
    findings: &[Finding],
) -> Result<(u64, u64), FleetError> {
    let (accesses, fresh) = insert_batch_fresh(tx, accesses, findings).await?;
    Ok((accesses, fresh.len() as u64))
}

/// Stores accesses and findings not stored before; returns how many accesses were new and
/// the findings that were (those alerts group: a finding stored before is grouped already).
/// The months' partitions must exist ([`retention::ensure_months`], outside the batch).
/// One statement per table and batch (arrays unnested by the server): a round trip per row
/// would bound the detector by the network's latency.
pub async fn insert_batch_fresh<'f>(
    tx: &Transaction<'_>,
    accesses: &[AccessEvent],
    findings: &'f [Finding],
) -> Result<(u64, Vec<&'f Finding>), FleetError> {
    let e = FleetError::sql("storing accesses and findings");
    let now_ms = chrono::Utc::now().timestamp_millis();
    let col = |f: fn(&AccessEvent) -> String| accesses.iter().map(f).collect::<Vec<_>>();
    let ids = col(|a| a.id.clone());
    let times: Vec<i64> = accesses.iter().map(|a| a.time_ms).collect();
    let users = col(|a| a.user.clone());
    let patients: Vec<Option<&str>> = accesses.iter().map(|a| a.patient.as_deref()).collect();
    let actions = col(|a| a.action.as_str().to_owned());
    let subtypes = col(|a| a.subtype.clone());
    let glass: Vec<bool> = accesses.iter().map(|a| a.break_glass).collect();
    let stations = col(|a| a.workstation.clone());
    let ok: Vec<bool> = accesses.iter().map(|a| a.succeeded).collect();
    let new_accesses = tx
        .execute(
            "INSERT INTO accesses (event_id, time_ms, user_id, patient_id, action, subtype,
                 break_glass, workstation, succeeded, stored_ms)
             SELECT *, $10::bigint FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[],
                 $5::text[], $6::text[], $7::bool[], $8::text[], $9::bool[])
             ON CONFLICT DO NOTHING",
            &[
                &ids, &times, &users, &patients, &actions, &subtypes, &glass, &stations, &ok,
                &now_ms,
            ],
        )
        .await
        .map_err(|err| match retention::missing_partition(&err) {
            true => FleetError::Sql {
                what: "storing accesses",
                detail: "no partition for an access's month: call retention::ensure_months first"
                    .to_owned(),
            },
            false => e(err),
        })?;
    let col = |f: fn(&Finding) -> &str| findings.iter().map(f).collect::<Vec<&str>>();
    let new_findings = tx
        .query(
            "INSERT INTO findings (event_id, detector, time, user_id, patient_id, action,
                 category, severity, explanation, hipaa, department)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                 $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[])
             ON CONFLICT DO NOTHING RETURNING event_id, detector",
            &[
                &col(|f| &f.event_id),
                &col(|f| &f.detector),
                &col(|f| &f.time),
                &col(|f| &f.user),
                &col(|f| &f.patient),
                &col(|f| &f.action),
                &col(|f| &f.category),
                &col(|f| f.severity.as_str()),
                &col(|f| &f.explanation),
                &col(|f| &f.hipaa),
                &col(|f| &f.department),
            ],
        )
        .await
        .map_err(&e)?;
    let new: std::collections::HashSet<(String, String)> =
        new_findings.iter().map(|r| (r.get(0), r.get(1))).collect();
    // In the batch's order, each once (a batch may judge one access twice).
    let mut seen = std::collections::HashSet::new();
    let fresh = findings
        .iter()
        .filter(|f| {
            let k = (f.event_id.clone(), f.detector.clone());
            new.contains(&k) && seen.insert(k)
        })
        .collect();
    Ok((new_accesses, fresh))
}

/// The newest stored access's time.
pub async fn newest_access(client: &Client) -> Result<Option<i64>, FleetError> {
    let row = client
        .query_one("SELECT max(time_ms) FROM accesses", &[])
        .await
        .map_err(FleetError::sql("reading the newest access"))?;
    Ok(row.get(0))
}

/// As [`crate::store::stored_accesses`]: the accesses with `since_ms <= time_ms < until_ms`
/// in time order, streamed from the server `chunk` at a time to `each`. Answers how many.
pub async fn stored_accesses(
    client: &Client,
    (since_ms, until_ms): (i64, i64),
    chunk: usize,
    each: &mut dyn FnMut(&mut Vec<AccessEvent>),
) -> Result<u64, FleetError> {
    let mut chunks = crate::store::Chunks::new(chunk, each);
    let mut row = |r: tokio_postgres::Row| {
        let (action, action_code) = crate::store::stored_action(r.get(4));
        chunks.push(AccessEvent {
            id: r.get(0),
            time_ms: r.get(1),
            user: r.get(2),
            patient: r.get(3),
            action,
            action_code,
            subtype: r.get(5),
            break_glass: r.get(6),
            workstation: r.get(7),
            succeeded: r.get(8),
            ..AccessEvent::default()
        });
    };
    super::pg::each_row(
        client,
        "reading the access log",
        "SELECT event_id, time_ms, user_id, patient_id, action, subtype, break_glass,
                workstation, succeeded
         FROM accesses WHERE time_ms >= $1 AND time_ms < $2 ORDER BY time_ms, event_id",
        [since_ms, until_ms],
        &mut row,
    )
    .await?;
    Ok(chunks.finish())
}
