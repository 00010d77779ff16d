//! Test suites that span crates; see `tests/`.
