//! ferry's built-in steps as WebAssembly components, embedded in the binary.
//!
//! `build.rs` compiles every crate under `plugins/` for `wasm32-wasip2`; this crate exposes
//! the built-in ones by name and the test fixtures by path.

include!(concat!(env!("OUT_DIR"), "/guests.rs"));

/// Built-in steps by the name used in `uses:`.
pub const BUILTINS: &[(&str, &[u8])] = &[
    ("shell", SHELL),
    ("lint", LINT),
    ("test", TEST),
    ("checkout", CHECKOUT),
    ("image", IMAGE),
    ("deploy", DEPLOY),
    ("verify", VERIFY),
    ("python", PYTHON),
    ("node", NODE),
    ("rust", RUST),
];

/// The bytes of the built-in step called `name`, if there is one.
pub fn builtin(name: &str) -> Option<&'static [u8]> {
    BUILTINS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, bytes)| *bytes)
}
