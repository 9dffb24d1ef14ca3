//! Helpers on the generated WIT types, and the SDK's per-host [`Verdict`].

use crate::{PluginError, RequestSpec, Verdicts};

/// The `code`s of the [`PluginError`]s this SDK produces. Plugins may use their own codes too.
pub mod codes {
    /// A setting is missing, unknown or has a value of the wrong kind.
    pub const BAD_SETTING: &str = "bad-setting";
    /// A call arrived before a successful `configure`.
    pub const NOT_CONFIGURED: &str = "not-configured";
    /// The host sent a batch that does not hold together (columns of different lengths, a
    /// string index out of range).
    pub const BAD_BATCH: &str = "bad-batch";
    /// The plugin's answer does not fit the batch (wrong length, a failed host without exactly
    /// one reason, a weight that is not finite).
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

/// A filter's answer for one host. (On the wire a whole batch's answers travel as one
/// [`Verdicts`] record: a pass flag per host, reasons only for the failed ones.)
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// The host can take the request.
    Pass,
    /// The host cannot take the request, and why.
    Fail(String),
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

impl Verdicts {
    /// No verdicts yet, with room for `hosts` pass flags (reasons are allocated only when a
    /// host fails).
    pub fn with_capacity(hosts: usize) -> Self {
        Self {
            pass: Vec::with_capacity(hosts),
            reasons: Vec::new(),
        }
    }

    /// Number of verdicts (pass flags).
    pub fn len(&self) -> usize {
        self.pass.len()
    }

    /// Whether there are no verdicts.
    pub fn is_empty(&self) -> bool {
        self.pass.is_empty()
    }

    /// Appends a pass for the next host.
    pub fn push_pass(&mut self) {
        self.pass.push(true);
    }

    /// Appends a failure with `reason` for the next host.
    pub fn push_fail(&mut self, reason: impl Into<String>) {
        let index = u32::try_from(self.pass.len()).unwrap_or(u32::MAX);
        self.pass.push(false);
        self.reasons.push((index, reason.into()));
    }

    /// Appends `verdict` for the next host.
    pub fn push(&mut self, verdict: Verdict) {
        match verdict {
            Verdict::Pass => self.push_pass(),
            Verdict::Fail(reason) => self.push_fail(reason),
        }
    }

    /// One [`Verdict`] per host, in order. A failed host without a reason gets an empty one;
    /// reasons for out-of-range or passing hosts are dropped ([`Verdicts`] built with
    /// [`Verdicts::push`] have neither).
    pub fn into_vec(self) -> Vec<Verdict> {
        let mut reasons: Vec<Option<String>> = vec![None; self.pass.len()];
        for (index, reason) in self.reasons {
            if let Some(slot) = reasons.get_mut(index as usize) {
                *slot = Some(reason);
            }
        }
        self.pass
            .into_iter()
            .zip(reasons)
            .map(|(pass, reason)| {
                if pass {
                    Verdict::Pass
                } else {
                    Verdict::Fail(reason.unwrap_or_default())
                }
            })
            .collect()
    }
}

impl Extend<Verdict> for Verdicts {
    fn extend<I: IntoIterator<Item = Verdict>>(&mut self, iter: I) {
        let iter = iter.into_iter();
        self.pass.reserve(iter.size_hint().0);
        for verdict in iter {
            self.push(verdict);
        }
    }
}

impl FromIterator<Verdict> for Verdicts {
    fn from_iter<I: IntoIterator<Item = Verdict>>(iter: I) -> Self {
        let mut verdicts = Self::with_capacity(0);
        verdicts.extend(iter);
        verdicts
    }
}

impl From<Verdicts> for Vec<Verdict> {
    fn from(verdicts: Verdicts) -> Self {
        verdicts.into_vec()
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
    fn verdicts_are_columnar() {
        let verdicts: Verdicts = [
            Verdict::Pass,
            Verdict::fail("a"),
            Verdict::Pass,
            Verdict::fail("b"),
        ]
        .into_iter()
        .collect();
        assert_eq!(verdicts.pass, [true, false, true, false]);
        assert_eq!(verdicts.reasons, [(1, "a".to_owned()), (3, "b".to_owned())]);
        assert_eq!(verdicts.len(), 4);
        assert_eq!(
            verdicts.into_vec(),
            [
                Verdict::Pass,
                Verdict::fail("a"),
                Verdict::Pass,
                Verdict::fail("b")
            ]
        );
        let odd = Verdicts {
            pass: vec![false, true],
            reasons: vec![(7, "gone".into())],
        };
        assert_eq!(Vec::from(odd), [Verdict::fail(""), Verdict::Pass]);
        assert!(Verdicts::with_capacity(8).is_empty());
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
