//! The store conformance suite (`pos_rules::testing`) on the encrypted
//! SQLite store.

mod sqlite {
    pos_rules::store_conformance_tests!(pos_test_support::store::Sqlite);
}
