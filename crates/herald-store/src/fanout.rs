//! Which webhooks and broker routes get an event.
