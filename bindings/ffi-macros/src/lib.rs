//! `#[pos_ffi_macros::export]`: the one way `pos-ffi` exports functions,
//! objects and impls to Swift and Kotlin.
//!
//! It expands to `#[uniffi::export(async_runtime = "tokio", ...)]`, so every
//! async export is polled inside a tokio context. Without it sqlx, tokio timers
//! and btleplug panic with "no reactor running" when a Kotlin coroutine or a
//! Swift task polls the future. Extra arguments (for example `name = "x"`) are
//! passed through to UniFFI. Foreign traits keep `#[uniffi::export(with_foreign)]`,
//! which takes no runtime.

use proc_macro::TokenStream;

#[proc_macro_attribute]
pub fn export(args: TokenStream, item: TokenStream) -> TokenStream {
    let extra = args.to_string();
    let attr = if extra.trim().is_empty() {
        "#[::uniffi::export(async_runtime = \"tokio\")]".to_owned()
    } else {
        format!("#[::uniffi::export(async_runtime = \"tokio\", {extra})]")
    };
    let mut out: TokenStream = match attr.parse() {
        Ok(ts) => ts,
        Err(e) => {
            return format!("compile_error!({:?});", e.to_string()).parse().unwrap_or_default();
        }
    };
    out.extend(item);
    out
}
