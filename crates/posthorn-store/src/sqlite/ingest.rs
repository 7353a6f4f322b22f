//! Provider ingest: the reads of sources and of the payloads events were
//! recorded from (the writes are the engine's, `engine::record_provider_events`).

use super::prepare;
use super::reads::json;
use crate::StoreResult;
use crate::ingest::*;
use posthorn_core::id::IngestSourceId;
use posthorn_core::{EventId, TenantId};
use rusqlite::{Connection, OptionalExtension, Row};

const SOURCE_COLUMNS: &str =
    "id, tenant_id, name, token_hash, verification, created_at, pending_confirmation";

fn source_row(r: &Row<'_>) -> rusqlite::Result<IngestSource> {
    Ok(IngestSource {
        id: IngestSourceId::from_stored(r.get(0)?),
        tenant_id: TenantId::from_stored(r.get(1)?),
        name: r.get(2)?,
        token_hash: r.get(3)?,
        verification: json(r, 4, "ingest_sources", "verification")?,
        created_at: r.get(5)?,
        pending_confirmation: r.get(6)?,
    })
}

pub(crate) fn sources(c: &Connection, tenant: &TenantId) -> StoreResult<Vec<IngestSource>> {
    let sql =
        format!("SELECT {SOURCE_COLUMNS} FROM ingest_sources WHERE tenant_id = $1 ORDER BY id");
    let rows = prepare(c, &sql)?
        .query_map([tenant.as_str()], source_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub(crate) fn source_by_token(
    c: &Connection,
    token_hash: &str,
) -> StoreResult<Option<IngestSource>> {
    let sql = format!("SELECT {SOURCE_COLUMNS} FROM ingest_sources WHERE token_hash = $1");
    Ok(prepare(c, &sql)?
        .query_row([token_hash], source_row)
        .optional()?)
}

pub(crate) fn payload(
    c: &Connection,
    tenant: &TenantId,
    event: &EventId,
) -> StoreResult<Option<Vec<u8>>> {
    Ok(prepare(
        c,
        "SELECT payload FROM provider_payloads WHERE tenant_id = $1 AND event_id = $2",
    )?
    .query_row([tenant.as_str(), event.as_str()], |r| r.get(0))
    .optional()?)
}
