//! Host side of `ferry:step/outputs`.

use crate::bindings::outputs;
use crate::state::StepState;

/// Most bytes of outputs one step may set; they travel through expressions, not files.
const MAX_OUTPUT_BYTES: usize = 1 << 20;

impl outputs::Host for StepState {
    fn set(&mut self, name: String, value: String) -> wasmtime::Result<Result<(), String>> {
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            return Ok(Err(format!(
                "invalid output name `{name}`: use letters, digits, `-` and `_`"
            )));
        }
        let used: usize = self.outputs.iter().map(|(k, v)| k.len() + v.len()).sum();
        let replaced = self.outputs.get(&name).map_or(0, |v| name.len() + v.len());
        if used - replaced + name.len() + value.len() > MAX_OUTPUT_BYTES {
            return Ok(Err(format!(
                "outputs of a step are limited to {MAX_OUTPUT_BYTES} bytes in all; pass large data through files in the workspace"
            )));
        }
        self.outputs.insert(name, value);
        Ok(Ok(()))
    }
}

impl crate::bindings::types::Host for StepState {}
