//! Converts temperatures between scales.

/// A temperature scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    Celsius,
    Fahrenheit,
    Kelvin,
}

/// Converts `value` from one scale to another.
pub fn convert(value: f64, from: Scale, to: Scale) -> f64 {
    let celsius = match from {
        Scale::Celsius => value,
        Scale::Fahrenheit => (value - 32.0) * 5.0 / 9.0,
        Scale::Kelvin => value - 273.15,
    };
    match to {
        Scale::Celsius => celsius,
        Scale::Fahrenheit => celsius * 9.0 / 5.0 + 32.0,
        Scale::Kelvin => celsius + 273.15,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn water_boils_at_212_fahrenheit() {
        assert!((convert(100.0, Scale::Celsius, Scale::Fahrenheit) - 212.0).abs() < 1e-9);
    }

    #[test]
    fn absolute_zero_is_zero_kelvin() {
        assert!(convert(-273.15, Scale::Celsius, Scale::Kelvin).abs() < 1e-9);
    }

    #[test]
    fn round_trips() {
        let f = convert(37.0, Scale::Celsius, Scale::Fahrenheit);
        assert!((convert(f, Scale::Fahrenheit, Scale::Celsius) - 37.0).abs() < 1e-9);
    }
}
