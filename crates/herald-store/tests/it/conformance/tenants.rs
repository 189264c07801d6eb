//! Tenants, keys and event types.

use super::*;

pub(super) async fn tenants_and_keys(s: &dyn Store) {
    let t = tenant(s, "acme").await;
    assert_eq!(s.get_tenant(t).await.unwrap().name, "acme");
    assert!(matches!(
        s.get_tenant(TenantId::generate()).await,
        Err(StoreError::NotFound)
    ));

    assert_eq!(s.count_live_admin_keys().await.unwrap(), 0);
    let admin = ApiKey {
        id: KeyId::generate(),
        hash: "h1".into(),
        role: Role::Admin,
        created_at: T0,
        revoked: false,
        scope: WorkerScope::default(),
    };
    let tenant_key = ApiKey {
        id: KeyId::generate(),
        hash: "h2".into(),
        role: Role::Tenant(t),
        created_at: T0,
        revoked: false,
        scope: WorkerScope::default(),
    };
    s.create_key(admin.clone()).await.unwrap();
    s.create_key(tenant_key.clone()).await.unwrap();
    assert_eq!(s.count_live_admin_keys().await.unwrap(), 1);
    assert_eq!(s.get_key(tenant_key.id).await.unwrap(), tenant_key);
    // Worker keys keep their scope: types, tenants, both, or neither.
    let other = tenant(s, "globex").await;
    for scope in [
        WorkerScope::default(),
        WorkerScope {
            types: Some(vec!["transcode".into(), "resize".into()]),
            tenants: None,
        },
        WorkerScope {
            types: None,
            tenants: Some(vec![t, other]),
        },
        WorkerScope {
            types: Some(vec!["transcode".into()]),
            tenants: Some(vec![other]),
        },
    ] {
        let worker = ApiKey {
            id: KeyId::generate(),
            hash: "h3".into(),
            role: Role::Worker,
            created_at: T0,
            revoked: false,
            scope,
        };
        s.create_key(worker.clone()).await.unwrap();
        assert_eq!(s.get_key(worker.id).await.unwrap(), worker);
    }
    s.revoke_key(admin.id, at(1)).await.unwrap();
    assert!(s.get_key(admin.id).await.unwrap().revoked);
    assert_eq!(s.count_live_admin_keys().await.unwrap(), 0);
    assert!(matches!(
        s.revoke_key(KeyId::generate(), at(1)).await,
        Err(StoreError::NotFound)
    ));
}

pub(super) async fn event_types_are_upserted(s: &dyn Store) {
    s.put_event_type(EventType {
        name: "b.x".into(),
        schema: json!({"type": "object"}),
    })
    .await
    .unwrap();
    s.put_event_type(EventType {
        name: "a.x".into(),
        schema: json!({}),
    })
    .await
    .unwrap();
    s.put_event_type(EventType {
        name: "b.x".into(),
        schema: json!({"type": "string"}),
    })
    .await
    .unwrap();
    let types = s.list_event_types().await.unwrap();
    assert_eq!(types.len(), 2);
    assert_eq!(types[0].name, "a.x");
    assert_eq!(types[1].schema, json!({"type": "string"}));
}
