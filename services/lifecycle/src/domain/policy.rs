//! Tiering policy: how many days without access make an object cold, which
//! archive class it goes to, and the smallest object worth moving. One
//! policy for the deployment, with optional per-user overrides of any field.

use std::{collections::BTreeMap, fmt, str::FromStr};

/// The classes objects may be tiered to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ArchiveClass {
    /// Glacier Instant Retrieval: read like Standard, 90 days minimum.
    GlacierIr,
    /// Glacier Flexible Retrieval: restore before reading, 90 days minimum.
    Glacier,
    /// Deep Archive: restore before reading, 180 days minimum.
    DeepArchive,
}

impl ArchiveClass {
    /// S3's name of the class.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GlacierIr => "GLACIER_IR",
            Self::Glacier => "GLACIER",
            Self::DeepArchive => "DEEP_ARCHIVE",
        }
    }
}

impl fmt::Display for ArchiveClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ArchiveClass {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "GLACIER_IR" => Ok(Self::GlacierIr),
            "GLACIER" => Ok(Self::Glacier),
            "DEEP_ARCHIVE" => Ok(Self::DeepArchive),
            other => Err(format!(
                "tier class {other:?} must be GLACIER_IR, GLACIER or DEEP_ARCHIVE"
            )),
        }
    }
}

/// The policy in force for one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Days without a read (or since creation) before an object is due.
    pub cold_after_days: u32,
    pub target: ArchiveClass,
    /// Objects smaller than this stay where they are.
    pub min_size: u64,
}

/// A user's departures from the deployment's policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PolicyOverride {
    pub cold_after_days: Option<u32>,
    pub target: Option<ArchiveClass>,
    pub min_size: Option<u64>,
}

/// The deployment's policy and its per-user overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policies {
    pub default: Policy,
    pub overrides: BTreeMap<String, PolicyOverride>,
}

impl Policies {
    /// The deployment's policy without overrides.
    pub fn uniform(default: Policy) -> Self {
        Self {
            default,
            overrides: BTreeMap::new(),
        }
    }

    /// The policy in force for `user`.
    pub fn for_user(&self, user: &str) -> Policy {
        let Some(o) = self.overrides.get(user) else {
            return self.default;
        };
        Policy {
            cold_after_days: o.cold_after_days.unwrap_or(self.default.cold_after_days),
            target: o.target.unwrap_or(self.default.target),
            min_size: o.min_size.unwrap_or(self.default.min_size),
        }
    }

    /// Reads per-user overrides: `user:field=value,field=value` entries
    /// separated by `;`, fields `days`, `class` and `min_size`, e.g.
    /// `alice:days=30,class=DEEP_ARCHIVE;bob:min_size=0`. Empty means none.
    pub fn with_overrides(default: Policy, text: &str) -> Result<Self, String> {
        let mut overrides = BTreeMap::new();
        for entry in text.split(';').map(str::trim).filter(|e| !e.is_empty()) {
            let (user, fields) = entry
                .split_once(':')
                .ok_or_else(|| format!("expected user:field=value, got {entry:?}"))?;
            let user = user.trim();
            let valid_user = (1..=128).contains(&user.len())
                && user
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !valid_user {
                return Err(format!("{user:?} is not a user id"));
            }
            let mut o = PolicyOverride::default();
            for field in fields.split(',').map(str::trim).filter(|f| !f.is_empty()) {
                let (name, value) = field
                    .split_once('=')
                    .ok_or_else(|| format!("expected field=value for {user}, got {field:?}"))?;
                let value = value.trim();
                match name.trim() {
                    "days" => {
                        o.cold_after_days = Some(value.parse().map_err(|_| {
                            format!("days of {user} must be a whole number, got {value:?}")
                        })?)
                    }
                    "class" => o.target = Some(value.parse()?),
                    "min_size" => {
                        o.min_size = Some(value.parse().map_err(|_| {
                            format!("min_size of {user} must be a number of bytes, got {value:?}")
                        })?)
                    }
                    other => {
                        return Err(format!(
                            "unknown field {other:?} for {user} (days, class, min_size)"
                        ));
                    }
                }
            }
            if overrides.insert(user.to_string(), o).is_some() {
                return Err(format!("{user} is listed twice"));
            }
        }
        Ok(Self { default, overrides })
    }
}

/// The days the due index's dates were computed with: the default and each
/// user's own. Rows keep the date the policy in force gave them when they
/// were written, so a policy that lowers anyone's days leaves their rows
/// due later than it says until they are dated again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedDays {
    pub default: u32,
    pub users: BTreeMap<String, u32>,
}

/// Which rows a change of policy leaves dated too late.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redating {
    /// None: no one's days went down.
    Nothing,
    /// These users' (their days went down, the default did not).
    Users(Vec<String>),
    /// Everyone's: the default went down.
    All,
}

impl IndexedDays {
    /// The days `policies` gives.
    pub fn of(policies: &Policies) -> Self {
        Self {
            default: policies.default.cold_after_days,
            users: policies
                .overrides
                .iter()
                .filter_map(|(user, o)| Some((user.clone(), o.cold_after_days?)))
                .collect(),
        }
    }

    fn for_user(&self, user: &str) -> u32 {
        self.users.get(user).copied().unwrap_or(self.default)
    }

    /// What rows dated under `self` need once `now` is in force.
    pub fn redating(&self, now: &Self) -> Redating {
        if now.default < self.default {
            return Redating::All;
        }
        let users: Vec<String> = self
            .users
            .keys()
            .chain(now.users.keys())
            .filter(|user| now.for_user(user) < self.for_user(user))
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if users.is_empty() {
            Redating::Nothing
        } else {
            Redating::Users(users)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: Policy = Policy {
        cold_after_days: 90,
        target: ArchiveClass::GlacierIr,
        min_size: 131_072,
    };

    fn days(default: u32, overrides: &str) -> IndexedDays {
        let policy = Policy {
            cold_after_days: default,
            ..DEFAULT
        };
        IndexedDays::of(&Policies::with_overrides(policy, overrides).unwrap())
    }

    #[test]
    fn only_days_that_went_down_need_rows_dated_again() {
        let before = days(90, "alice:days=30;bob:days=120;carol:class=GLACIER");
        assert_eq!(
            before.users,
            BTreeMap::from([("alice".into(), 30), ("bob".into(), 120)]),
            "an override without days follows the default"
        );
        assert_eq!(before.redating(&before), Redating::Nothing);
        // Raised days need nothing: sweeps postpone what is not due yet.
        assert_eq!(
            before.redating(&days(100, "alice:days=40;bob:days=120")),
            Redating::Nothing
        );
        assert_eq!(
            before.redating(&days(90, "alice:days=10;bob:days=120;dan:days=60")),
            Redating::Users(vec!["alice".into(), "dan".into()])
        );
        // Bob's override gone: he follows the default of 90, below his 120.
        assert_eq!(
            before.redating(&days(90, "alice:days=30")),
            Redating::Users(vec!["bob".into()])
        );
        assert_eq!(
            before.redating(&days(60, "alice:days=30;bob:days=120")),
            Redating::All
        );
    }

    #[test]
    fn overrides_replace_only_the_fields_they_name() {
        let policies =
            Policies::with_overrides(DEFAULT, "alice:days=30,class=DEEP_ARCHIVE; bob:min_size=0")
                .unwrap();
        assert_eq!(
            policies.for_user("alice"),
            Policy {
                cold_after_days: 30,
                target: ArchiveClass::DeepArchive,
                min_size: 131_072
            }
        );
        assert_eq!(policies.for_user("bob").min_size, 0);
        assert_eq!(policies.for_user("bob").cold_after_days, 90);
        assert_eq!(policies.for_user("carol"), DEFAULT);
        assert_eq!(
            Policies::with_overrides(DEFAULT, "").unwrap(),
            Policies::uniform(DEFAULT)
        );
    }

    #[test]
    fn bad_overrides_are_refused() {
        for bad in [
            "alice",
            "alice:days",
            "alice:days=-1",
            "alice:class=STANDARD",
            "alice:colour=red",
            "a.b:days=1",
            "alice:days=1;alice:days=2",
        ] {
            assert!(Policies::with_overrides(DEFAULT, bad).is_err(), "{bad}");
        }
    }
}
