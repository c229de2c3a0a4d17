//! What the store's integration tests share: a fresh database per test on
//! every backend — SQLite in a temporary file, and PostgreSQL at
//! `KAPSEL_TEST_POSTGRES_URL` (a database of its own, dropped after the
//! test). When `CI` is set and that URL is not, the PostgreSQL cases fail
//! instead of skipping.

use sqlx::{Connection, Executor};

/// A fresh database, kept alive (temp dir or database) by the guard.
pub struct Backend {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    admin_url: Option<String>,
}

impl Backend {
    /// A SQLite database in a temporary directory.
    pub async fn sqlite() -> Backend {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("kapsel.db").display());
        Backend { url, _dir: Some(dir), admin_url: None }
    }

    /// A new PostgreSQL database named after `prefix`, or `None` (the case
    /// skipped) when `KAPSEL_TEST_POSTGRES_URL` is not set.
    pub async fn postgres(prefix: &str) -> Option<Backend> {
        let Ok(base) = std::env::var("KAPSEL_TEST_POSTGRES_URL") else {
            assert!(std::env::var_os("CI").is_none(), "CI is set but KAPSEL_TEST_POSTGRES_URL is not: the PostgreSQL cases must run in CI");
            eprintln!("KAPSEL_TEST_POSTGRES_URL is not set: skipping the PostgreSQL case");
            return None;
        };
        sqlx::any::install_default_drivers();
        let database = format!("{prefix}_{}_{}", std::process::id(), unique());
        let mut admin = sqlx::AnyConnection::connect(&base).await.expect("connect to KAPSEL_TEST_POSTGRES_URL");
        for statement in [format!("DROP DATABASE IF EXISTS {database}"), format!("CREATE DATABASE {database}")] {
            admin.execute(sqlx::AssertSqlSafe(statement)).await.unwrap();
        }
        let (url_prefix, _) = base.rsplit_once('/').expect("postgres URL with a database");
        Some(Backend { url: format!("{url_prefix}/{database}"), _dir: None, admin_url: Some(base) })
    }

    /// Drops a PostgreSQL test database, closing the connections still open to it.
    pub async fn drop_database(&self) {
        let (Some(admin_url), Some((_, database))) = (&self.admin_url, self.url.rsplit_once('/')) else {
            return;
        };
        let mut admin = sqlx::AnyConnection::connect(admin_url).await.unwrap();
        admin.execute(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))).await.unwrap();
    }
}

/// A number no other database of this test process is named with.
fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    NEXT.fetch_add(1, Ordering::Relaxed) * 1_000_000_000 + u64::from(nanos)
}
