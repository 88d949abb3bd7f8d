//! Small pieces several pages share: a time in the reader's own zone, and a copy button for the
//! one-time links and tokens an admin hands on.

use leptos::prelude::*;

/// `ms` (Unix) as the browser's locale writes a local date and time.
pub fn local_time(ms: u64) -> String {
    let date = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(ms as f64));
    String::from(date.to_locale_string("default", &wasm_bindgen::JsValue::UNDEFINED))
}

/// A button that puts `text` on the clipboard and says whether it did.
#[component]
pub fn CopyButton(text: String, #[prop(into)] what: String) -> impl IntoView {
    let done = RwSignal::new(None::<bool>);
    let copy = move |_| {
        let text = text.clone();
        leptos::task::spawn_local(async move {
            let Some(window) = web_sys::window() else { return };
            let written = wasm_bindgen_futures::JsFuture::from(window.navigator().clipboard().write_text(&text)).await;
            done.set(Some(written.is_ok()));
        });
    };
    view! {
        <button type="button" data-testid="copy" aria-label=format!("Copy the {what}") on:click=copy>"Copy"</button>
        {move || done.get().map(|ok| view! {
            <span class=if ok { "notice" } else { "error" } role="status">{if ok { " copied" } else { " not copied: select it and copy by hand" }}</span>
        })}
    }
}
