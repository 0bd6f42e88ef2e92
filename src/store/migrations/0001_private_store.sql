-- The private store, version 1. Portable: the same statements create it in SQLite and in
-- PostgreSQL (TEXT, BIGINT, composite keys; no autoincrement, no booleans, JSON as TEXT).

-- Registry definitions (a `RegistrySpec` as JSON).
CREATE TABLE registries (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL
);

-- One row per crate; `revision` is bumped by every change and compared on write.
CREATE TABLE crates (
    registry TEXT NOT NULL,
    canonical TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT,
    keywords TEXT NOT NULL,
    revision BIGINT NOT NULL,
    PRIMARY KEY (registry, canonical)
);

-- One row per version. `release` is the version without build metadata: unique per crate.
CREATE TABLE versions (
    registry TEXT NOT NULL,
    canonical TEXT NOT NULL,
    release TEXT NOT NULL,
    seq BIGINT NOT NULL,
    vers TEXT NOT NULL,
    cksum TEXT NOT NULL,
    yanked BIGINT NOT NULL,
    line TEXT NOT NULL,
    published_by TEXT NOT NULL,
    PRIMARY KEY (registry, canonical, release),
    FOREIGN KEY (registry, canonical) REFERENCES crates (registry, canonical)
);
CREATE INDEX versions_by_cksum ON versions (cksum);

CREATE TABLE owners (
    registry TEXT NOT NULL,
    canonical TEXT NOT NULL,
    login TEXT NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (registry, canonical, login),
    FOREIGN KEY (registry, canonical) REFERENCES crates (registry, canonical)
);
CREATE INDEX owners_by_login ON owners (login);

CREATE TABLE users (
    login TEXT PRIMARY KEY,
    id BIGINT NOT NULL UNIQUE,
    name TEXT,
    created BIGINT NOT NULL
);

-- Only the SHA-256 of a token's secret is kept.
CREATE TABLE tokens (
    hash TEXT PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    login TEXT NOT NULL,
    name TEXT NOT NULL,
    scopes TEXT NOT NULL,
    registries TEXT,
    expires BIGINT,
    created BIGINT NOT NULL
);

-- Facts about the store itself (e.g. which migration from another backend was imported).
CREATE TABLE store_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
