//! SQLite rows for the shared decoders of [`crate::rows`].

use crate::model::*;
use crate::rows::{self as shared, RowAccess};
use crate::StoreResult;
use herald_core::event::Event;
use herald_core::operation::Operation;
use rusqlite::Row;

pub use crate::rows::*;

impl RowAccess for Row<'_> {
    fn text(&self, i: usize) -> StoreResult<String> {
        Ok(self.get(i)?)
    }
    fn opt_text(&self, i: usize) -> StoreResult<Option<String>> {
        Ok(self.get(i)?)
    }
    fn int(&self, i: usize) -> StoreResult<i64> {
        Ok(self.get(i)?)
    }
    fn opt_int(&self, i: usize) -> StoreResult<Option<i64>> {
        Ok(self.get(i)?)
    }
    fn flag(&self, i: usize) -> StoreResult<bool> {
        Ok(self.get::<_, i64>(i)? != 0)
    }
}

// Named functions over SQLite's row type, so they can be passed where a
// `fn(&Row<'_>) -> …` is wanted (a row borrows its statement).

pub fn operation(row: &Row<'_>) -> StoreResult<Operation> {
    shared::operation(row)
}

pub fn event(row: &Row<'_>) -> StoreResult<Event> {
    shared::event(row)
}

pub fn webhook(row: &Row<'_>) -> StoreResult<Webhook> {
    shared::webhook(row)
}

pub fn delivery(row: &Row<'_>) -> StoreResult<Delivery> {
    shared::delivery(row)
}

pub fn attempt(row: &Row<'_>) -> StoreResult<Attempt> {
    shared::attempt(row)
}

pub fn portal_session(row: &Row<'_>) -> StoreResult<PortalSession> {
    shared::portal_session(row)
}
