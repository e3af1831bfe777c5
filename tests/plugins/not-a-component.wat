;; A core module, not a component: what a plugin built for wasm32-unknown-unknown without
;; wit-bindgen looks like.
(module
  (func (export "detect") (result i32) i32.const 0))
