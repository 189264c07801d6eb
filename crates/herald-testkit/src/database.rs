//! A PostgreSQL database of the test's own: made (with a fresh name) through an admin URL
//! from the environment, dropped when the guard is, however the test ends.

use herald_store::postgres::{create_database, drop_database};

/// The variable that makes the store and process tests run on PostgreSQL too.
pub const DATABASE_URL: &str = "HERALD_TEST_DATABASE_URL";
/// The variable that puts every in-process app (the HTTP tests) on PostgreSQL.
pub const HTTP_DATABASE_URL: &str = "HERALD_TEST_HTTP_DATABASE_URL";

/// The admin URL in `var`, if it is set and not empty.
pub fn admin_url(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|u| !u.is_empty())
}

/// [`admin_url`] of [`DATABASE_URL`]; prints "skipped: … not set" when there is none.
pub fn admin_url_or_skip() -> Option<String> {
    let url = admin_url(DATABASE_URL);
    if url.is_none() {
        println!("skipped: {DATABASE_URL} not set");
    }
    url
}

/// A fresh database through [`DATABASE_URL`]; `None` (and "skipped: … not set") without it.
pub async fn postgres_or_skip() -> Option<TestDatabase> {
    Some(TestDatabase::create(admin_url_or_skip()?).await)
}

/// A database named `herald_test_<ulid>`, dropped (through the admin URL) on drop.
pub struct TestDatabase {
    admin_url: String,
    /// Its name.
    pub name: String,
    /// The database itself.
    pub url: String,
}

impl TestDatabase {
    pub async fn create(admin_url: String) -> TestDatabase {
        let name = fresh_name();
        let url = create_database(&admin_url, &name).await.unwrap();
        TestDatabase {
            admin_url,
            name,
            url,
        }
    }
}

/// `herald_test_<a new ulid, lower case>`.
pub fn fresh_name() -> String {
    format!(
        "herald_test_{}",
        ulid::Ulid::new().to_string().to_lowercase()
    )
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (admin, name) = (self.admin_url.clone(), self.name.clone());
        // On a thread of its own: this may run inside the test's runtime.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(drop_database(&admin, &name))
        })
        .join();
    }
}
