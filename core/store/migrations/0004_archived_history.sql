-- Schema 4 adds two record kinds, sealed inside journal rows and
-- snapshots like every other: `archive` (settled history taken out of the
-- engine's memory; the records stay in the journal) and `archived` (what
-- a snapshot keeps of it). Nothing in the file changes shape; the version
-- makes an older library refuse the store as newer (`NewerSchema`)
-- instead of failing on a record kind it cannot decode.
PRAGMA user_version = 4;
