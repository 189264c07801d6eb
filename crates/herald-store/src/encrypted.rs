//! Webhook signing secrets encrypted at rest: a [`Store`] decorator that seals
//! `secret` and `previous_secret` with AES-256-GCM before any backend sees them and
//! opens them only when a webhook is read back (to sign, or to show on rotation).
//!
//! It wraps any backend. Every method of every aggregate trait is written out below,
//! one impl per aggregate; the aggregates have no defaulted methods, so a new one that
//! is not forwarded here does not compile (it can never fall back silently).

use crate::model::*;
use crate::*;
use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use async_trait::async_trait;
use base64::Engine as _;
use herald_core::ids::*;
use herald_core::Timestamp;
use std::sync::Arc;
use std::time::Duration;

/// Stored secrets start with this; anything else is a plaintext secret written before
/// a key was configured, read as is (and sealed on its next update).
const SEALED_PREFIX: &str = "enc:v1:";

/// The 32-byte key, parsed from base64. `Debug` never shows it.
#[derive(Clone)]
pub struct SecretKey(Arc<Aes256Gcm>);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the secret key must be 32 bytes, base64-encoded (e.g. `openssl rand -base64 32`)")]
pub struct BadSecretKey;

impl SecretKey {
    pub fn parse(base64_text: &str) -> Result<Self, BadSecretKey> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(base64_text.trim())
            .map_err(|_| BadSecretKey)?;
        if bytes.len() != 32 {
            return Err(BadSecretKey);
        }
        let cipher = Aes256Gcm::new_from_slice(&bytes).map_err(|_| BadSecretKey)?;
        Ok(Self(Arc::new(cipher)))
    }

    /// Seals `secret`, bound to `webhook` (a sealed secret moved to another row fails to open).
    fn seal(&self, webhook: WebhookId, secret: &str) -> StoreResult<String> {
        if secret.starts_with(SEALED_PREFIX) {
            return Ok(secret.to_owned());
        }
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let aad = webhook.to_string();
        let sealed = self
            .0
            .encrypt(
                &nonce,
                Payload {
                    msg: secret.as_bytes(),
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| StoreError::Backend("sealing a webhook secret failed".into()))?;
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&sealed);
        Ok(format!(
            "{SEALED_PREFIX}{}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(blob)
        ))
    }

    fn open(&self, webhook: WebhookId, stored: &str) -> StoreResult<String> {
        let Some(encoded) = stored.strip_prefix(SEALED_PREFIX) else {
            return Ok(stored.to_owned());
        };
        // Never say more than this: the error may be logged.
        let fail = || {
            StoreError::Backend(format!(
                "webhook {webhook}: its secret cannot be decrypted with the configured secret key"
            ))
        };
        let blob = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(encoded)
            .map_err(|_| fail())?;
        if blob.len() < 12 {
            return Err(fail());
        }
        let (nonce, sealed) = blob.split_at(12);
        let aad = webhook.to_string();
        let plain = self
            .0
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| fail())?;
        String::from_utf8(plain).map_err(|_| fail())
    }

    fn seal_webhook(&self, mut w: Webhook) -> StoreResult<Webhook> {
        w.secret = self.seal(w.id, &w.secret)?;
        if let Some((prev, until)) = w.previous_secret.take() {
            w.previous_secret = Some((self.seal(w.id, &prev)?, until));
        }
        Ok(w)
    }

    /// An ed25519 webhook's private keys opened where they open, so its public keys can be
    /// shown (reads leave HMAC secrets sealed: nothing shown is derived from them). One
    /// sealed with a key no longer configured stays as stored.
    fn open_keys(&self, mut w: Webhook) -> Webhook {
        if !w.format.is_asymmetric() {
            return w;
        }
        if let Ok(secret) = self.open(w.id, &w.secret) {
            w.secret = secret;
        }
        if let Some((previous, until)) = w.previous_secret.take() {
            let opened = self.open(w.id, &previous).unwrap_or(previous);
            w.previous_secret = Some((opened, until));
        }
        w
    }

    fn open_webhook(&self, mut w: Webhook) -> StoreResult<Webhook> {
        w.secret = self.open(w.id, &w.secret)?;
        if let Some((prev, until)) = w.previous_secret.take() {
            match self.open(w.id, &prev) {
                Ok(prev) => w.previous_secret = Some((prev, until)),
                // Sealed with a key no longer configured (a rotation was the way out of
                // that): sign with the current secret alone.
                Err(e) => {
                    tracing::warn!(error = %e, "the previous secret does not open; signing with the current one only")
                }
            }
        }
        Ok(w)
    }
}

/// A [`Store`] whose webhook secrets are sealed with a [`SecretKey`] at rest.
pub struct EncryptedSecrets {
    inner: Arc<dyn Store>,
    key: SecretKey,
}

impl EncryptedSecrets {
    pub fn new(inner: Arc<dyn Store>, key: SecretKey) -> Self {
        Self { inner, key }
    }
}

// One impl per aggregate of [`Store`]. Only the methods that carry webhook secrets
// (`WebhookStore`'s creates and updates, `DeliveryStore::claim_due_deliveries`) do more
// than forward; no aggregate method has a default, so one left out does not compile.

/// Opens a claimed job's webhook secrets. One webhook whose secret does not open (sealed
/// with another key) must not fail the whole claim: its job goes on marked unsendable,
/// still sealed, never signed with.
fn open_job(key: &SecretKey, job: &mut DeliveryJob) {
    match key.open_webhook((*job.webhook).clone()) {
        Ok(w) => job.webhook = Arc::new(w),
        Err(e) => job.unsendable = Some(e.to_string()),
    }
}

#[async_trait]
impl TenantStore for EncryptedSecrets {
    async fn create_tenant(&self, tenant: Tenant) -> StoreResult<Tenant> {
        self.inner.create_tenant(tenant).await
    }

    async fn get_tenant(&self, id: TenantId) -> StoreResult<Tenant> {
        self.inner.get_tenant(id).await
    }

    async fn create_key(&self, key: ApiKey) -> StoreResult<()> {
        self.inner.create_key(key).await
    }

    async fn get_key(&self, id: KeyId) -> StoreResult<ApiKey> {
        self.inner.get_key(id).await
    }

    async fn revoke_key(&self, id: KeyId, now: Timestamp) -> StoreResult<()> {
        self.inner.revoke_key(id, now).await
    }

    async fn count_live_admin_keys(&self) -> StoreResult<u64> {
        self.inner.count_live_admin_keys().await
    }
}

#[async_trait]
impl OperationStore for EncryptedSecrets {
    async fn create_operation(
        &self,
        op: NewOperation,
        idempotency: Option<Idempotency>,
    ) -> StoreResult<Created<herald_core::operation::Operation>> {
        self.inner.create_operation(op, idempotency).await
    }

    async fn get_operation(
        &self,
        id: OperationId,
    ) -> StoreResult<herald_core::operation::Operation> {
        self.inner.get_operation(id).await
    }

    async fn get_operation_for_worker(
        &self,
        id: OperationId,
    ) -> StoreResult<herald_core::operation::Operation> {
        self.inner.get_operation_for_worker(id).await
    }

    async fn list_operations(
        &self,
        filter: OperationFilter,
    ) -> StoreResult<Vec<herald_core::operation::Operation>> {
        self.inner.list_operations(filter).await
    }

    async fn cancel_operation(
        &self,
        id: OperationId,
        now: Timestamp,
    ) -> StoreResult<herald_core::operation::Operation> {
        self.inner.cancel_operation(id, now).await
    }

    async fn delete_operation(&self, id: OperationId, now: Timestamp) -> StoreResult<()> {
        self.inner.delete_operation(id, now).await
    }

    async fn claim_operations(
        &self,
        claim: ClaimRequest,
    ) -> StoreResult<Vec<herald_core::operation::Operation>> {
        self.inner.claim_operations(claim).await
    }

    async fn heartbeat(&self, beat: Heartbeat) -> StoreResult<herald_core::operation::Operation> {
        self.inner.heartbeat(beat).await
    }

    async fn finish_operation(
        &self,
        finish: Finish,
    ) -> StoreResult<herald_core::operation::Operation> {
        self.inner.finish_operation(finish).await
    }

    async fn reap_operations(&self, now: Timestamp) -> StoreResult<ReapReport> {
        self.inner.reap_operations(now).await
    }

    async fn next_operation_timer(&self) -> StoreResult<Option<Timestamp>> {
        self.inner.next_operation_timer().await
    }
}

#[async_trait]
impl EventStore for EncryptedSecrets {
    async fn insert_event(
        &self,
        event: NewEvent,
        idempotency: Option<Idempotency>,
    ) -> StoreResult<Created<herald_core::event::Event>> {
        self.inner.insert_event(event, idempotency).await
    }

    async fn get_event(&self, id: EventId) -> StoreResult<herald_core::event::Event> {
        self.inner.get_event(id).await
    }

    async fn list_events(
        &self,
        filter: EventFilter,
    ) -> StoreResult<Vec<herald_core::event::Event>> {
        self.inner.list_events(filter).await
    }

    async fn put_event_type(&self, event_type: EventType) -> StoreResult<()> {
        self.inner.put_event_type(event_type).await
    }

    async fn list_event_types(&self) -> StoreResult<Vec<EventType>> {
        self.inner.list_event_types().await
    }

    async fn purge_settled_events(
        &self,
        older_than: Timestamp,
        limit: u32,
    ) -> StoreResult<PurgeReport> {
        self.inner.purge_settled_events(older_than, limit).await
    }
}

#[async_trait]
impl FeedStore for EncryptedSecrets {
    async fn read_feed(&self, query: FeedQuery) -> StoreResult<FeedPage> {
        self.inner.read_feed(query).await
    }

    async fn create_consumer(
        &self,
        consumer: NewConsumer,
        max_per_tenant: u32,
    ) -> StoreResult<Consumer> {
        self.inner.create_consumer(consumer, max_per_tenant).await
    }

    async fn get_consumer(&self, tenant: Option<TenantId>, name: String) -> StoreResult<Consumer> {
        self.inner.get_consumer(tenant, name).await
    }

    async fn list_consumers(&self, tenant: Option<TenantId>) -> StoreResult<Vec<Consumer>> {
        self.inner.list_consumers(tenant).await
    }

    async fn delete_consumer(&self, tenant: Option<TenantId>, name: String) -> StoreResult<()> {
        self.inner.delete_consumer(tenant, name).await
    }

    async fn consumer_delivered(
        &self,
        tenant: Option<TenantId>,
        name: String,
        upto: FeedPosition,
        now: Timestamp,
    ) -> StoreResult<()> {
        self.inner.consumer_delivered(tenant, name, upto, now).await
    }

    async fn ack_consumer(
        &self,
        tenant: Option<TenantId>,
        name: String,
        cursor: FeedPosition,
        now: Timestamp,
    ) -> StoreResult<Acked> {
        self.inner.ack_consumer(tenant, name, cursor, now).await
    }
}

#[async_trait]
impl WebhookStore for EncryptedSecrets {
    // The methods that carry webhook secrets: sealed on the way in, opened on the way out.

    async fn create_webhook(&self, webhook: Webhook) -> StoreResult<Webhook> {
        let stored = self
            .inner
            .create_webhook(self.key.seal_webhook(webhook)?)
            .await?;
        self.key.open_webhook(stored)
    }

    async fn create_webhook_capped(
        &self,
        webhook: Webhook,
        max_per_tenant: u32,
    ) -> StoreResult<Webhook> {
        let stored = self
            .inner
            .create_webhook_capped(self.key.seal_webhook(webhook)?, max_per_tenant)
            .await?;
        self.key.open_webhook(stored)
    }

    // Reads never show a secret, so they hand back the row as stored (sealed) instead of
    // opening it: a webhook sealed with another key can still be read, listed, changed,
    // rotated and deleted. Only a claim (to sign) and creation and rotation (to show the
    // new secret once) need a secret in the clear.
    async fn get_webhook(&self, id: WebhookId) -> StoreResult<Webhook> {
        Ok(self.key.open_keys(self.inner.get_webhook(id).await?))
    }

    async fn list_webhooks(&self, filter: WebhookFilter) -> StoreResult<Vec<Webhook>> {
        let listed = self.inner.list_webhooks(filter).await?;
        Ok(listed.into_iter().map(|w| self.key.open_keys(w)).collect())
    }

    async fn update_webhook(
        &self,
        id: WebhookId,
        mut change: WebhookChange,
        now: Timestamp,
    ) -> StoreResult<Webhook> {
        // Every secret of the changed row is sealed in the write: the new one, the one a
        // rotation moves to `previous_secret`, and any stored before a key was configured.
        let key = self.key.clone();
        change.seal = Some(Arc::new(move |webhook, secret| key.seal(webhook, secret)));
        let rotated = change.rotate.as_ref().map(|r| r.secret.clone());
        let mut stored = self.inner.update_webhook(id, change, now).await?;
        stored = self.key.open_keys(stored);
        if let Some(secret) = rotated {
            // The caller shows the new secret once; it is the one it made.
            stored.secret = secret;
        }
        Ok(stored)
    }

    async fn delete_webhook(&self, id: WebhookId, now: Timestamp) -> StoreResult<()> {
        self.inner.delete_webhook(id, now).await
    }
}

#[async_trait]
impl DeliveryStore for EncryptedSecrets {
    fn hand_off_fresh(&self, handoff: Handoff) {
        // Handed-off jobs carry their webhook as stored: opened on the way, as a claim's are.
        let key = self.key.clone();
        let sink = handoff.sink();
        self.inner
            .hand_off_fresh(handoff.with_sink(Arc::new(move |mut job, slot| {
                open_job(&key, &mut job);
                sink(job, slot)
            })));
    }

    async fn claim_due_deliveries(
        &self,
        now: Timestamp,
        limit: u32,
        lease: Duration,
    ) -> StoreResult<Vec<DeliveryJob>> {
        let jobs = self.inner.claim_due_deliveries(now, limit, lease).await?;
        Ok(jobs
            .into_iter()
            .map(|mut job| {
                open_job(&self.key, &mut job);
                job
            })
            .collect())
    }

    async fn record_attempts(&self, records: Vec<AttemptRecord>) -> StoreResult<()> {
        self.inner.record_attempts(records).await
    }

    async fn next_delivery_due(&self) -> StoreResult<Option<Timestamp>> {
        self.inner.next_delivery_due().await
    }

    async fn list_deliveries(&self, filter: DeliveryFilter) -> StoreResult<Vec<Delivery>> {
        self.inner.list_deliveries(filter).await
    }

    async fn get_delivery(&self, id: DeliveryId) -> StoreResult<(Delivery, Vec<Attempt>)> {
        self.inner.get_delivery(id).await
    }

    async fn redeliver(&self, id: DeliveryId, now: Timestamp) -> StoreResult<Delivery> {
        self.inner.redeliver(id, now).await
    }

    async fn replay(&self, replay: Replay) -> StoreResult<ReplayBatch> {
        self.inner.replay(replay).await
    }

    async fn skip_delivery(&self, id: DeliveryId, now: Timestamp) -> StoreResult<Delivery> {
        self.inner.skip_delivery(id, now).await
    }

    async fn release_held_heads(&self, now: Timestamp) -> StoreResult<u64> {
        self.inner.release_held_heads(now).await
    }
}

#[async_trait]
impl OutboxStore for EncryptedSecrets {
    fn set_routes(&self, routes: Vec<OutboxRoute>) {
        self.inner.set_routes(routes)
    }

    async fn claim_due_broker_deliveries(
        &self,
        now: Timestamp,
        limit: u32,
        lease: Duration,
    ) -> StoreResult<Vec<BrokerJob>> {
        self.inner
            .claim_due_broker_deliveries(now, limit, lease)
            .await
    }

    async fn next_broker_delivery_due(&self) -> StoreResult<Option<Timestamp>> {
        self.inner.next_broker_delivery_due().await
    }
}

#[async_trait]
impl PortalStore for EncryptedSecrets {
    async fn create_portal_session(&self, session: PortalSession) -> StoreResult<PortalSession> {
        self.inner.create_portal_session(session).await
    }

    async fn get_portal_session(&self, id: PortalSessionId) -> StoreResult<PortalSession> {
        self.inner.get_portal_session(id).await
    }

    async fn exchange_portal_token(
        &self,
        token_hash: String,
        cookie_hash: String,
        now: Timestamp,
    ) -> StoreResult<PortalSession> {
        self.inner
            .exchange_portal_token(token_hash, cookie_hash, now)
            .await
    }

    async fn portal_session_by_token(&self, token_hash: String) -> StoreResult<PortalSession> {
        self.inner.portal_session_by_token(token_hash).await
    }

    async fn portal_session_by_cookie(&self, cookie_hash: String) -> StoreResult<PortalSession> {
        self.inner.portal_session_by_cookie(cookie_hash).await
    }

    async fn revoke_portal_session(&self, id: PortalSessionId, now: Timestamp) -> StoreResult<()> {
        self.inner.revoke_portal_session(id, now).await
    }

    async fn get_portal_settings(&self, tenant: TenantId) -> StoreResult<PortalSettings> {
        self.inner.get_portal_settings(tenant).await
    }

    async fn put_portal_settings(
        &self,
        tenant: TenantId,
        settings: PortalSettings,
    ) -> StoreResult<PortalSettings> {
        self.inner.put_portal_settings(tenant, settings).await
    }
}

#[async_trait]
impl StatsStore for EncryptedSecrets {
    fn signals(&self) -> &Arc<Signals> {
        self.inner.signals()
    }

    async fn state_counts(&self, tenant: Option<TenantId>) -> StoreResult<StateCounts> {
        self.inner.state_counts(tenant).await
    }

    async fn activity(&self, filter: ActivityFilter) -> StoreResult<Activity> {
        self.inner.activity(filter).await
    }

    async fn schema_version(&self) -> StoreResult<SchemaVersion> {
        self.inner.schema_version().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80=";
    const OTHER: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

    #[test]
    fn seals_opens_and_binds_to_the_webhook() {
        let key = SecretKey::parse(KEY).unwrap();
        let (a, b) = (WebhookId::generate(), WebhookId::generate());
        let sealed = key.seal(a, "hsec_plain").unwrap();
        assert!(sealed.starts_with(SEALED_PREFIX));
        assert!(!sealed.contains("hsec_plain"));
        // A fresh nonce each time.
        assert_ne!(sealed, key.seal(a, "hsec_plain").unwrap());
        assert_eq!(key.open(a, &sealed).unwrap(), "hsec_plain");
        // Sealing is idempotent; plaintext from before the key passes through.
        assert_eq!(key.seal(a, &sealed).unwrap(), sealed);
        assert_eq!(key.open(a, "hsec_legacy").unwrap(), "hsec_legacy");
        // Another webhook's row, or another key: refused, without the secret in the message.
        let err = key.open(b, &sealed).unwrap_err().to_string();
        assert!(
            err.contains("cannot be decrypted") && !err.contains("hsec"),
            "{err}"
        );
        let other = SecretKey::parse(OTHER).unwrap();
        assert!(other.open(a, &sealed).is_err());
        assert!(format!("{key:?}").contains("redacted"));
    }

    #[test]
    fn keys_must_be_32_bytes_of_base64() {
        assert!(SecretKey::parse("").is_err());
        assert!(SecretKey::parse("AAAA").is_err());
        assert!(SecretKey::parse("not base64 at all!").is_err());
        assert!(SecretKey::parse(KEY).is_ok());
    }
}
