//! Plugin configuration: parsing and the optional validation hook.

use serde::de::DeserializeOwned;

/// Optional validation of a plugin's configuration type, run once at `init`.
///
/// Implementing it is optional: [`export!`](crate::export) and [`parse_config!`](crate::parse_config)
/// call [`validate`](Config::validate) when the configuration type implements this trait and
/// skip validation when it does not. An error refuses the plugin at load with
/// `invalid config: <message>`.
///
/// ```
/// #[derive(serde::Deserialize, Default)]
/// #[serde(default, deny_unknown_fields)]
/// struct Config {
///     prefix: String,
/// }
///
/// impl fanout_sdk::Config for Config {
///     fn validate(&self) -> Result<(), String> {
///         if self.prefix.len() > 100 {
///             return Err(format!("prefix is {} characters long, at most 100 are allowed", self.prefix.len()));
///         }
///         Ok(())
///     }
/// }
///
/// let err = fanout_sdk::parse_config!(Config, &format!(r#"{{"prefix":"{}"}}"#, "a".repeat(101)));
/// assert_eq!(err.err().unwrap(), "invalid config: prefix is 101 characters long, at most 100 are allowed");
/// ```
pub trait Config {
    /// Checks the parsed configuration. The default accepts everything.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Parses a plugin configuration exactly as `init` does, for use in tests.
///
/// `parse_config!(Type, json)` deserializes the `&str` `json` into `Type` with `serde_json`,
/// then, if `Type` implements [`Config`], calls [`Config::validate`]. It evaluates to
/// `Result<Type, String>`; both kinds of error start with `invalid config: `, and parse errors
/// include serde_json's line and column.
///
/// It is a macro rather than a function so that implementing [`Config`] stays optional.
///
/// ```
/// #[derive(serde::Deserialize, Debug, PartialEq)]
/// #[serde(deny_unknown_fields)]
/// struct Config {
///     prefix: String,
/// }
///
/// let config = fanout_sdk::parse_config!(Config, r#"{"prefix":"k8s-"}"#).unwrap();
/// assert_eq!(config, Config { prefix: "k8s-".into() });
///
/// let err = fanout_sdk::parse_config!(Config, r#"{"prefix":"k8s-","extra":1}"#).unwrap_err();
/// assert!(err.starts_with("invalid config: unknown field `extra`"), "{err}");
/// assert!(err.ends_with("at line 1 column 24"), "{err}");
/// ```
#[macro_export]
macro_rules! parse_config {
    ($config:ty, $json:expr $(,)?) => {{
        #[allow(unused_imports)]
        use $crate::__private::{ValidateNothing as _, ValidateViaConfig as _};
        match $crate::__private::deserialize_config::<$config>($json) {
            ::core::result::Result::Ok(config) => {
                match (&$crate::__private::ValidateProbe(&config)).__fanout_validate() {
                    ::core::result::Result::Ok(()) => ::core::result::Result::Ok(config),
                    ::core::result::Result::Err(message) => {
                        ::core::result::Result::Err(::std::format!("invalid config: {message}"))
                    }
                }
            }
            ::core::result::Result::Err(message) => ::core::result::Result::Err(message),
        }
    }};
}

/// Deserializes a configuration document, prefixing errors with `invalid config: `.
#[doc(hidden)]
pub fn deserialize_config<T: DeserializeOwned>(json: &str) -> Result<T, String> {
    serde_json::from_str(json).map_err(|e| format!("invalid config: {e}"))
}

// Autoref specialisation: `(&ValidateProbe(&c)).__fanout_validate()` resolves to
// `ValidateViaConfig` when `T: Config` (method found without adding a reference) and to
// `ValidateNothing` otherwise (found after auto-referencing once more).

/// Wraps a parsed configuration to pick the right validation. Used by [`parse_config!`].
#[doc(hidden)]
pub struct ValidateProbe<'a, T>(pub &'a T);

/// Validation when the configuration type implements [`Config`].
#[doc(hidden)]
pub trait ValidateViaConfig {
    fn __fanout_validate(&self) -> Result<(), String>;
}

impl<T: Config> ValidateViaConfig for ValidateProbe<'_, T> {
    fn __fanout_validate(&self) -> Result<(), String> {
        self.0.validate()
    }
}

/// No validation when the configuration type does not implement [`Config`].
#[doc(hidden)]
pub trait ValidateNothing {
    fn __fanout_validate(&self) -> Result<(), String>;
}

impl<T> ValidateNothing for &ValidateProbe<'_, T> {
    fn __fanout_validate(&self) -> Result<(), String> {
        Ok(())
    }
}

/// A short, single-line excerpt of a configuration document for error messages.
pub(crate) fn snippet(text: &str) -> String {
    const MAX: usize = 100;
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.chars().count() <= MAX {
        one_line
    } else {
        let mut short: String = one_line.chars().take(MAX).collect();
        short.push('…');
        short
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Deserialize, Default, Debug, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Plain {
        prefix: String,
    }

    #[derive(Deserialize, Default, Debug, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Checked {
        prefix: String,
    }

    impl crate::Config for Checked {
        fn validate(&self) -> Result<(), String> {
            if self.prefix.contains(' ') {
                Err(format!("prefix {:?} contains a space", self.prefix))
            } else {
                Ok(())
            }
        }
    }

    #[test]
    fn parses_without_validation_hook() {
        let c: Plain = crate::parse_config!(Plain, r#"{"prefix":"a b"}"#).unwrap();
        assert_eq!(c.prefix, "a b");
        let c: Plain = crate::parse_config!(Plain, "{}").unwrap();
        assert_eq!(c, Plain::default());
    }

    #[test]
    fn runs_validation_hook() {
        let c: Checked = crate::parse_config!(Checked, r#"{"prefix":"ab"}"#).unwrap();
        assert_eq!(c.prefix, "ab");
        let err = crate::parse_config!(Checked, r#"{"prefix":"a b"}"#).unwrap_err();
        assert_eq!(err, r#"invalid config: prefix "a b" contains a space"#);
    }

    #[test]
    fn parse_errors_have_line_and_column() {
        let err = crate::parse_config!(Plain, "{\n  \"prefix\": 3\n}").unwrap_err();
        assert_eq!(
            err,
            "invalid config: invalid type: integer `3`, expected a string at line 2 column 13"
        );
        let err = crate::parse_config!(Plain, r#"{"prefx":""}"#).unwrap_err();
        assert!(
            err.starts_with("invalid config: unknown field `prefx`"),
            "{err}"
        );
        assert!(err.ends_with("at line 1 column 8"), "{err}");
    }
}
