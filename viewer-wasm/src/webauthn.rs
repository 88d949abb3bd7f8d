//! Passkey ceremonies in the browser. The relay's options are WebAuthn JSON (base64url fields);
//! the browser's own JSON helpers turn them into credentials and back, so no byte juggling here.

use wasm_bindgen::prelude::*;

#[wasm_bindgen(inline_js = r#"
export async function createPasskey(optionsJson) {
  const options = JSON.parse(optionsJson);
  const publicKey = PublicKeyCredential.parseCreationOptionsFromJSON(options.publicKey);
  const credential = await navigator.credentials.create({ publicKey });
  return JSON.stringify(credential.toJSON());
}
export async function getPasskey(optionsJson) {
  const options = JSON.parse(optionsJson);
  const publicKey = PublicKeyCredential.parseRequestOptionsFromJSON(options.publicKey);
  const credential = await navigator.credentials.get({ publicKey });
  return JSON.stringify(credential.toJSON());
}
"#)]
extern "C" {
    #[wasm_bindgen(catch, js_name = createPasskey)]
    async fn create_passkey(options_json: &str) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(catch, js_name = getPasskey)]
    async fn get_passkey(options_json: &str) -> Result<JsValue, JsValue>;
}

fn js_error(e: JsValue) -> String {
    js_sys::Reflect::get(&e, &JsValue::from_str("message"))
        .ok()
        .and_then(|m| m.as_string())
        .unwrap_or_else(|| format!("{e:?}"))
}

/// Registers a new passkey with the relay's creation options; returns the credential JSON.
pub async fn create(options: &serde_json::Value) -> Result<serde_json::Value, String> {
    let json =
        create_passkey(&options.to_string()).await.map_err(|e| format!("passkey creation failed: {}", js_error(e)))?;
    serde_json::from_str(&json.as_string().unwrap_or_default()).map_err(|e| e.to_string())
}

/// Asserts an existing passkey against the relay's request options.
pub async fn get(options: &serde_json::Value) -> Result<serde_json::Value, String> {
    let json = get_passkey(&options.to_string()).await.map_err(|e| format!("passkey check failed: {}", js_error(e)))?;
    serde_json::from_str(&json.as_string().unwrap_or_default()).map_err(|e| e.to_string())
}
