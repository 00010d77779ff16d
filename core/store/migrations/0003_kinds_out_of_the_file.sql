-- Schema 3 takes the record kinds out of the file: the `kind` column of
-- every row becomes empty (a record's kind is inside its sealed body,
-- and its keyed `record_key` commits to it). Rows written before keep
-- their kind in their MAC and associated data, so the kind of a row of
-- format 1 or 2 is the one of [`KINDS`] its MAC verifies with. The file
-- is then rebuilt (`VACUUM`, see [`migrate`]), so the old values do not
-- stay in free space.
UPDATE journal SET kind = '' WHERE kind <> '';
PRAGMA user_version = 3;
