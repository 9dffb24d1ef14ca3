//! Helpers on the generated WIT types.

use crate::{PluginError, RequestSpec, Verdict};

/// The `code`s of the [`PluginError`]s this SDK produces. Plugins may use their own codes too.
pub mod codes {
    /// A setting is missing, unknown or has a value of the wrong kind.
    pub const BAD_SETTING: &str = "bad-setting";
    /// A call arrived before a successful `configure`.
    pub const NOT_CONFIGURED: &str = "not-configured";
    /// The host sent a batch that does not hold together (a string index out of range).
    pub const BAD_BATCH: &str = "bad-batch";
    /// The plugin's answer does not fit the batch (wrong length, a weight that is not finite).
    pub const BAD_ANSWER: &str = "bad-answer";
}

impl PluginError {
    /// An error with any code.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }

    /// A [`codes::BAD_SETTING`] error.
    pub fn bad_setting(message: impl Into<String>) -> Self {
        Self::new(codes::BAD_SETTING, message)
    }
}

impl Verdict {
    /// A failing verdict with `reason`.
    pub fn fail(reason: impl Into<String>) -> Self {
        Self::Fail(reason.into())
    }

    /// [`Verdict::Pass`] when `ok`, else a failure whose reason `reason` builds (only then).
    pub fn pass_if(ok: bool, reason: impl FnOnce() -> String) -> Self {
        if ok {
            Self::Pass
        } else {
            Self::Fail(reason())
        }
    }

    /// Whether the host passed.
    pub fn is_pass(&self) -> bool {
        matches!(self, Self::Pass)
    }

    /// The reason of a failure; `None` for a pass.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Self::Pass => None,
            Self::Fail(reason) => Some(reason),
        }
    }
}

impl RequestSpec {
    /// The value of image property `key` (exact key match), if the image has it. When a key
    /// occurs twice the first wins.
    pub fn image_property(&self, key: &str) -> Option<&str> {
        self.image_properties
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The availability zone asked for, if any (an empty string counts as none).
    pub fn requested_zone(&self) -> Option<&str> {
        self.availability_zone
            .as_deref()
            .filter(|zone| !zone.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::RequestBuilder;

    #[test]
    fn verdict_helpers() {
        assert!(Verdict::pass_if(true, || unreachable!()).is_pass());
        let failed = Verdict::pass_if(false, || "no room".to_owned());
        assert_eq!(failed.reason(), Some("no room"));
        assert_eq!(Verdict::fail("x"), Verdict::Fail("x".into()));
    }

    #[test]
    fn image_property_and_zone() {
        let spec = RequestBuilder::new()
            .image_property("architecture", "x86_64")
            .image_property("architecture", "aarch64")
            .az("")
            .build();
        assert_eq!(spec.image_property("architecture"), Some("x86_64"));
        assert_eq!(spec.image_property("vm_mode"), None);
        assert_eq!(spec.requested_zone(), None);
    }
}
