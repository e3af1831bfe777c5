//! The plugin's key/value state, kept by the agent in its store so it survives restarts.
//! Values are bytes; [`get_json`] and [`set_json`] store serde values.

#[cfg(not(target_arch = "wasm32"))]
thread_local! {
    static MAP: std::cell::RefCell<std::collections::BTreeMap<String, Vec<u8>>> =
        const { std::cell::RefCell::new(std::collections::BTreeMap::new()) };
}

pub fn get(key: &str) -> Option<Vec<u8>> {
    #[cfg(target_arch = "wasm32")]
    {
        crate::bindings::phiwatch::detector::host::state_get(key)
    }
    #[cfg(not(target_arch = "wasm32"))]
    MAP.with(|m| m.borrow().get(key).cloned())
}

/// Fails when the plugin's quota would be exceeded; the previous value stays.
pub fn set(key: &str, value: &[u8]) -> Result<(), String> {
    #[cfg(target_arch = "wasm32")]
    {
        crate::bindings::phiwatch::detector::host::state_set(key, value)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        MAP.with(|m| m.borrow_mut().insert(key.to_owned(), value.to_vec()));
        Ok(())
    }
}

pub fn delete(key: &str) {
    #[cfg(target_arch = "wasm32")]
    crate::bindings::phiwatch::detector::host::state_delete(key);
    #[cfg(not(target_arch = "wasm32"))]
    MAP.with(|m| m.borrow_mut().remove(key));
}

/// A stored value, or `None` when absent or unreadable (a plugin upgrade may change shapes).
pub fn get_json<T: serde::de::DeserializeOwned>(key: &str) -> Option<T> {
    get(key).and_then(|b| serde_json::from_slice(&b).ok())
}

pub fn set_json<T: serde::Serialize>(key: &str, value: &T) -> Result<(), String> {
    let bytes = serde_json::to_vec(value).map_err(|e| e.to_string())?;
    set(key, &bytes)
}

/// Every key held (unit tests only: the agent's store is the real state).
#[cfg(not(target_arch = "wasm32"))]
pub fn keys_for_tests() -> Vec<String> {
    MAP.with(|m| m.borrow().keys().cloned().collect())
}

/// Forgets every key (unit tests only: the agent's store is the real state).
#[cfg(not(target_arch = "wasm32"))]
pub fn clear_for_tests() {
    MAP.with(|m| m.borrow_mut().clear());
}
