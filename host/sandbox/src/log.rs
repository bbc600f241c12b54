//! Host side of `ferry:step/log`.

use crate::bindings::log::{self, Annotation, Level as WitLevel};
use crate::state::StepState;
use ferry_engine::{Annotation as EngineAnnotation, Level};

pub fn level(level: WitLevel) -> Level {
    match level {
        WitLevel::Debug => Level::Debug,
        WitLevel::Info => Level::Info,
        WitLevel::Warn => Level::Warn,
        WitLevel::Error => Level::Error,
    }
}

impl log::Host for StepState {
    fn write(&mut self, level: WitLevel, message: String) -> wasmtime::Result<()> {
        let level = self::level(level);
        for line in message.lines() {
            self.log.line(level, line);
        }
        if message.is_empty() {
            self.log.line(level, "");
        }
        Ok(())
    }

    fn group_start(&mut self, title: String) -> wasmtime::Result<()> {
        self.open_groups += 1;
        self.log.group_start(&title);
        Ok(())
    }

    fn group_end(&mut self) -> wasmtime::Result<()> {
        if self.open_groups > 0 {
            self.open_groups -= 1;
            self.log.group_end();
        }
        Ok(())
    }

    fn annotate(&mut self, annotation: Annotation) -> wasmtime::Result<()> {
        let location = annotation.location;
        self.log.annotate(EngineAnnotation {
            level: level(annotation.level),
            message: annotation.message,
            rule: annotation.rule,
            file: location.as_ref().map(|l| l.file.clone()),
            line: location.as_ref().and_then(|l| l.line),
            column: location.as_ref().and_then(|l| l.column),
        });
        Ok(())
    }
}
