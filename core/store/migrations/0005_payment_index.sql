-- Schema 5 indexes the journal by `record_key` (the keyed hash of a
-- record's kind and id), so that the store answers whether a payment id
-- was ever taken without the engine keeping archived ids in memory. The
-- engine's snapshot no longer carries those ids: snapshots written under
-- schema 4 are not used, and the first open replays the journal once.
CREATE INDEX journal_by_record_key ON journal (record_key);
PRAGMA user_version = 5;
