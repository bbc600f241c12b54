//! Host bindings for world `ferry:step/step`, generated from `wit/`.

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "step",
    imports: {
        "ferry:step/process.run": async | trappable,
        "ferry:step/archive.write-tar": async | trappable,
        "ferry:step/archive.walk": async | trappable,
        default: trappable,
    },
    exports: { default: async },
});

pub use ferry::step::{archive, log, outputs, process, types};
