-- Security advisories, version 3. Portable like 0001 and 0002 (TEXT, BIGINT, no booleans,
-- JSON as TEXT). The whole table is replaced by each import, in one transaction; when it was
-- imported is `store_meta` key `advisories.imported` (unix seconds).
CREATE TABLE advisories (
    id TEXT PRIMARY KEY,
    -- the crate name, lowercase (the lookup key) and as the advisory spells it
    crate TEXT NOT NULL,
    name TEXT NOT NULL,
    title TEXT NOT NULL,
    -- YYYY-MM-DD
    date TEXT NOT NULL,
    -- NULL: a vulnerability; else `unmaintained`, `unsound`, `notice` or another kind
    informational TEXT,
    -- JSON arrays of version requirements
    patched TEXT NOT NULL,
    unaffected TEXT NOT NULL,
    url TEXT
);
CREATE INDEX advisories_by_crate ON advisories (crate);
