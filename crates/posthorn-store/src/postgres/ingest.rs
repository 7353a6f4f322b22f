//! Provider ingest (the reads): sources and the payloads events were
//! recorded from.

use super::reads::{Query, get, json};
use crate::StoreResult;
use crate::ingest::*;
use ::postgres::Row;
use posthorn_core::id::IngestSourceId;
use posthorn_core::{EventId, TenantId};

const SOURCE_COLUMNS: &str =
    "id, tenant_id, name, token_hash, verification, created_at, pending_confirmation";

fn source_row(r: &Row) -> StoreResult<IngestSource> {
    Ok(IngestSource {
        id: IngestSourceId::from_stored(get(r, 0)?),
        tenant_id: TenantId::from_stored(get(r, 1)?),
        name: get(r, 2)?,
        token_hash: get(r, 3)?,
        verification: json(r, 4, "ingest_sources", "verification")?,
        created_at: get(r, 5)?,
        pending_confirmation: get(r, 6)?,
    })
}

/// A tenant's sources, oldest first.
pub(crate) fn sources(c: &mut impl Query, tenant: &TenantId) -> StoreResult<Vec<IngestSource>> {
    let sql =
        format!("SELECT {SOURCE_COLUMNS} FROM ingest_sources WHERE tenant_id = $1 ORDER BY id");
    c.query(&sql, &[&tenant.as_str()])?
        .iter()
        .map(source_row)
        .collect()
}

pub(crate) fn source_by_token(
    c: &mut impl Query,
    token_hash: &str,
) -> StoreResult<Option<IngestSource>> {
    let sql = format!("SELECT {SOURCE_COLUMNS} FROM ingest_sources WHERE token_hash = $1");
    c.query_opt(&sql, &[&token_hash])?
        .as_ref()
        .map(source_row)
        .transpose()
}

pub(crate) fn payload(
    c: &mut impl Query,
    tenant: &TenantId,
    event: &EventId,
) -> StoreResult<Option<Vec<u8>>> {
    c.query_opt(
        "SELECT payload FROM provider_payloads WHERE tenant_id = $1 AND event_id = $2",
        &[&tenant.as_str(), &event.as_str()],
    )?
    .map(|r| get(&r, 0))
    .transpose()
}
