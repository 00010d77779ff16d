-- Schema 2 adds a record kind (`session`), stores sealed card data as
-- base64 inside the sealed JSON (schema-1 records stay as they are and are
-- read as before: each record carries its own `format`), and adds the
-- snapshot table.
CREATE TABLE snapshot (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    upto_seq    INTEGER NOT NULL,
    upto_mac    BLOB    NOT NULL,
    format      INTEGER NOT NULL,
    key_id      BLOB    NOT NULL,
    nonce       BLOB    NOT NULL,
    ciphertext  BLOB    NOT NULL
) STRICT;
PRAGMA user_version = 2;
