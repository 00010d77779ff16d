//! `#[pos_ffi_macros::export]`: the one way `pos-ffi` exports functions,
//! objects and impls to Swift and Kotlin.
//!
//! It expands to `#[uniffi::export(...)]` (extra arguments are passed
//! through) and wraps the body of every `async fn` of the item in
//! `crate::runtime::in_runtime(async move { body }).await`, so the future is
//! polled inside the library's tokio runtime context; without it tokio
//! timers, sqlx and btleplug panic with "no reactor running" when a Kotlin
//! coroutine or a Swift task polls it. (`in_runtime` boxes the body: one
//! poll function per output type, not one per future as UniFFI's
//! `async_runtime = "tokio"` wrapper makes.) Foreign traits keep
//! `#[uniffi::export(foreign)]`.

use proc_macro::{Delimiter, Group, TokenStream, TokenTree};

#[proc_macro_attribute]
pub fn export(args: TokenStream, item: TokenStream) -> TokenStream {
    let extra = args.to_string();
    let attr = if extra.trim().is_empty() {
        "#[::uniffi::export]".to_owned()
    } else {
        format!("#[::uniffi::export({extra})]")
    };
    let item = wrap_async_bodies(item);
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

/// Rewrites `async fn f(..) -> T { body }` into
/// `async fn f(..) -> T { crate::runtime::in_runtime(async move { body }).await }`,
/// at any depth (an impl block's methods are inside its brace group). The
/// body is the first brace group after `async fn`: a signature has none.
fn wrap_async_bodies(ts: TokenStream) -> TokenStream {
    let mut out: Vec<TokenTree> = Vec::new();
    let mut prev_async = false;
    let mut in_async_fn = false;
    for tt in ts {
        match tt {
            TokenTree::Ident(ref i) if i.to_string() == "fn" && prev_async => {
                in_async_fn = true;
                prev_async = false;
                out.push(tt);
            }
            TokenTree::Ident(ref i) => {
                prev_async = i.to_string() == "async";
                out.push(tt);
            }
            TokenTree::Group(g) if in_async_fn && g.delimiter() == Delimiter::Brace => {
                in_async_fn = false;
                let wrapped: TokenStream = format!(
                    "crate::runtime::in_runtime(async move {}).await",
                    Group::new(Delimiter::Brace, g.stream())
                )
                .parse()
                .unwrap_or_else(|_| g.stream());
                let mut body = Group::new(Delimiter::Brace, wrapped);
                body.set_span(g.span());
                out.push(TokenTree::Group(body));
            }
            TokenTree::Group(g) if !in_async_fn => {
                let mut inner = Group::new(g.delimiter(), wrap_async_bodies(g.stream()));
                inner.set_span(g.span());
                out.push(TokenTree::Group(inner));
                prev_async = false;
            }
            other => {
                prev_async = false;
                out.push(other);
            }
        }
    }
    out.into_iter().collect()
}
