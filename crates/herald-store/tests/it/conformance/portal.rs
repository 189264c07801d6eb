//! Portal sessions: a URL token opens its session once, while live; revoked or expired
//! sessions open nothing; tenants' portal settings default and are replaced whole.

use super::*;

fn session(t: TenantId, token: &str, expires_at: Timestamp) -> PortalSession {
    PortalSession {
        id: PortalSessionId::generate(),
        tenant: t,
        token_hash: token.into(),
        cookie_hash: None,
        csrf_token: format!("csrf-{token}"),
        read_only: true,
        event_types: Some(vec!["payment.*".into()]),
        expires_at,
        created_at: at(0),
        exchanged_at: None,
        revoked: false,
    }
}

pub(super) async fn portal_tokens_open_their_session_once(s: &dyn Store) {
    let t = tenant(s, "acme").await;
    let p = s
        .create_portal_session(session(t, "tok-a", at(60)))
        .await
        .unwrap();
    assert_eq!(s.get_portal_session(p.id).await.unwrap(), p);
    // Looking a token up (to show its link's page) opens nothing.
    assert_eq!(s.portal_session_by_token("tok-a".into()).await.unwrap(), p);
    assert!(matches!(
        s.portal_session_by_token("tok-none".into()).await,
        Err(StoreError::NotFound)
    ));
    let opened = s
        .exchange_portal_token("tok-a".into(), "cookie-a".into(), at(1))
        .await
        .unwrap();
    assert_eq!(opened.id, p.id);
    assert_eq!(opened.cookie_hash.as_deref(), Some("cookie-a"));
    assert_eq!(opened.exchanged_at, Some(at(1)));
    assert_eq!(opened.event_types, p.event_types);
    assert!(opened.read_only);
    assert_eq!(
        s.portal_session_by_token("tok-a".into())
            .await
            .unwrap()
            .exchanged_at,
        Some(at(1))
    );
    // Once only.
    assert!(matches!(
        s.exchange_portal_token("tok-a".into(), "cookie-b".into(), at(2))
            .await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        s.portal_session_by_cookie("cookie-a".into())
            .await
            .unwrap()
            .id,
        p.id
    );
    assert!(matches!(
        s.portal_session_by_cookie("cookie-b".into()).await,
        Err(StoreError::NotFound)
    ));
    // Expired, or revoked, before it was opened: nothing opens.
    s.create_portal_session(session(t, "tok-old", at(10)))
        .await
        .unwrap();
    assert!(matches!(
        s.exchange_portal_token("tok-old".into(), "c".into(), at(10))
            .await,
        Err(StoreError::NotFound)
    ));
    let r = s
        .create_portal_session(session(t, "tok-r", at(60)))
        .await
        .unwrap();
    s.revoke_portal_session(r.id, at(3)).await.unwrap();
    assert!(matches!(
        s.exchange_portal_token("tok-r".into(), "c".into(), at(4))
            .await,
        Err(StoreError::NotFound)
    ));
    // Revoking an opened one: its cookie finds it, revoked.
    s.revoke_portal_session(p.id, at(5)).await.unwrap();
    let revoked = s.portal_session_by_cookie("cookie-a".into()).await.unwrap();
    assert!(revoked.revoked && !revoked.is_live(at(6)));
    assert!(matches!(
        s.revoke_portal_session(PortalSessionId::generate(), at(5))
            .await,
        Err(StoreError::NotFound)
    ));

    assert_eq!(
        s.get_portal_settings(t).await.unwrap(),
        PortalSettings::default()
    );
    let settings = PortalSettings {
        frame_origins: vec!["https://app.example.com".into()],
        branding: json!({"name": "Acme", "accent": "#0a7"})
            .as_object()
            .unwrap()
            .clone(),
    };
    s.put_portal_settings(t, settings.clone()).await.unwrap();
    assert_eq!(s.get_portal_settings(t).await.unwrap(), settings);
    let replaced = PortalSettings::default();
    s.put_portal_settings(t, replaced.clone()).await.unwrap();
    assert_eq!(s.get_portal_settings(t).await.unwrap(), replaced);
}
