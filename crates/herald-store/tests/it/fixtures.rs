//! What the retention and observability tests share: a fixed clock, a tenant, a webhook and
//! an attempt for a claimed delivery.

use herald_core::ids::*;
use herald_core::pattern::EventPattern;
use herald_core::signing::SignatureFormat;
use herald_core::Timestamp;
use herald_store::*;

pub const T0: Timestamp = Timestamp(1_775_834_400_000);

pub fn at(secs: i64) -> Timestamp {
    Timestamp(T0.0 + secs * 1000)
}

pub async fn tenant(store: &dyn Store, name: &str) -> TenantId {
    store
        .create_tenant(Tenant {
            id: TenantId::generate(),
            name: name.into(),
            created_at: T0,
        })
        .await
        .unwrap()
        .id
}

pub async fn webhook(store: &dyn Store, tenant: TenantId) -> WebhookId {
    store
        .create_webhook(Webhook {
            id: WebhookId::generate(),
            tenant: Some(tenant),
            url: "http://127.0.0.1:9/h".into(),
            events: vec![EventPattern::parse("payment.*").unwrap()],
            format: SignatureFormat::Herald,
            secret: "hsec_test".into(),
            secret_version: 1,
            previous_secret: None,
            schedule: None,
            max_concurrency: None,
            ordering: Default::default(),
            options: Default::default(),
            disabled: false,
            disabled_reason: None,
            description: None,
            created_at: T0,
            updated_at: T0,
        })
        .await
        .unwrap()
        .id
}

pub fn attempt(job: &DeliveryJob, when: Timestamp, code: u16, latency_ms: u64) -> Attempt {
    Attempt {
        id: AttemptId::generate(),
        delivery_id: job.delivery.id,
        at: when,
        status_code: Some(code),
        latency_ms,
        error: (code >= 300).then(|| format!("HTTP {code}")),
        response_excerpt: None,
    }
}
