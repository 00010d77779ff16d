//! UniFFI layer: thin wrappers over pos-core.
uniffi::setup_scaffolding!();
