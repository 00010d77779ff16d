//! `#[pos_ffi_macros::export]`: the one way `pos-ffi` exports functions,
//! objects and impls to Swift and Kotlin.
//!
//! On an item that contains an `async fn` it expands to
//! `#[uniffi::export(async_runtime = "tokio", ...)]`, so every async export is
//! polled inside a tokio context; without it tokio timers, sqlx and btleplug
//! panic with "no reactor running" when a Kotlin coroutine or a Swift task
//! polls the future. (UniFFI refuses `async_runtime` on an item with no async
//! fn, hence the check.) Extra arguments are passed through to UniFFI.
//! Foreign traits keep `#[uniffi::export(with_foreign)]`.

use proc_macro::{TokenStream, TokenTree};

#[proc_macro_attribute]
pub fn export(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut parts: Vec<String> = Vec::new();
    if has_async_fn(item.clone()) {
        parts.push("async_runtime = \"tokio\"".to_owned());
    }
    let extra = args.to_string();
    if !extra.trim().is_empty() {
        parts.push(extra);
    }
    let attr = if parts.is_empty() {
        "#[::uniffi::export]".to_owned()
    } else {
        format!("#[::uniffi::export({})]", parts.join(", "))
    };
    let mut out: TokenStream = match attr.parse() {
        Ok(ts) => ts,
        Err(e) => {
            return format!("compile_error!({:?});", e.to_string())
                .parse()
                .unwrap_or_default()
        }
    };
    out.extend(item);
    out
}

/// Whether the tokens contain `async fn` at any depth (an impl block's methods
/// are inside its brace group).
fn has_async_fn(ts: TokenStream) -> bool {
    let mut prev_async = false;
    for tt in ts {
        match tt {
            TokenTree::Ident(ref i) if i.to_string() == "fn" && prev_async => return true,
            TokenTree::Ident(ref i) => prev_async = i.to_string() == "async",
            TokenTree::Group(g) => {
                if has_async_fn(g.stream()) {
                    return true;
                }
                prev_async = false;
            }
            _ => prev_async = false,
        }
    }
    false
}
