;; A component that exports `describe` only: no `configure`, no `detect`.
(component
  (core module $m
    (func (export "describe") (result i32) i32.const 0)
    (memory (export "memory") 1))
  (core instance $i (instantiate $m))
)
