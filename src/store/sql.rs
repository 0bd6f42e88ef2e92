//! [`Metadata`] in SQL, through sqlx's `Any` driver: SQLite (the embedded default) today, and
//! PostgreSQL with the same queries and migrations (`src/store/migrations`).
//!
//! Races are decided by the database: a crate change first bumps the crate's `revision` where
//! it still has the value the change was decided on (or inserts the crate, whose key is
//! unique), and a version's release is a unique key. Every change is one transaction whose
//! first statement writes, so SQLite takes its write lock at once (waiting out another writer
//! with its busy timeout) instead of failing a read-to-write upgrade.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Connection, Row, Transaction};

use super::advisories::{AdvisoryDb, AdvisoryRecord};
use super::hooks::{new_id, now_millis, AttemptRecord, DeliveryRecord, DueDelivery, HookEvent, HookRecord};
use super::{
    now_secs, Counts, CrateChange, CrateRecord, Metadata, Snapshot, StoreError, StoreEvent, StoreResult, TokenRecord,
    UserRecord, VersionRecord, CHANGES_CHANNEL,
};
use crate::config::RegistrySpec;
use crate::index::IndexLine;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("src/store/migrations");

/// Metadata in a SQL database.
pub struct SqlMetadata {
    /// Reads (several connections).
    read: AnyPool,
    /// Changes. One connection for SQLite, which has one writer at a time anyway.
    write: AnyPool,
    postgres: bool,
    /// PostgreSQL's URL, for the change feed's own connection ([`Metadata::watch`]).
    url: Option<String>,
    /// [`Metadata::shared`]: PostgreSQL (tests may say so of SQLite handles standing for nodes).
    shared: bool,
}

/// Announces `event` in the transaction `tx` (PostgreSQL only: `NOTIFY` is delivered to every
/// listener when, and only when, the transaction commits; SQLite has no other process to tell).
async fn announce(tx: &mut Transaction<'static, Any>, postgres: bool, event: &StoreEvent) -> StoreResult<()> {
    if !postgres {
        return Ok(());
    }
    let payload = serde_json::to_string(event).map_err(|e| StoreError::Io(e.to_string()))?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANGES_CHANNEL)
        .bind(payload)
        .execute(&mut **tx)
        .await
        .map_err(db_err)?;
    Ok(())
}

/// Writes `event` into the webhook outbox in the transaction `tx` of the change it reports.
async fn record_event(tx: &mut Transaction<'static, Any>, event: &HookEvent) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO webhook_outbox (id, event, registry, payload, created, fanned_out) VALUES ($1, $2, $3, $4, $5, 0)",
    )
    .bind(new_id())
    .bind(&event.event)
    .bind(&event.registry)
    .bind(&event.payload)
    .bind(to_i64(now_millis()))
    .execute(&mut **tx)
    .await
    .map_err(db_err)?;
    Ok(())
}

const HOOK_COLUMNS: &str = "id, url, secret, registry, events, created, created_by";

fn hook_of(r: &AnyRow) -> StoreResult<HookRecord> {
    let events: String = r.try_get(4).map_err(db_err)?;
    Ok(HookRecord {
        id: r.try_get(0).map_err(db_err)?,
        url: r.try_get(1).map_err(db_err)?,
        secret: r.try_get(2).map_err(db_err)?,
        registry: r.try_get(3).map_err(db_err)?,
        events: serde_json::from_str(&events).map_err(|e| corrupt("hook events", e))?,
        created: to_u64(r.try_get(5).map_err(db_err)?),
        created_by: r.try_get(6).map_err(db_err)?,
    })
}

const DELIVERY_COLUMNS: &str = "d.id, d.hook, d.event, d.payload, d.state, d.attempts, d.next_attempt, d.last_status, \
     d.last_error, d.created, d.last_attempt, d.finished";

fn opt_u64(r: &AnyRow, i: usize) -> StoreResult<Option<u64>> {
    Ok(r.try_get::<Option<i64>, _>(i).map_err(db_err)?.map(to_u64))
}

fn delivery_of(r: &AnyRow) -> StoreResult<DeliveryRecord> {
    Ok(DeliveryRecord {
        id: r.try_get(0).map_err(db_err)?,
        hook: r.try_get(1).map_err(db_err)?,
        event: r.try_get(2).map_err(db_err)?,
        payload: r.try_get(3).map_err(db_err)?,
        state: r.try_get(4).map_err(db_err)?,
        attempts: to_u64(r.try_get(5).map_err(db_err)?),
        next_attempt: to_u64(r.try_get(6).map_err(db_err)?),
        last_status: opt_u64(r, 7)?.map(|s| s as u16),
        last_error: r.try_get(8).map_err(db_err)?,
        created: to_u64(r.try_get(9).map_err(db_err)?),
        last_attempt: opt_u64(r, 10)?,
        finished: opt_u64(r, 11)?,
        attempt_log: Vec::new(),
    })
}

async fn attempts_of(conn: &mut sqlx::AnyConnection, delivery: &str) -> StoreResult<Vec<AttemptRecord>> {
    let rows = sqlx::query("SELECT n, at, status, error, millis FROM webhook_attempts WHERE delivery = $1 ORDER BY n")
        .bind(delivery)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_err)?;
    rows.iter()
        .map(|r| {
            Ok(AttemptRecord {
                n: to_u64(r.try_get(0).map_err(db_err)?),
                at: to_u64(r.try_get(1).map_err(db_err)?),
                status: opt_u64(r, 2)?.map(|s| s as u16),
                error: r.try_get(3).map_err(db_err)?,
                millis: to_u64(r.try_get(4).map_err(db_err)?),
            })
        })
        .collect()
}

/// Listens to [`CHANGES_CHANNEL`] on a connection of its own.
async fn listen(url: &str) -> Result<sqlx::postgres::PgListener, sqlx::Error> {
    let mut l = sqlx::postgres::PgListener::connect(url).await?;
    l.listen(CHANGES_CHANNEL).await?;
    Ok(l)
}

fn db_err(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(d) = &e {
        if matches!(d.kind(), sqlx::error::ErrorKind::UniqueViolation) {
            return StoreError::Conflict(d.message().to_owned());
        }
        // SQLITE_BUSY_SNAPSHOT: another connection wrote since this transaction's snapshot;
        // PostgreSQL: serialization failure, deadlock detected.
        if matches!(d.code().as_deref(), Some("517" | "40001" | "40P01")) {
            return StoreError::Conflict(d.message().to_owned());
        }
    }
    StoreError::Io(format!("database: {e}"))
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// The version without build metadata: what must be unique per crate.
fn release_of(vers: &str) -> String {
    match semver::Version::parse(vers) {
        Ok(mut v) => {
            v.build = semver::BuildMetadata::EMPTY;
            v.to_string()
        }
        Err(_) => vers.split('+').next().unwrap_or(vers).to_owned(),
    }
}

/// A `sqlite://` URL for a file path (percent-encoded, so any path works).
fn sqlite_url(path: &Path) -> String {
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'.')
        .remove(b'-')
        .remove(b'_');
    let text = path.to_string_lossy();
    format!(
        "sqlite://{}?mode=rwc",
        percent_encoding::utf8_percent_encode(&text, KEEP)
    )
}

/// Pool options for SQLite: every connection commits with `synchronous = FULL` (said
/// explicitly, not left to the library's compile-time default), so an acknowledged change is
/// on disk in the WAL, and waits up to 5 s for another writer.
fn sqlite_pool() -> AnyPoolOptions {
    AnyPoolOptions::new().after_connect(|conn, _| {
        Box::pin(async move {
            sqlx::query("PRAGMA synchronous = FULL").execute(&mut *conn).await?;
            sqlx::query("PRAGMA busy_timeout = 5000").execute(&mut *conn).await?;
            Ok(())
        })
    })
}

impl SqlMetadata {
    /// Opens (creating and migrating) the SQLite database at `path`, in WAL mode.
    pub async fn open_sqlite(path: &Path) -> StoreResult<Self> {
        sqlx::any::install_default_drivers();
        if path.to_str().is_none() {
            return Err(StoreError::Io(format!(
                "the store path {} is not valid UTF-8, which SQLite cannot open; use a data directory whose path is UTF-8",
                path.display()
            )));
        }
        let path = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => {
                std::fs::canonicalize(dir)?.join(path.file_name().unwrap_or_default())
            }
            _ => path.to_owned(),
        };
        let url = sqlite_url(&path);
        let write = sqlite_pool()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect(&url)
            .await
            .map_err(|e| StoreError::Io(format!("cannot open {}: {e}", path.display())))?;
        sqlx::query("PRAGMA journal_mode = WAL")
            .execute(&write)
            .await
            .map_err(db_err)?;
        MIGRATOR
            .run(&write)
            .await
            .map_err(|e| StoreError::Io(format!("cannot migrate {}: {e}", path.display())))?;
        let read = sqlite_pool()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .connect(&url)
            .await
            .map_err(db_err)?;
        Ok(SqlMetadata {
            read,
            write,
            postgres: false,
            url: None,
            shared: false,
        })
    }

    /// Opens (and migrates) the PostgreSQL database at `url` (`postgres://...`): the same
    /// tables, queries and migrations as the embedded SQLite store, for several nodes.
    pub async fn open_postgres(url: &str) -> StoreResult<Self> {
        sqlx::any::install_default_drivers();
        let safe = crate::store::redact_url(url);
        // Migrations on a connection of their own: sqlx's migrator takes a PostgreSQL
        // advisory lock (keyed by the database name) on it before it even creates its table,
        // so nodes starting at once migrate one after the other, and the later ones find the
        // work done. Closing the connection releases the lock whatever happened.
        let mut conn = sqlx::AnyConnection::connect(url)
            .await
            .map_err(|e| StoreError::Io(format!("cannot connect to {safe}: {e}")))?;
        let migrated = MIGRATOR.run_direct(&mut conn).await;
        let _ = conn.close().await;
        migrated.map_err(|e| StoreError::Io(format!("cannot migrate {safe}: {e}")))?;
        let write = AnyPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(30))
            .connect(url)
            .await
            .map_err(|e| StoreError::Io(format!("cannot connect to {safe}: {e}")))?;
        let read = AnyPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(30))
            .connect(url)
            .await
            .map_err(|e| StoreError::Io(format!("cannot connect to {safe}: {e}")))?;
        Ok(SqlMetadata {
            read,
            write,
            postgres: true,
            url: Some(url.to_owned()),
            shared: true,
        })
    }

    async fn begin(&self) -> StoreResult<Transaction<'static, Any>> {
        self.write.begin().await.map_err(db_err)
    }

    /// [`Metadata::change_crate`], recording the change's webhook event (by `actor`) in the
    /// same transaction when `actor` is given.
    async fn apply_change(
        &self,
        registry: &str,
        canonical: &str,
        expected: Option<u64>,
        change: &CrateChange,
        actor: Option<&str>,
    ) -> StoreResult<u64> {
        let mut tx = self.begin().await?;

        let revision = match (expected, change) {
            (
                None,
                CrateChange::Publish {
                    name,
                    version,
                    description,
                    keywords,
                },
            ) => {
                let rec = CrateRecord {
                    name: name.clone(),
                    owners: vec![version.published_by.clone()],
                    description: description.clone(),
                    keywords: keywords.clone(),
                    versions: Vec::new(),
                    revision: 1,
                };
                insert_crate(&mut tx, registry, canonical, &rec).await?;
                set_owners(&mut tx, registry, canonical, &rec.owners).await?;
                insert_version(&mut tx, registry, canonical, 1, version).await?;
                1
            }
            (None, _) => {
                return Err(StoreError::Conflict(format!(
                    "crate `{canonical}` does not exist in `{registry}`"
                )))
            }
            (Some(rev), change) => {
                let bumped = sqlx::query(
                    "UPDATE crates SET revision = revision + 1 WHERE registry = $1 AND canonical = $2 AND revision = $3",
                )
                .bind(registry)
                .bind(canonical)
                .bind(to_i64(rev))
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
                if bumped.rows_affected() != 1 {
                    return Err(StoreError::Conflict(format!(
                        "crate `{canonical}` in `{registry}` changed since revision {rev}"
                    )));
                }
                match change {
                    CrateChange::Publish {
                        version,
                        description,
                        keywords,
                        ..
                    } => {
                        if let Some(d) = description {
                            sqlx::query("UPDATE crates SET description = $3 WHERE registry = $1 AND canonical = $2")
                                .bind(registry)
                                .bind(canonical)
                                .bind(d)
                                .execute(&mut *tx)
                                .await
                                .map_err(db_err)?;
                        }
                        if !keywords.is_empty() {
                            sqlx::query("UPDATE crates SET keywords = $3 WHERE registry = $1 AND canonical = $2")
                                .bind(registry)
                                .bind(canonical)
                                .bind(json(keywords)?)
                                .execute(&mut *tx)
                                .await
                                .map_err(db_err)?;
                        }
                        let row = sqlx::query(
                            "SELECT COALESCE(MAX(seq), 0) FROM versions WHERE registry = $1 AND canonical = $2",
                        )
                        .bind(registry)
                        .bind(canonical)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(db_err)?;
                        let seq: i64 = row.try_get(0).map_err(db_err)?;
                        insert_version(&mut tx, registry, canonical, seq + 1, version).await?;
                    }
                    CrateChange::SetYanked { vers, yanked } => {
                        let done = sqlx::query(
                            "UPDATE versions SET yanked = $4 WHERE registry = $1 AND canonical = $2 AND vers = $3",
                        )
                        .bind(registry)
                        .bind(canonical)
                        .bind(vers)
                        .bind(i64::from(*yanked))
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                        if done.rows_affected() != 1 {
                            return Err(StoreError::Conflict(format!(
                                "crate `{canonical}` has no version `{vers}`"
                            )));
                        }
                    }
                    CrateChange::SetOwners(owners) => set_owners(&mut tx, registry, canonical, owners).await?,
                }
                rev + 1
            }
        };
        if self.postgres || actor.is_some() {
            // The crate's name as published: the nodes' caches are keyed by it, lowercased.
            let row = sqlx::query("SELECT name FROM crates WHERE registry = $1 AND canonical = $2")
                .bind(registry)
                .bind(canonical)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
            let name: String = match row {
                Some(r) => r.try_get(0).map_err(db_err)?,
                None => canonical.to_owned(),
            };
            let event = StoreEvent::Crate {
                registry: registry.to_owned(),
                name,
            };
            if let Some(actor) = actor {
                if let StoreEvent::Crate { name, .. } = &event {
                    record_event(&mut tx, &HookEvent::of_change(registry, name, change, actor)).await?;
                }
            }
            announce(&mut tx, self.postgres, &event).await?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(revision)
    }

    /// Creates or replaces a registry definition; with `actor` (`Some(None)`: the config
    /// file), records `registry.changed` in the same transaction.
    async fn write_registry(&self, spec: &RegistrySpec, actor: Option<Option<&str>>) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM registries WHERE name = $1")
            .bind(&spec.name)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        sqlx::query("INSERT INTO registries (name, spec) VALUES ($1, $2)")
            .bind(&spec.name)
            .bind(json(spec)?)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        if let Some(actor) = actor {
            record_event(&mut tx, &HookEvent::registry_changed(&spec.name, actor)).await?;
        }
        announce(&mut tx, self.postgres, &StoreEvent::Registries).await?;
        tx.commit().await.map_err(db_err)
    }

    /// Deletes a registry like [`Self::write_registry`] writes one.
    async fn remove_registry(&self, name: &str, actor: Option<Option<&str>>) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        for sql in [
            "DELETE FROM registries WHERE name = $1",
            "DELETE FROM owners WHERE registry = $1",
            "DELETE FROM versions WHERE registry = $1",
            "DELETE FROM crates WHERE registry = $1",
        ] {
            sqlx::query(sql).bind(name).execute(&mut *tx).await.map_err(db_err)?;
        }
        if let Some(actor) = actor {
            record_event(&mut tx, &HookEvent::registry_changed(name, actor)).await?;
        }
        announce(&mut tx, self.postgres, &StoreEvent::Registries).await?;
        tx.commit().await.map_err(db_err)
    }
}

/// The crates of `registry` (all registries if `None`), optionally one crate, with versions
/// and owners. Two statements: a change between them bumps the revision read by the first, so
/// a change decided on the result fails its revision check and is decided again.
async fn load_crates(
    conn: &mut sqlx::AnyConnection,
    registry: Option<&str>,
    canonical: Option<&str>,
) -> StoreResult<Vec<(String, String, CrateRecord)>> {
    let mut filter = String::new();
    if registry.is_some() {
        filter.push_str(" WHERE c.registry = $1");
        if canonical.is_some() {
            filter.push_str(" AND c.canonical = $2");
        }
    }
    let sql = format!(
        "SELECT c.registry, c.canonical, c.name, c.description, c.keywords, c.revision, v.line, v.yanked, v.published_by \
         FROM crates c LEFT JOIN versions v ON v.registry = c.registry AND v.canonical = c.canonical{filter} \
         ORDER BY c.registry, c.canonical, v.seq"
    );
    let mut q = sqlx::query(&sql);
    if let Some(r) = registry {
        q = q.bind(r);
        if let Some(c) = canonical {
            q = q.bind(c);
        }
    }
    let rows = q.fetch_all(&mut *conn).await.map_err(db_err)?;
    let mut out: Vec<(String, String, CrateRecord)> = Vec::new();
    for row in rows {
        let reg: String = row.try_get(0).map_err(db_err)?;
        let canon: String = row.try_get(1).map_err(db_err)?;
        let is_new = out.last().is_none_or(|(r, c, _)| *r != reg || *c != canon);
        if is_new {
            let keywords: String = row.try_get(4).map_err(db_err)?;
            out.push((
                reg,
                canon,
                CrateRecord {
                    name: row.try_get(2).map_err(db_err)?,
                    owners: Vec::new(),
                    description: row.try_get(3).map_err(db_err)?,
                    keywords: serde_json::from_str(&keywords).map_err(|e| corrupt("keywords", e))?,
                    versions: Vec::new(),
                    revision: to_u64(row.try_get(5).map_err(db_err)?),
                },
            ));
        }
        let line: Option<String> = row.try_get(6).map_err(db_err)?;
        if let (Some(line), Some((_, _, rec))) = (line, out.last_mut()) {
            let mut line: IndexLine = serde_json::from_str(&line).map_err(|e| corrupt("index line", e))?;
            line.yanked = row.try_get::<i64, _>(7).map_err(db_err)? != 0;
            rec.versions.push(VersionRecord {
                line,
                published_by: row.try_get(8).map_err(db_err)?,
            });
        }
    }
    let mut sql = "SELECT registry, canonical, login FROM owners".to_owned();
    if registry.is_some() {
        sql.push_str(" WHERE registry = $1");
        if canonical.is_some() {
            sql.push_str(" AND canonical = $2");
        }
    }
    sql.push_str(" ORDER BY registry, canonical, seq");
    let mut q = sqlx::query(&sql);
    if let Some(r) = registry {
        q = q.bind(r);
        if let Some(c) = canonical {
            q = q.bind(c);
        }
    }
    let owners = q.fetch_all(&mut *conn).await.map_err(db_err)?;
    let mut index: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (i, (r, c, _)) in out.iter().enumerate() {
        index.insert((r.clone(), c.clone()), i);
    }
    for row in owners {
        let key: (String, String) = (row.try_get(0).map_err(db_err)?, row.try_get(1).map_err(db_err)?);
        if let Some(&i) = index.get(&key) {
            out[i].2.owners.push(row.try_get(2).map_err(db_err)?);
        }
    }
    Ok(out)
}

fn user_of(row: &AnyRow) -> StoreResult<UserRecord> {
    Ok(UserRecord {
        login: row.try_get(0).map_err(db_err)?,
        id: u32::try_from(row.try_get::<i64, _>(1).map_err(db_err)?).map_err(|e| corrupt("user id", e))?,
        name: row.try_get(2).map_err(db_err)?,
        created: to_u64(row.try_get(3).map_err(db_err)?),
    })
}

const TOKEN_COLUMNS: &str = "hash, id, login, name, scopes, registries, expires, created";

fn token_of(row: &AnyRow) -> StoreResult<TokenRecord> {
    let scopes: String = row.try_get(4).map_err(db_err)?;
    let registries: Option<String> = row.try_get(5).map_err(db_err)?;
    Ok(TokenRecord {
        hash: row.try_get(0).map_err(db_err)?,
        id: row.try_get(1).map_err(db_err)?,
        user: row.try_get(2).map_err(db_err)?,
        name: row.try_get(3).map_err(db_err)?,
        scopes: serde_json::from_str(&scopes).map_err(|e| corrupt("token scopes", e))?,
        registries: registries
            .map(|r| serde_json::from_str(&r))
            .transpose()
            .map_err(|e| corrupt("token registries", e))?,
        expires: row.try_get::<Option<i64>, _>(6).map_err(db_err)?.map(to_u64),
        created: to_u64(row.try_get(7).map_err(db_err)?),
    })
}

fn json<T: serde::Serialize>(v: &T) -> StoreResult<String> {
    serde_json::to_string(v).map_err(|e| corrupt("encoding", e))
}

async fn insert_token(tx: &mut Transaction<'static, Any>, t: &TokenRecord) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO tokens (hash, id, login, name, scopes, registries, expires, created) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&t.hash)
    .bind(&t.id)
    .bind(&t.user)
    .bind(&t.name)
    .bind(json(&t.scopes)?)
    .bind(t.registries.as_ref().map(json).transpose()?)
    .bind(t.expires.map(to_i64))
    .bind(to_i64(t.created))
    .execute(&mut **tx)
    .await
    .map_err(db_err)?;
    Ok(())
}

async fn insert_version(
    tx: &mut Transaction<'static, Any>,
    registry: &str,
    canonical: &str,
    seq: i64,
    v: &VersionRecord,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO versions (registry, canonical, release, seq, vers, cksum, yanked, line, published_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(registry)
    .bind(canonical)
    .bind(release_of(&v.line.vers))
    .bind(seq)
    .bind(&v.line.vers)
    .bind(&v.line.cksum)
    .bind(i64::from(v.line.yanked))
    .bind(json(&v.line)?)
    .bind(&v.published_by)
    .execute(&mut **tx)
    .await
    .map_err(db_err)?;
    Ok(())
}

async fn set_owners(
    tx: &mut Transaction<'static, Any>,
    registry: &str,
    canonical: &str,
    owners: &[String],
) -> StoreResult<()> {
    sqlx::query("DELETE FROM owners WHERE registry = $1 AND canonical = $2")
        .bind(registry)
        .bind(canonical)
        .execute(&mut **tx)
        .await
        .map_err(db_err)?;
    for (i, login) in owners.iter().enumerate() {
        sqlx::query("INSERT INTO owners (registry, canonical, login, seq) VALUES ($1, $2, $3, $4)")
            .bind(registry)
            .bind(canonical)
            .bind(login)
            .bind(i64::try_from(i).unwrap_or(i64::MAX))
            .execute(&mut **tx)
            .await
            .map_err(db_err)?;
    }
    Ok(())
}

async fn insert_crate(
    tx: &mut Transaction<'static, Any>,
    registry: &str,
    canonical: &str,
    rec: &CrateRecord,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO crates (registry, canonical, name, description, keywords, revision) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(registry)
    .bind(canonical)
    .bind(&rec.name)
    .bind(&rec.description)
    .bind(json(&rec.keywords)?)
    .bind(to_i64(rec.revision.max(1)))
    .execute(&mut **tx)
    .await
    .map_err(db_err)?;
    Ok(())
}

/// Records `marker` in `store_meta`; `false` if it is there already (the unique key decides,
/// also between processes). Being a write, it also takes the write lock for the rest of `tx`.
async fn claim_marker(tx: &mut Transaction<'static, Any>, marker: &str) -> StoreResult<bool> {
    let marked = sqlx::query("INSERT INTO store_meta (key, value) VALUES ($1, $2)")
        .bind(marker)
        .bind(now_secs().to_string())
        .execute(&mut **tx)
        .await
        .map_err(db_err);
    match marked {
        Ok(_) => Ok(true),
        Err(StoreError::Conflict(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Inserts a crate with its owners and its versions (in their order).
async fn insert_whole_crate(
    tx: &mut Transaction<'static, Any>,
    registry: &str,
    canonical: &str,
    rec: &CrateRecord,
) -> StoreResult<()> {
    insert_crate(tx, registry, canonical, rec).await?;
    set_owners(tx, registry, canonical, &rec.owners).await?;
    for (i, v) in rec.versions.iter().enumerate() {
        insert_version(tx, registry, canonical, i64::try_from(i).unwrap_or(i64::MAX) + 1, v).await?;
    }
    Ok(())
}

#[async_trait]
impl Metadata for SqlMetadata {
    async fn registries(&self) -> StoreResult<Vec<RegistrySpec>> {
        let rows = sqlx::query("SELECT spec FROM registries ORDER BY name")
            .fetch_all(&self.read)
            .await
            .map_err(db_err)?;
        rows.iter()
            .map(|r| {
                let spec: String = r.try_get(0).map_err(db_err)?;
                serde_json::from_str(&spec).map_err(|e| corrupt("registry definition", e))
            })
            .collect()
    }

    async fn put_registry(&self, spec: &RegistrySpec) -> StoreResult<()> {
        self.write_registry(spec, None).await
    }

    async fn delete_registry(&self, name: &str) -> StoreResult<()> {
        self.remove_registry(name, None).await
    }

    async fn get_crate(&self, registry: &str, canonical: &str) -> StoreResult<Option<CrateRecord>> {
        let mut conn = self.read.acquire().await.map_err(db_err)?;
        let mut found = load_crates(&mut conn, Some(registry), Some(canonical)).await?;
        Ok(found.pop().map(|(_, _, r)| r))
    }

    async fn crates(&self, registry: &str) -> StoreResult<Vec<CrateRecord>> {
        let mut conn = self.read.acquire().await.map_err(db_err)?;
        let found = load_crates(&mut conn, Some(registry), None).await?;
        Ok(found.into_iter().map(|(_, _, r)| r).collect())
    }

    async fn crate_count(&self, registry: &str) -> StoreResult<u64> {
        let row = sqlx::query("SELECT COUNT(*) FROM crates WHERE registry = $1")
            .bind(registry)
            .fetch_one(&self.read)
            .await
            .map_err(db_err)?;
        Ok(to_u64(row.try_get(0).map_err(db_err)?))
    }

    async fn change_crate(
        &self,
        registry: &str,
        canonical: &str,
        expected: Option<u64>,
        change: &CrateChange,
    ) -> StoreResult<u64> {
        self.apply_change(registry, canonical, expected, change, None).await
    }

    async fn change_crate_as(
        &self,
        registry: &str,
        canonical: &str,
        expected: Option<u64>,
        change: &CrateChange,
        actor: &str,
    ) -> StoreResult<u64> {
        self.apply_change(registry, canonical, expected, change, Some(actor))
            .await
    }

    async fn put_registry_as(&self, spec: &RegistrySpec, actor: Option<&str>) -> StoreResult<()> {
        self.write_registry(spec, Some(actor)).await
    }

    async fn delete_registry_as(&self, name: &str, actor: Option<&str>) -> StoreResult<()> {
        self.remove_registry(name, Some(actor)).await
    }

    async fn record_event_once(&self, id: &str, event: &HookEvent) -> StoreResult<bool> {
        let done = sqlx::query(
            "INSERT INTO webhook_outbox (id, event, registry, payload, created, fanned_out) VALUES ($1, $2, $3, $4, $5, 0) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(&event.event)
        .bind(&event.registry)
        .bind(&event.payload)
        .bind(to_i64(now_millis()))
        .execute(&self.write)
        .await
        .map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn has_event(&self, id: &str) -> StoreResult<bool> {
        let row = sqlx::query("SELECT 1 FROM webhook_outbox WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.read)
            .await
            .map_err(db_err)?;
        Ok(row.is_some())
    }

    async fn outbox_pending(&self, limit: u64) -> StoreResult<Vec<(String, HookEvent)>> {
        let rows = sqlx::query(
            "SELECT id, event, registry, payload FROM webhook_outbox WHERE fanned_out = 0 ORDER BY created, id LIMIT $1",
        )
        .bind(to_i64(limit))
        .fetch_all(&self.read)
        .await
        .map_err(db_err)?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get(0).map_err(db_err)?,
                    HookEvent {
                        event: r.try_get(1).map_err(db_err)?,
                        registry: r.try_get(2).map_err(db_err)?,
                        payload: r.try_get(3).map_err(db_err)?,
                    },
                ))
            })
            .collect()
    }

    async fn fan_out(&self, id: &str) -> StoreResult<Option<u64>> {
        let mut tx = self.begin().await?;
        let claimed = sqlx::query("UPDATE webhook_outbox SET fanned_out = 1 WHERE id = $1 AND fanned_out = 0")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        if claimed.rows_affected() != 1 {
            return Ok(None);
        }
        let row = sqlx::query("SELECT event, registry, payload FROM webhook_outbox WHERE id = $1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err)?;
        let (event, registry, payload): (String, String, String) = (
            row.try_get(0).map_err(db_err)?,
            row.try_get(1).map_err(db_err)?,
            row.try_get(2).map_err(db_err)?,
        );
        let rows = sqlx::query(&format!("SELECT {HOOK_COLUMNS} FROM webhooks"))
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
        let now = to_i64(now_millis());
        let mut made = 0;
        for hook in rows.iter().map(hook_of) {
            let hook = hook?;
            if !hook.wants(&event, &registry) {
                continue;
            }
            sqlx::query(
                "INSERT INTO webhook_deliveries (id, hook, outbox, event, payload, state, attempts, next_attempt, created, claimed_until) \
                 VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $6, 0)",
            )
            .bind(new_id())
            .bind(&hook.id)
            .bind(id)
            .bind(&event)
            .bind(&payload)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
            made += 1;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(Some(made))
    }

    async fn put_hook(&self, hook: &HookRecord) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO webhooks (id, url, secret, registry, events, created, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&hook.id)
        .bind(&hook.url)
        .bind(&hook.secret)
        .bind(&hook.registry)
        .bind(json(&hook.events)?)
        .bind(to_i64(hook.created))
        .bind(&hook.created_by)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)
    }

    async fn hooks(&self) -> StoreResult<Vec<HookRecord>> {
        let rows = sqlx::query(&format!("SELECT {HOOK_COLUMNS} FROM webhooks ORDER BY created, id"))
            .fetch_all(&self.read)
            .await
            .map_err(db_err)?;
        rows.iter().map(hook_of).collect()
    }

    async fn delete_hook(&self, id: &str) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let done = sqlx::query("DELETE FROM webhooks WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        for sql in [
            "DELETE FROM webhook_attempts WHERE delivery IN (SELECT id FROM webhook_deliveries WHERE hook = $1)",
            "DELETE FROM webhook_deliveries WHERE hook = $1",
        ] {
            sqlx::query(sql).bind(id).execute(&mut *tx).await.map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn deliveries(&self, hook: &str, limit: u64) -> StoreResult<Vec<DeliveryRecord>> {
        let mut conn = self.read.acquire().await.map_err(db_err)?;
        let rows = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d WHERE d.hook = $1 ORDER BY d.created DESC, d.id LIMIT $2"
        ))
        .bind(hook)
        .bind(to_i64(limit))
        .fetch_all(&mut *conn)
        .await
        .map_err(db_err)?;
        let mut out = Vec::new();
        for r in &rows {
            let mut d = delivery_of(r)?;
            d.attempt_log = attempts_of(&mut conn, &d.id).await?;
            out.push(d);
        }
        Ok(out)
    }

    async fn claim_deliveries(&self, node: &str, now: u64, lease: u64, limit: u64) -> StoreResult<Vec<DueDelivery>> {
        let due = sqlx::query(
            "SELECT id FROM webhook_deliveries WHERE state = 'pending' AND next_attempt <= $1 AND claimed_until < $1 \
             ORDER BY next_attempt, id LIMIT $2",
        )
        .bind(to_i64(now))
        .bind(to_i64(limit))
        .fetch_all(&self.read)
        .await
        .map_err(db_err)?;
        let mut out = Vec::new();
        for r in &due {
            let id: String = r.try_get(0).map_err(db_err)?;
            // The claim: only one node's UPDATE finds the row still unclaimed.
            let claimed = sqlx::query(
                "UPDATE webhook_deliveries SET claimed_by = $2, claimed_until = $3 \
                 WHERE id = $1 AND state = 'pending' AND next_attempt <= $4 AND claimed_until < $4",
            )
            .bind(&id)
            .bind(node)
            .bind(to_i64(now.saturating_add(lease)))
            .bind(to_i64(now))
            .execute(&self.write)
            .await
            .map_err(db_err)?;
            if claimed.rows_affected() != 1 {
                continue;
            }
            let row = sqlx::query(&format!(
                "SELECT {DELIVERY_COLUMNS}, h.url, h.secret FROM webhook_deliveries d JOIN webhooks h ON h.id = d.hook WHERE d.id = $1"
            ))
            .bind(&id)
            .fetch_optional(&self.write)
            .await
            .map_err(db_err)?;
            if let Some(row) = row {
                out.push(DueDelivery {
                    delivery: delivery_of(&row)?,
                    url: row.try_get(12).map_err(db_err)?,
                    secret: row.try_get(13).map_err(db_err)?,
                });
            }
        }
        Ok(out)
    }

    async fn record_attempt(
        &self,
        delivery: &str,
        attempt: &AttemptRecord,
        state: &str,
        next_attempt: u64,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        let finished = (state != "pending").then(|| to_i64(attempt.at));
        sqlx::query(
            "UPDATE webhook_deliveries SET state = $2, attempts = $3, next_attempt = $4, last_status = $5, last_error = $6, \
             last_attempt = $7, finished = $8, claimed_by = NULL, claimed_until = 0 WHERE id = $1",
        )
        .bind(delivery)
        .bind(state)
        .bind(to_i64(attempt.n))
        .bind(to_i64(next_attempt))
        .bind(attempt.status.map(i64::from))
        .bind(&attempt.error)
        .bind(to_i64(attempt.at))
        .bind(finished)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        sqlx::query(
            "INSERT INTO webhook_attempts (delivery, n, at, status, error, millis) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(delivery)
        .bind(to_i64(attempt.n))
        .bind(to_i64(attempt.at))
        .bind(attempt.status.map(i64::from))
        .bind(&attempt.error)
        .bind(to_i64(attempt.millis))
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)
    }

    async fn prune_webhooks(&self, before: u64) -> StoreResult<(u64, u64)> {
        let before = to_i64(before);
        let ended =
            "SELECT id FROM webhook_deliveries WHERE state <> 'pending' AND finished IS NOT NULL AND finished < $1";
        let mut tx = self.begin().await?;
        sqlx::query(&format!("DELETE FROM webhook_attempts WHERE delivery IN ({ended})"))
            .bind(before)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        let deliveries = sqlx::query(
            "DELETE FROM webhook_deliveries WHERE state <> 'pending' AND finished IS NOT NULL AND finished < $1",
        )
        .bind(before)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?
        .rows_affected();
        let events = sqlx::query("DELETE FROM webhook_outbox WHERE fanned_out = 1 AND created < $1")
            .bind(before)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?
            .rows_affected();
        tx.commit().await.map_err(db_err)?;
        Ok((events, deliveries))
    }

    async fn next_delivery_due(&self) -> StoreResult<Option<u64>> {
        let row = sqlx::query(
            "SELECT MIN(CASE WHEN claimed_until > next_attempt THEN claimed_until ELSE next_attempt END) \
             FROM webhook_deliveries WHERE state = 'pending'",
        )
        .fetch_one(&self.read)
        .await
        .map_err(db_err)?;
        let due: Option<i64> = row.try_get(0).map_err(db_err)?;
        Ok(due.map(|d| u64::try_from(d).unwrap_or(0)))
    }

    async fn redeliver(&self, id: &str) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE webhook_deliveries SET state = 'pending', next_attempt = $2, finished = NULL, claimed_until = 0 WHERE id = $1",
        )
        .bind(id)
        .bind(to_i64(now_millis()))
        .execute(&self.write)
        .await
        .map_err(db_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn replace_advisories(&self, db: &AdvisoryDb) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM advisories")
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        for a in &db.advisories {
            sqlx::query(
                "INSERT INTO advisories (id, crate, name, title, date, informational, patched, unaffected, url) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(&a.id)
            .bind(a.krate.to_ascii_lowercase())
            .bind(&a.krate)
            .bind(&a.title)
            .bind(&a.date)
            .bind(a.informational.clone())
            .bind(json(&a.patched)?)
            .bind(json(&a.unaffected)?)
            .bind(a.url.clone())
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        let imported = db.imported.map(|t| t.to_string());
        sqlx::query("DELETE FROM store_meta WHERE key = 'advisories.imported'")
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        if let Some(t) = imported {
            sqlx::query("INSERT INTO store_meta (key, value) VALUES ('advisories.imported', $1)")
                .bind(t)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        announce(&mut tx, self.postgres, &StoreEvent::Advisories).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(())
    }

    async fn advisories(&self) -> StoreResult<AdvisoryDb> {
        // One read transaction, so the rows and the import time belong together.
        let mut tx = self.read.begin().await.map_err(db_err)?;
        let rows = sqlx::query(
            "SELECT id, name, title, date, informational, patched, unaffected, url FROM advisories ORDER BY id",
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?;
        let imported = sqlx::query("SELECT value FROM store_meta WHERE key = 'advisories.imported'")
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        let imported = match imported {
            Some(r) => {
                let v: String = r.try_get(0).map_err(db_err)?;
                Some(v.parse::<u64>().map_err(|e| corrupt("advisories.imported", e))?)
            }
            None => None,
        };
        let mut advisories = Vec::with_capacity(rows.len());
        for r in &rows {
            let patched: String = r.try_get(5).map_err(db_err)?;
            let unaffected: String = r.try_get(6).map_err(db_err)?;
            advisories.push(AdvisoryRecord {
                id: r.try_get(0).map_err(db_err)?,
                krate: r.try_get(1).map_err(db_err)?,
                title: r.try_get(2).map_err(db_err)?,
                date: r.try_get(3).map_err(db_err)?,
                informational: r.try_get(4).map_err(db_err)?,
                patched: serde_json::from_str(&patched).map_err(|e| corrupt("advisory `patched`", e))?,
                unaffected: serde_json::from_str(&unaffected).map_err(|e| corrupt("advisory `unaffected`", e))?,
                url: r.try_get(7).map_err(db_err)?,
            });
        }
        Ok(AdvisoryDb { advisories, imported })
    }

    async fn referenced_blobs(&self) -> StoreResult<HashSet<String>> {
        let rows = sqlx::query("SELECT DISTINCT cksum FROM versions")
            .fetch_all(&self.read)
            .await
            .map_err(db_err)?;
        rows.iter().map(|r| r.try_get::<String, _>(0).map_err(db_err)).collect()
    }

    async fn get_user(&self, login: &str) -> StoreResult<Option<UserRecord>> {
        let row = sqlx::query("SELECT login, id, name, created FROM users WHERE login = $1")
            .bind(login)
            .fetch_optional(&self.read)
            .await
            .map_err(db_err)?;
        row.as_ref().map(user_of).transpose()
    }

    async fn create_user(&self, login: &str, name: Option<String>) -> StoreResult<Option<UserRecord>> {
        // Ids are allocated in the insert; two processes taking the same id is a unique
        // violation on `id`, retried. A taken login is the answer `None`.
        for _ in 0..8 {
            let mut tx = self.begin().await?;
            let inserted = sqlx::query(
                "INSERT INTO users (login, id, name, created) SELECT $1, COALESCE(MAX(id), 0) + 1, $2, $3 FROM users",
            )
            .bind(login)
            .bind(&name)
            .bind(to_i64(now_secs()))
            .execute(&mut *tx)
            .await
            .map_err(db_err);
            match inserted {
                Ok(_) => {
                    announce(&mut tx, self.postgres, &StoreEvent::Users).await?;
                    tx.commit().await.map_err(db_err)?;
                    return self.get_user(login).await;
                }
                Err(StoreError::Conflict(_)) => {
                    drop(tx);
                    if self.get_user(login).await?.is_some() {
                        return Ok(None);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Conflict(format!(
            "could not allocate an id for user `{login}`"
        )))
    }

    async fn users(&self) -> StoreResult<Vec<UserRecord>> {
        let rows = sqlx::query("SELECT login, id, name, created FROM users ORDER BY login")
            .fetch_all(&self.read)
            .await
            .map_err(db_err)?;
        rows.iter().map(user_of).collect()
    }

    async fn token_by_hash(&self, hash: &str) -> StoreResult<Option<TokenRecord>> {
        let row = sqlx::query(&format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = $1"))
            .bind(hash)
            .fetch_optional(&self.read)
            .await
            .map_err(db_err)?;
        row.as_ref().map(token_of).transpose()
    }

    async fn put_token(&self, token: &TokenRecord) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        insert_token(&mut tx, token).await?;
        announce(&mut tx, self.postgres, &StoreEvent::Tokens).await?;
        tx.commit().await.map_err(db_err)
    }

    async fn tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        let rows = sqlx::query(&format!("SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY created, id"))
            .fetch_all(&self.read)
            .await
            .map_err(db_err)?;
        rows.iter().map(token_of).collect()
    }

    async fn delete_token(&self, id: &str) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let done = sqlx::query("DELETE FROM tokens WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        announce(&mut tx, self.postgres, &StoreEvent::Tokens).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn snapshot(&self) -> StoreResult<Snapshot> {
        // One read transaction: one consistent view (SQLite's snapshot; PostgreSQL's
        // REPEATABLE READ).
        let mut tx = self.read.begin().await.map_err(db_err)?;
        if self.postgres {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        let registries = sqlx::query("SELECT spec FROM registries ORDER BY name")
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?
            .iter()
            .map(|r| {
                let spec: String = r.try_get(0).map_err(db_err)?;
                serde_json::from_str(&spec).map_err(|e| corrupt("registry definition", e))
            })
            .collect::<StoreResult<Vec<RegistrySpec>>>()?;
        let users = sqlx::query("SELECT login, id, name, created FROM users ORDER BY login")
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?
            .iter()
            .map(user_of)
            .collect::<StoreResult<Vec<_>>>()?;
        let tokens = sqlx::query(&format!("SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY created, id"))
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?
            .iter()
            .map(token_of)
            .collect::<StoreResult<Vec<_>>>()?;
        let crates = load_crates(&mut tx, None, None)
            .await?
            .into_iter()
            .map(|(r, _, c)| (r, c))
            .collect();
        tx.commit().await.map_err(db_err)?;
        Ok(Snapshot {
            registries,
            crates,
            users,
            tokens,
        })
    }

    async fn import(&self, snapshot: &Snapshot, marker: &str) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        // The marker first: a write, so the transaction holds the write lock from here on,
        // and a second import of the same marker stops at its unique key.
        if !claim_marker(&mut tx, marker).await? {
            return Ok(false);
        }
        for table in ["registries", "crates", "users", "tokens"] {
            let row = sqlx::query(&format!("SELECT COUNT(*) FROM {table}"))
                .fetch_one(&mut *tx)
                .await
                .map_err(db_err)?;
            if row.try_get::<i64, _>(0).map_err(db_err)? != 0 {
                return Err(StoreError::Conflict(format!(
                    "an import needs an empty store, and this one has {table}"
                )));
            }
        }
        for spec in &snapshot.registries {
            sqlx::query("INSERT INTO registries (name, spec) VALUES ($1, $2)")
                .bind(&spec.name)
                .bind(json(spec)?)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        for u in &snapshot.users {
            sqlx::query("INSERT INTO users (login, id, name, created) VALUES ($1, $2, $3, $4)")
                .bind(&u.login)
                .bind(i64::from(u.id))
                .bind(&u.name)
                .bind(to_i64(u.created))
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        for t in &snapshot.tokens {
            insert_token(&mut tx, t).await?;
        }
        for (registry, rec) in &snapshot.crates {
            let canonical = crate::index::canonical_name(&rec.name);
            insert_whole_crate(&mut tx, registry, &canonical, rec).await?;
        }
        announce(&mut tx, self.postgres, &StoreEvent::Lost).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(true)
    }

    async fn has_marker(&self, marker: &str) -> StoreResult<bool> {
        let row = sqlx::query("SELECT COUNT(*) FROM store_meta WHERE key = $1")
            .bind(marker)
            .fetch_one(&self.read)
            .await
            .map_err(db_err)?;
        Ok(to_u64(row.try_get(0).map_err(db_err)?) > 0)
    }

    async fn restore_crates(
        &self,
        registry: &str,
        crates: &[CrateRecord],
        users: &[UserRecord],
        marker: &str,
    ) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        // The marker first, as in `import`: it takes the write lock and stops a repeat.
        if !claim_marker(&mut tx, marker).await? {
            return Ok(false);
        }
        for u in users {
            let known = sqlx::query("SELECT COUNT(*) FROM users WHERE login = $1")
                .bind(&u.login)
                .fetch_one(&mut *tx)
                .await
                .map_err(db_err)?;
            if to_u64(known.try_get(0).map_err(db_err)?) > 0 {
                continue;
            }
            sqlx::query(
                "INSERT INTO users (login, id, name, created) SELECT $1, COALESCE(MAX(id), 0) + 1, $2, $3 FROM users",
            )
            .bind(&u.login)
            .bind(&u.name)
            .bind(to_i64(u.created))
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        for rec in crates {
            let canonical = crate::index::canonical_name(&rec.name);
            // The crate's row locked (PostgreSQL; SQLite's transaction already holds the one
            // write lock), so no publish commits a version between this check and the
            // replacement, then the check the caller made before the blobs went up is made
            // again here: a crate that is here keeps every version it has, with its bytes.
            let lock = if self.postgres { " FOR UPDATE" } else { "" };
            let old = sqlx::query(&format!(
                "SELECT revision FROM crates WHERE registry = $1 AND canonical = $2{lock}"
            ))
            .bind(registry)
            .bind(&canonical)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
            let old_revision = match old {
                Some(row) => to_u64(row.try_get(0).map_err(db_err)?),
                None => 0,
            };
            let have = sqlx::query("SELECT vers, cksum FROM versions WHERE registry = $1 AND canonical = $2")
                .bind(registry)
                .bind(&canonical)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?;
            for row in &have {
                let (vers, cksum): (String, String) =
                    (row.try_get(0).map_err(db_err)?, row.try_get(1).map_err(db_err)?);
                if !rec
                    .versions
                    .iter()
                    .any(|v| v.line.vers == vers && v.line.cksum == cksum)
                {
                    return Err(StoreError::Conflict(format!(
                        "`{}` {vers} is published here (perhaps while the bundle was being imported) and the bundle would drop or change it; published versions never change",
                        rec.name
                    )));
                }
            }
            for sql in [
                "DELETE FROM owners WHERE registry = $1 AND canonical = $2",
                "DELETE FROM versions WHERE registry = $1 AND canonical = $2",
                "DELETE FROM crates WHERE registry = $1 AND canonical = $2",
            ] {
                sqlx::query(sql)
                    .bind(registry)
                    .bind(&canonical)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
            }
            let rec = CrateRecord {
                revision: old_revision.max(rec.revision) + 1,
                ..rec.clone()
            };
            insert_whole_crate(&mut tx, registry, &canonical, &rec).await?;
            announce(
                &mut tx,
                self.postgres,
                &StoreEvent::Crate {
                    registry: registry.to_owned(),
                    name: rec.name.clone(),
                },
            )
            .await?;
        }
        if !users.is_empty() {
            announce(&mut tx, self.postgres, &StoreEvent::Users).await?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(true)
    }

    async fn counts(&self) -> StoreResult<Counts> {
        let mut n = [0u64; 6];
        for (i, table) in ["registries", "crates", "versions", "owners", "users", "tokens"]
            .iter()
            .enumerate()
        {
            let row = sqlx::query(&format!("SELECT COUNT(*) FROM {table}"))
                .fetch_one(&self.read)
                .await
                .map_err(db_err)?;
            n[i] = to_u64(row.try_get(0).map_err(db_err)?);
        }
        Ok(Counts {
            registries: n[0],
            crates: n[1],
            versions: n[2],
            owners: n[3],
            users: n[4],
            tokens: n[5],
        })
    }

    fn shared(&self) -> bool {
        self.shared
    }

    async fn watch(&self) -> StoreResult<Option<tokio::sync::mpsc::Receiver<StoreEvent>>> {
        let Some(url) = self.url.clone() else {
            return Ok(None);
        };
        let mut listener = listen(&url).await.map_err(|e| {
            StoreError::Io(format!(
                "cannot listen to {} for changes: {e}",
                crate::store::redact_url(&url)
            ))
        })?;
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(async move {
            loop {
                let event = match listener.try_recv().await {
                    Ok(Some(n)) => match serde_json::from_str::<StoreEvent>(n.payload()) {
                        Ok(e) => e,
                        Err(_) => StoreEvent::Lost,
                    },
                    // The connection dropped: what changed meanwhile is not known. Drop
                    // everything now, reconnect, and drop everything again once listening.
                    Ok(None) | Err(_) => {
                        tracing::warn!("the store's change feed was cut; dropping cached copies and reconnecting");
                        if tx.send(StoreEvent::Lost).await.is_err() {
                            return;
                        }
                        listener = loop {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            if tx.is_closed() {
                                return;
                            }
                            match listen(&url).await {
                                Ok(l) => break l,
                                Err(e) => {
                                    tracing::warn!(error = %e, "cannot listen to the store's changes yet; retrying")
                                }
                            }
                        };
                        tracing::info!("listening to the store's changes again");
                        StoreEvent::Lost
                    }
                };
                if tx.send(event).await.is_err() {
                    return;
                }
            }
        });
        Ok(Some(rx))
    }

    async fn check(&self) -> StoreResult<()> {
        // A write, so an unwritable database (read-only, disk full) is not ready.
        sqlx::query(
            "INSERT INTO store_meta (key, value) VALUES ('readyz', $1) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(now_secs().to_string())
        .execute(&self.write)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn close(&self) -> StoreResult<()> {
        self.read.close().await;
        self.write.close().await;
        Ok(())
    }
}

#[cfg(test)]
impl SqlMetadata {
    /// This handle counts as one of several nodes' ([`Metadata::shared`]).
    pub(crate) fn shared_for_tests(mut self) -> Self {
        self.shared = true;
        self
    }

    /// Runs one statement on the write pool (tests that need to act on the database itself).
    pub(crate) async fn execute_for_tests(&self, sql: &str) {
        sqlx::query(sql).execute(&self.write).await.unwrap();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[tokio::test]
    async fn sqlite_metadata_passes_the_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        let meta = SqlMetadata::open_sqlite(&dir.path().join("registry.db")).await.unwrap();
        crate::store::conformance::metadata(&meta).await;
    }

    #[tokio::test]
    async fn sqlite_keeps_the_advisory_database() {
        let dir = tempfile::tempdir().unwrap();
        let meta = SqlMetadata::open_sqlite(&dir.path().join("registry.db")).await.unwrap();
        crate::store::conformance::advisories(&meta).await;
    }

    #[tokio::test]
    async fn postgres_keeps_the_advisory_database() {
        let Some(url) = fresh_postgres("the advisory database").await else {
            return;
        };
        let meta = SqlMetadata::open_postgres(&url).await.unwrap();
        crate::store::conformance::advisories(&meta).await;
    }

    #[tokio::test]
    async fn sqlite_keeps_the_webhook_outbox_and_deliveries() {
        let dir = tempfile::tempdir().unwrap();
        let meta = SqlMetadata::open_sqlite(&dir.path().join("registry.db")).await.unwrap();
        crate::store::conformance::webhooks(&meta).await;
    }

    #[tokio::test]
    async fn postgres_keeps_the_webhook_outbox_and_deliveries() {
        let Some(url) = fresh_postgres("the webhook outbox").await else {
            return;
        };
        let meta = SqlMetadata::open_postgres(&url).await.unwrap();
        crate::store::conformance::webhooks(&meta).await;
    }

    /// A new, empty PostgreSQL database on the server `CARGOHOLD_TEST_POSTGRES_URL` names
    /// (`.ci/run` starts one), or `None` (the test prints that it was skipped).
    pub(crate) async fn fresh_postgres(test: &str) -> Option<String> {
        let Ok(url) = std::env::var("CARGOHOLD_TEST_POSTGRES_URL") else {
            // Straight to stderr, past the test harness's capture, so the skip is seen.
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!("skipped {test} on PostgreSQL: CARGOHOLD_TEST_POSTGRES_URL is not set (.ci/run starts one)\n")
                    .as_bytes(),
            );
            return None;
        };
        sqlx::any::install_default_drivers();
        let admin = AnyPoolOptions::new().max_connections(1).connect(&url).await.unwrap();
        let name = format!("cargohold_test_{:016x}", rand::random::<u64>());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        let base = url.rsplit_once('/').map_or(url.as_str(), |(b, _)| b);
        Some(format!("{base}/{name}"))
    }

    #[tokio::test]
    async fn postgres_metadata_passes_the_conformance_suite() {
        let Some(url) = fresh_postgres("the metadata conformance suite").await else {
            return;
        };
        let meta = SqlMetadata::open_postgres(&url).await.unwrap();
        crate::store::conformance::metadata(&meta).await;
        // Opening again finds the schema migrated.
        let again = SqlMetadata::open_postgres(&url).await.unwrap();
        assert!(again.get_crate("local", "my_crate").await.unwrap().is_some());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nodes_opening_a_fresh_postgres_at_once_migrate_it_once() {
        let Some(url) = fresh_postgres("the concurrent migration").await else {
            return;
        };
        // As several nodes starting at once: every open succeeds, the schema is there once.
        let opens = (0..4).map(|_| {
            let url = url.clone();
            tokio::spawn(async move { SqlMetadata::open_postgres(&url).await })
        });
        let opened: Vec<SqlMetadata> = futures_util::future::join_all(opens)
            .await
            .into_iter()
            .map(|r| r.unwrap().unwrap())
            .collect();
        let row = sqlx::query("SELECT COUNT(*), COUNT(DISTINCT version) FROM _sqlx_migrations")
            .fetch_one(&opened[0].read)
            .await
            .unwrap();
        let (all, distinct): (i64, i64) = (row.try_get(0).unwrap(), row.try_get(1).unwrap());
        assert_eq!(all, distinct, "each migration is recorded once");
        assert_eq!(to_u64(all), MIGRATOR.iter().count() as u64);
        for (i, m) in opened.iter().enumerate() {
            crate::store::conformance::publish_one(m, "local", &format!("node{i}"), "1.0.0").await;
        }
        assert_eq!(opened[3].crate_count("local").await.unwrap(), 4);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_postgres_handles_pass_the_shared_suite() {
        let Some(url) = fresh_postgres("the shared-database suite").await else {
            return;
        };
        let a = SqlMetadata::open_postgres(&url).await.unwrap();
        let b = SqlMetadata::open_postgres(&url).await.unwrap();
        crate::store::conformance::shared(&a, &b).await;
    }

    #[tokio::test]
    async fn a_sqlite_store_imports_into_postgres() {
        let Some(url) = fresh_postgres("the SQLite-to-PostgreSQL import").await else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let lite = SqlMetadata::open_sqlite(&dir.path().join("registry.db")).await.unwrap();
        crate::store::conformance::publish_one(&lite, "local", "Foo_Bar", "1.0.0").await;
        crate::store::conformance::publish_one(&lite, "local", "Foo_Bar", "2.0.0+b").await;
        lite.create_user("alice", Some("A".into())).await.unwrap();
        let pg = SqlMetadata::open_postgres(&url).await.unwrap();
        crate::store::conformance::import_into(&lite, &pg).await;
    }

    #[test]
    fn passwords_in_database_urls_are_redacted() {
        assert_eq!(
            crate::store::redact_url("postgres://u:secret@db:5432/x"),
            "postgres://u:***@db:5432/x"
        );
        assert_eq!(crate::store::redact_url("postgres://u@db/x"), "postgres://u@db/x");
        assert_eq!(crate::store::redact_url("sqlite:///a@b"), "sqlite:///a@b");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_handles_on_one_database_pass_the_shared_suite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.db");
        let a = SqlMetadata::open_sqlite(&path).await.unwrap();
        let b = SqlMetadata::open_sqlite(&path).await.unwrap();
        crate::store::conformance::shared(&a, &b).await;
    }

    /// A restore decided on a crate as it was (its versions kept) finds a version published since
    /// (review finding): it is refused in its transaction, and nothing changes.
    #[tokio::test]
    async fn a_restore_never_drops_a_version_published_after_its_check() {
        use crate::store::conformance::{publish_one, version};
        let dir = tempfile::tempdir().unwrap();
        let meta = SqlMetadata::open_sqlite(&dir.path().join("registry.db")).await.unwrap();
        meta.create_user("alice", None).await.unwrap();
        publish_one(&meta, "local", "foo", "1.0.0").await;
        let bundle = CrateRecord {
            name: "foo".into(),
            owners: vec!["alice".into()],
            description: None,
            keywords: vec![],
            versions: vec![version("foo", "1.0.0", "alice")],
            revision: 1,
        };
        // Published between the importer's check and its transaction.
        publish_one(&meta, "local", "foo", "1.1.0").await;
        let err = meta
            .restore_crates("local", std::slice::from_ref(&bundle), &[], "bundle:late")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("1.1.0"), "{err}");
        assert!(!meta.has_marker("bundle:late").await.unwrap());
        let after = meta.get_crate("local", "foo").await.unwrap().unwrap();
        assert_eq!(after.versions.len(), 2);
    }

    #[tokio::test]
    async fn restore_replaces_named_crates_once_and_adds_unknown_users() {
        use crate::store::conformance::{publish_one, version};
        let dir = tempfile::tempdir().unwrap();
        let meta = SqlMetadata::open_sqlite(&dir.path().join("registry.db")).await.unwrap();
        meta.create_user("alice", None).await.unwrap();
        publish_one(&meta, "local", "kept", "1.0.0").await;
        publish_one(&meta, "local", "Foo", "0.1.0").await;
        let before = meta.get_crate("local", "foo").await.unwrap().unwrap();
        let mut yanked = version("Foo", "0.2.0", "bob");
        yanked.line.yanked = true;
        let restored = CrateRecord {
            name: "Foo".into(),
            owners: vec!["bob".into(), "alice".into()],
            description: Some("restored".into()),
            keywords: vec![],
            versions: vec![version("Foo", "0.1.0", "alice"), yanked],
            revision: 1,
        };
        let bob = UserRecord {
            id: 1,
            login: "bob".into(),
            name: Some("Bob".into()),
            created: 5,
        };
        let alice_again = UserRecord {
            id: 9,
            login: "alice".into(),
            name: None,
            created: 5,
        };
        let users = [bob, alice_again];
        assert!(meta
            .restore_crates("local", std::slice::from_ref(&restored), &users, "bundle:x")
            .await
            .unwrap());
        assert!(meta.has_marker("bundle:x").await.unwrap());
        let after = meta.get_crate("local", "foo").await.unwrap().unwrap();
        assert_eq!((&after.owners, &after.versions), (&restored.owners, &restored.versions));
        assert!(after.revision > before.revision, "the revision moves forward");
        assert!(
            meta.get_crate("local", "kept").await.unwrap().is_some(),
            "crates not named stay"
        );
        let logins: Vec<(String, u32)> = meta
            .users()
            .await
            .unwrap()
            .into_iter()
            .map(|u| (u.login, u.id))
            .collect();
        assert_eq!(logins, [("alice".to_owned(), 1), ("bob".to_owned(), 2)]);
        // Once only.
        assert!(!meta.restore_crates("local", &[], &[], "bundle:x").await.unwrap());
        assert!(!meta.has_marker("bundle:y").await.unwrap());
    }

    #[tokio::test]
    async fn connections_commit_durably_in_wal_mode() {
        let dir = tempfile::tempdir().unwrap();
        let meta = SqlMetadata::open_sqlite(&dir.path().join("registry.db")).await.unwrap();
        for pool in [&meta.read, &meta.write] {
            let row = sqlx::query("PRAGMA synchronous").fetch_one(pool).await.unwrap();
            assert_eq!(row.try_get::<i64, _>(0).unwrap(), 2, "synchronous = FULL");
            let row = sqlx::query("PRAGMA journal_mode").fetch_one(pool).await.unwrap();
            assert_eq!(row.try_get::<String, _>(0).unwrap(), "wal");
        }
    }

    #[test]
    fn releases_drop_build_metadata_only() {
        assert_eq!(release_of("1.0.0+build5"), "1.0.0");
        assert_eq!(release_of("1.0.0-rc.1+b"), "1.0.0-rc.1");
        assert_eq!(release_of("2.3.4"), "2.3.4");
    }

    #[test]
    fn sqlite_urls_escape_what_a_url_would_misread() {
        assert_eq!(
            sqlite_url(Path::new("/data/a b?c#d/registry.db")),
            "sqlite:///data/a%20b%3Fc%23d/registry.db?mode=rwc"
        );
    }

    #[tokio::test]
    async fn data_dirs_with_odd_names_open_and_non_utf8_ones_are_refused_clearly() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let odd = dir.path().join("a b?c#d%20e");
        std::fs::create_dir_all(&odd).unwrap();
        let m = SqlMetadata::open_sqlite(&odd.join("registry.db")).await;
        assert!(m.is_ok(), "odd ascii: {:?}", m.err());
        assert!(odd.join("registry.db").exists(), "db not at the path asked for");
        let bad = dir.path().join(std::ffi::OsStr::from_bytes(b"data\xff"));
        std::fs::create_dir_all(&bad).unwrap();
        let r = SqlMetadata::open_sqlite(&bad.join("registry.db")).await;
        assert!(
            matches!(&r, Err(StoreError::Io(m)) if m.contains("not valid UTF-8")),
            "non-UTF-8: {:?}",
            r.err()
        );
    }
}
