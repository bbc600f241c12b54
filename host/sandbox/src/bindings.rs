//! Host bindings for world `ferry:step/step`, generated from `wit/`.

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "step",
    imports: {
        "ferry:step/process.run": async | trappable,
        default: trappable,
    },
    exports: { default: async },
});

pub use ferry::step::{log, outputs, process, types};
