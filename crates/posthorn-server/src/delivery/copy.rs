//! The copy of a message for one delivery, as it leaves: tracking applied
//! (its links kept first), built, and DKIM-signed when the sender's domain
//! has a key.

use super::{DeliveryService, build};
use posthorn_core::domain::SenderDomain;
use posthorn_store::ClaimedDelivery;
use posthorn_track::Say;

/// How many message ids `links_kept` holds before it starts over.
const LINKS_KEPT_MAX: usize = 10_000;

impl DeliveryService {
    /// `copy` DKIM-signed for its From domain (or a parent) with a key of
    /// a domain the message's tenant owns; unsigned when there is none.
    /// Ownership is read when the copy leaves, so a domain given up or
    /// moved since acceptance no longer signs.
    pub(super) async fn sign(
        &self,
        message: &posthorn_store::MessageRecord,
        copy: Vec<u8>,
    ) -> Result<Vec<u8>, posthorn_store::StoreError> {
        if self.dkim.is_empty() {
            return Ok(copy);
        }
        let from_domain = crate::dkim::author_domain(message);
        let owners = self.state.store.domain_owners(&[&from_domain]).await?;
        let tenant = &message.tenant_id;
        let owns = |domain: &str| {
            matches!(
                SenderDomain::judge(tenant, domain, &owners),
                SenderDomain::Own { .. }
            )
        };
        Ok(self.dkim.sign(&from_domain, owns, &copy).unwrap_or(copy))
    }

    pub(super) fn return_path_domain(&self, item: &ClaimedDelivery) -> String {
        self.state
            .config
            .delivery
            .return_path_domain
            .clone()
            .unwrap_or_else(|| {
                item.message
                    .from_address
                    .rsplit_once('@')
                    .map_or("localhost", |(_, d)| d)
                    .to_owned()
            })
    }

    fn links_already_kept(&self, message: &posthorn_core::MessageId) -> bool {
        self.links_kept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(message)
    }

    /// The copy for one delivery, tracking applied. Its links are kept
    /// before it leaves, so no click can arrive before its URL is stored.
    pub(super) async fn prepare_copy(&self, item: &ClaimedDelivery) -> Result<Vec<u8>, String> {
        let domain = self.return_path_domain(item);
        let tenant = Say {
            opens: item.tenant.track_opens,
            clicks: item.tenant.track_clicks,
        };
        let message = Say {
            opens: item.message.tracking_opens,
            clicks: item.message.tracking_clicks,
        };
        let choice =
            posthorn_track::choice(&self.state.config, &item.delivery.stream, message, tenant);
        let copy =
            self.state
                .tracking
                .prepare(&item.message, &item.delivery, choice, &self.verp, &domain);
        if !copy.links.is_empty() && !self.links_already_kept(&item.message.id) {
            self.state
                .store
                .put_message_links(&item.message.id, copy.links.clone())
                .await
                .map_err(|e| format!("keeping the tracked links: {e}"))?;
            let mut kept = self.links_kept.lock().unwrap_or_else(|e| e.into_inner());
            if kept.len() >= LINKS_KEPT_MAX {
                kept.clear();
            }
            kept.insert(item.message.id.clone());
        }
        build::build(&item.message, &item.delivery, &domain, &copy).map_err(|e| e.to_string())
    }
}
