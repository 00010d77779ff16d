-- Schema 1: the store header (`meta`, one row) and the append-only journal.
CREATE TABLE meta (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    store_id    BLOB    NOT NULL,
    key_id      BLOB    NOT NULL,
    kek_id      TEXT    NOT NULL,
    wrapped_key BLOB    NOT NULL,
    canary      BLOB    NOT NULL,
    head_seq    INTEGER NOT NULL,
    head_mac    BLOB    NOT NULL,
    anchored    INTEGER NOT NULL,
    meta_mac    BLOB    NOT NULL
) STRICT;
CREATE TABLE journal (
    seq         INTEGER PRIMARY KEY,
    kind        TEXT    NOT NULL,
    record_key  BLOB    NOT NULL,
    format      INTEGER NOT NULL,
    key_id      BLOB    NOT NULL,
    nonce       BLOB    NOT NULL,
    ciphertext  BLOB    NOT NULL,
    mac         BLOB    NOT NULL
) STRICT;
PRAGMA user_version = 1;
