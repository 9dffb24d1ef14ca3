//! Typed access to the settings `configure` receives.

use std::fmt::Display;
use std::str::FromStr;

use crate::PluginError;

/// The plugin's settings (`settings = { … }` of its `[[plugins]]` stanza), as passed to
/// `configure`. Every value arrives as a string; the getters parse it and turn a bad value
/// into a [`codes::BAD_SETTING`](crate::codes::BAD_SETTING) error that names the key and the
/// value, which the agent reports when it loads the plugin.
///
/// ```
/// # use hyperlet_plugin_sdk::Settings;
/// let settings = Settings::from_pairs([("service_down_time", "90")]);
/// assert_eq!(settings.get_f64("service_down_time", 60.0).unwrap(), 90.0);
/// assert_eq!(settings.get_f64("other", 60.0).unwrap(), 60.0);
///
/// let bad = Settings::from_pairs([("service_down_time", "soon")]);
/// let err = bad.get_f64("service_down_time", 60.0).unwrap_err();
/// assert_eq!(err.code, "bad-setting");
/// assert_eq!(err.message, r#"Setting service_down_time = "soon" is not a number"#);
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Settings {
    pairs: Vec<(String, String)>,
}

impl Settings {
    /// Settings from the `(key, value)` pairs of `configure`. When a key occurs twice the last
    /// value wins.
    pub fn new(pairs: Vec<(String, String)>) -> Self {
        Self { pairs }
    }

    /// Settings from anything yielding `(key, value)` pairs (handy in tests).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self::new(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    /// All settings in the order received.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of settings.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether there are no settings.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The raw value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `key`, or `default` when it is not set.
    pub fn get_str<'a>(&'a self, key: &str, default: &'a str) -> &'a str {
        self.get(key).unwrap_or(default)
    }

    /// The value of `key`.
    ///
    /// # Errors
    ///
    /// `bad-setting` when the key is not set.
    pub fn require(&self, key: &str) -> Result<&str, PluginError> {
        self.get(key)
            .ok_or_else(|| PluginError::bad_setting(format!("Setting {key} is required")))
    }

    /// `key` as a finite number, or `default` when it is not set.
    ///
    /// # Errors
    ///
    /// `bad-setting` when the value is not a finite number.
    pub fn get_f64(&self, key: &str, default: f64) -> Result<f64, PluginError> {
        match self.get(key) {
            None => Ok(default),
            Some(raw) => match raw.trim().parse::<f64>() {
                Ok(value) if value.is_finite() => Ok(value),
                _ => Err(bad_value(key, raw, "is not a number")),
            },
        }
    }

    /// `key` as an unsigned integer, or `default` when it is not set.
    ///
    /// # Errors
    ///
    /// `bad-setting` when the value is not an integer ≥ 0 that fits 64 bits.
    pub fn get_u64(&self, key: &str, default: u64) -> Result<u64, PluginError> {
        match self.get(key) {
            None => Ok(default),
            Some(raw) => raw
                .trim()
                .parse::<u64>()
                .map_err(|_| bad_value(key, raw, "is not a whole number ≥ 0")),
        }
    }

    /// `key` as a signed integer, or `default` when it is not set.
    ///
    /// # Errors
    ///
    /// `bad-setting` when the value is not an integer that fits 64 bits.
    pub fn get_i64(&self, key: &str, default: i64) -> Result<i64, PluginError> {
        match self.get(key) {
            None => Ok(default),
            Some(raw) => raw
                .trim()
                .parse::<i64>()
                .map_err(|_| bad_value(key, raw, "is not a whole number")),
        }
    }

    /// `key` as a boolean (`true`/`false`, `yes`/`no`, `on`/`off`, `1`/`0`, any case), or
    /// `default` when it is not set.
    ///
    /// # Errors
    ///
    /// `bad-setting` for any other value.
    pub fn get_bool(&self, key: &str, default: bool) -> Result<bool, PluginError> {
        match self.get(key) {
            None => Ok(default),
            Some(raw) => match raw.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" | "1" => Ok(true),
                "false" | "no" | "off" | "0" => Ok(false),
                _ => Err(bad_value(key, raw, "is not a boolean (true or false)")),
            },
        }
    }

    /// `key` as a comma-separated list (items trimmed, empty items dropped); empty when the key
    /// is not set.
    pub fn get_list(&self, key: &str) -> Vec<&str> {
        self.get(key)
            .map(|raw| {
                raw.split(',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `key` parsed with [`FromStr`], or `default` when it is not set.
    ///
    /// # Errors
    ///
    /// `bad-setting` carrying the parser's message when parsing fails.
    pub fn get_parsed<T>(&self, key: &str, default: T) -> Result<T, PluginError>
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.get(key) {
            None => Ok(default),
            Some(raw) => raw
                .trim()
                .parse::<T>()
                .map_err(|err| bad_value(key, raw, &err.to_string())),
        }
    }

    /// `key` as one of `choices` (exact match), or `default` when it is not set.
    ///
    /// # Errors
    ///
    /// `bad-setting` naming the choices for any other value.
    pub fn get_choice<'a>(
        &'a self,
        key: &str,
        choices: &[&str],
        default: &'a str,
    ) -> Result<&'a str, PluginError> {
        match self.get(key) {
            None => Ok(default),
            Some(raw) if choices.contains(&raw) => Ok(raw),
            Some(raw) => Err(bad_value(
                key,
                raw,
                &format!("is not one of {}", choices.join(", ")),
            )),
        }
    }

    /// Fails on any setting whose key is not in `known`, so a misspelt key is reported at load
    /// time instead of being silently ignored.
    ///
    /// # Errors
    ///
    /// `bad-setting` naming the first unknown key and the known ones.
    pub fn check_known(&self, known: &[&str]) -> Result<(), PluginError> {
        match self
            .pairs
            .iter()
            .find(|(k, _)| !known.contains(&k.as_str()))
        {
            None => Ok(()),
            Some((key, _)) if known.is_empty() => Err(PluginError::bad_setting(format!(
                "Unknown setting {key}: this plugin takes no settings"
            ))),
            Some((key, _)) => Err(PluginError::bad_setting(format!(
                "Unknown setting {key} (known: {})",
                known.join(", ")
            ))),
        }
    }
}

impl From<Vec<(String, String)>> for Settings {
    fn from(pairs: Vec<(String, String)>) -> Self {
        Self::new(pairs)
    }
}

fn bad_value(key: &str, raw: &str, what: &str) -> PluginError {
    PluginError::bad_setting(format!("Setting {key} = {raw:?} {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getters() {
        let s = Settings::from_pairs([
            ("n", " 42 "),
            ("f", "1.5"),
            ("b", "Yes"),
            ("list", "a, b,,c "),
            ("n", "43"),
            ("mode", "big"),
        ]);
        assert_eq!(s.get_u64("n", 0).unwrap(), 43, "the last value wins");
        assert_eq!(s.get_i64("missing", -1).unwrap(), -1);
        assert_eq!(s.get_f64("f", 0.0).unwrap(), 1.5);
        assert!(s.get_bool("b", false).unwrap());
        assert_eq!(s.get_list("list"), ["a", "b", "c"]);
        assert!(s.get_list("missing").is_empty());
        assert_eq!(s.get_str("missing", "dflt"), "dflt");
        assert_eq!(
            s.get_choice("mode", &["big", "count"], "count").unwrap(),
            "big"
        );
        assert_eq!(s.get_parsed::<u8>("n", 0).unwrap(), 43);
    }

    #[test]
    fn bad_values_name_key_and_value() {
        let s = Settings::from_pairs([("f", "inf"), ("n", "-1"), ("b", "maybe"), ("mode", "x")]);
        let msg = |e: PluginError| {
            assert_eq!(e.code, "bad-setting");
            e.message
        };
        assert_eq!(
            msg(s.get_f64("f", 0.0).unwrap_err()),
            r#"Setting f = "inf" is not a number"#
        );
        assert_eq!(
            msg(s.get_u64("n", 0).unwrap_err()),
            r#"Setting n = "-1" is not a whole number ≥ 0"#
        );
        assert_eq!(
            msg(s.get_bool("b", false).unwrap_err()),
            r#"Setting b = "maybe" is not a boolean (true or false)"#
        );
        assert_eq!(
            msg(s.get_choice("mode", &["big", "count"], "big").unwrap_err()),
            r#"Setting mode = "x" is not one of big, count"#
        );
        assert_eq!(
            msg(s.require("nope").unwrap_err()),
            "Setting nope is required"
        );
    }

    #[test]
    fn check_known() {
        let s = Settings::from_pairs([("service_down_tme", "5")]);
        assert_eq!(
            s.check_known(&["service_down_time"]).unwrap_err().message,
            "Unknown setting service_down_tme (known: service_down_time)"
        );
        assert_eq!(
            s.check_known(&[]).unwrap_err().message,
            "Unknown setting service_down_tme: this plugin takes no settings"
        );
        assert!(Settings::default().check_known(&[]).is_ok());
    }
}
