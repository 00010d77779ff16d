//! One change to the Kotlin that UniFFI generates: the call status every
//! FFI call passes to Rust is taken from a small per-thread pool instead of
//! being allocated for each call (ADR 0016).
//!
//! UniFFI's Kotlin allocates a JNA `Structure` (the call status, and the
//! `RustBuffer` inside it) for every call into Rust, and a method call is
//! two calls (the handle's clone, then the method). Each of those
//! structures is native memory that JNA registers in a global map and with
//! its cleaner, and frees only after a garbage collection; between two
//! collections that map fills with thousands of entries. That bookkeeping,
//! not Rust, is most of what a small call costs from Kotlin.
//!
//! The replacement keeps UniFFI's contract: a status is reset to success
//! before it is handed to the next call, and a call made while another is
//! under way on the same thread (a callback into Kotlin that calls Rust)
//! takes a status of its own. Generation fails when the generated text is
//! not the one this replaces, so that a UniFFI upgrade cannot silently drop
//! the change.

/// The function UniFFI 0.32 generates, exactly.
const GENERATED: &str = "\
private inline fun <U, E: kotlin.Exception> uniffiRustCallWithError(errorHandler: UniffiRustCallStatusErrorHandler<E>, callback: (UniffiRustCallStatus) -> U): U {
    var status = UniffiRustCallStatus()
    val return_value = callback(status)
    uniffiCheckCallStatus(errorHandler, status)
    return return_value
}
";

/// What replaces it: the same function over [`POOL`].
const REPLACEMENT: &str = "\
private inline fun <U, E: kotlin.Exception> uniffiRustCallWithError(errorHandler: UniffiRustCallStatusErrorHandler<E>, callback: (UniffiRustCallStatus) -> U): U {
    val status = UniffiCallStatusPool.take()
    try {
        val return_value = callback(status)
        uniffiCheckCallStatus(errorHandler, status)
        return return_value
    } finally {
        UniffiCallStatusPool.give(status)
    }
}
";

/// The pool, appended after the replaced function (POS Core, not UniFFI).
const POOL: &str = "
// POS Core: the call statuses of this thread's calls into Rust, reused
// rather than allocated for each call (a JNA Structure is native memory
// that JNA tracks until a garbage collection). A status is reset to
// success when it comes back; a call made during another call on the same
// thread (from a callback) takes another one. ADR 0016.
internal object UniffiCallStatusPool {
    private const val KEPT = 8
    // A subclass, not the factory method Android has from API 26 only.
    private val free = object : ThreadLocal<ArrayList<UniffiRustCallStatus>>() {
        override fun initialValue() = ArrayList<UniffiRustCallStatus>(KEPT)
    }

    fun take(): UniffiRustCallStatus {
        val statuses = free.get()
        return if (statuses.isEmpty()) UniffiRustCallStatus() else statuses.removeAt(statuses.size - 1)
    }

    fun give(status: UniffiRustCallStatus) {
        status.code = UNIFFI_CALL_SUCCESS
        status.error_buf.capacity = 0
        status.error_buf.len = 0
        status.error_buf.data = null
        val statuses = free.get()
        if (statuses.size < KEPT) statuses.add(status)
    }
}
";

/// Marks a file this module already changed.
const MARK: &str = "internal object UniffiCallStatusPool {";

/// What [`patch`] found in a file.
#[derive(Debug, PartialEq, Eq)]
pub enum Patched {
    /// No call helper: not a UniFFI component file.
    NotComponent,
    /// Changed already (by an earlier run: not freshly generated).
    Already,
    /// The changed text.
    Changed(String),
}

/// Applies the change to one generated Kotlin file. An error when the file
/// declares the helper in another form than the one replaced.
pub fn patch(source: &str) -> Result<Patched, String> {
    if source.contains(MARK) {
        return Ok(Patched::Already);
    }
    if !source.contains("uniffiRustCallWithError(") {
        return Ok(Patched::NotComponent);
    }
    match source.matches(GENERATED).count() {
        1 => {
            let replaced = format!("{REPLACEMENT}{POOL}");
            Ok(Patched::Changed(source.replacen(GENERATED, &replaced, 1)))
        }
        n => Err(format!(
            "the generated uniffiRustCallWithError is not the one UniFFI 0.32 writes \
             ({n} exact copies): review bindings/uniffi-bindgen/src/kotlin.rs (ADR 0016)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generated() -> String {
        format!("package org.poscore\n\n{GENERATED}\nfun after() = Unit\n")
    }

    fn changed(source: &str) -> String {
        match patch(source).unwrap() {
            Patched::Changed(out) => out,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_helper_is_replaced_once_and_the_pool_added() {
        let out = changed(&generated());
        assert!(!out.contains(GENERATED));
        assert_eq!(out.matches("UniffiCallStatusPool.take()").count(), 1);
        assert_eq!(out.matches(MARK).count(), 1);
        assert!(out.starts_with("package org.poscore\n"));
        assert!(out.ends_with("fun after() = Unit\n"));
        // Android before API 26 has no ThreadLocal.withInitial.
        assert!(!out.contains("withInitial"));
    }

    #[test]
    fn a_changed_file_is_told_apart() {
        let once = changed(&generated());
        assert_eq!(patch(&once).unwrap(), Patched::Already);
    }

    #[test]
    fn a_file_without_the_helper_is_not_a_component_file() {
        assert_eq!(
            patch("package x\nfun f() = 1\n").unwrap(),
            Patched::NotComponent
        );
    }

    #[test]
    fn another_form_of_the_helper_fails_generation() {
        let changed = generated().replace(
            "var status = UniffiRustCallStatus()",
            "var status = UniffiRustCallStatus.allocate()",
        );
        let err = patch(&changed).unwrap_err();
        assert!(err.contains("ADR 0016"), "{err}");
        // Another signature is not taken for a file without the helper.
        let renamed = generated().replace(
            "fun <U, E: kotlin.Exception> uniffiRustCallWithError(",
            "fun <U, E: Throwable> uniffiRustCallWithError(",
        );
        assert!(patch(&renamed).is_err());
    }
}
