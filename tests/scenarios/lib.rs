//! The scenario suite lives in `run.rs` (a test with its own harness) and the JSON files beside it; see `docs/scenarios.md`.
