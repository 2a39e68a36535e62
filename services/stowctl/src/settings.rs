//! Where stowctl's settings come from: the environment, and a local stack's
//! settings file.
//!
//! `make dev` writes `.stowage/dev.env`: the emulators' endpoints, their
//! access keys and the local resource names. A file named with `--env-file`
//! (or `STOWAGE_ENV_FILE`) is always read. One found by looking in the
//! current directory and its parents is read only when the environment does
//! not configure a deployment itself: otherwise an operator with production
//! settings exported, in a checkout that once ran `make dev`, would reach the
//! local emulators while believing they reached production.

use std::path::{Path, PathBuf};

/// The settings file of the local stack, relative to a directory.
const LOCAL_FILE: [&str; 2] = [".stowage", "dev.env"];

/// A required setting that is not set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingSetting {
    /// The variable, e.g. `STOWAGE_BUCKET`.
    pub name: String,
}

impl std::fmt::Display for MissingSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is not set (start the local stack with `make dev`, or export it)",
            self.name
        )
    }
}

impl std::error::Error for MissingSetting {}

/// `.stowage/dev.env` in `dir` or the nearest of its parents that has one.
pub fn find_local_file(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .map(|dir| dir.join(LOCAL_FILE[0]).join(LOCAL_FILE[1]))
        .find(|candidate| candidate.is_file())
}

/// The first of these variable names that says the environment configures a
/// deployment of its own: any `STOWAGE_*` setting (except `STOWAGE_ENV_FILE`,
/// which only names a file), an AWS profile, access key or session, a role
/// to assume (web identity, a container's credentials), or an AWS endpoint.
/// An instance's role shows in no variable: a file read then is named on
/// stderr.
pub fn deployment_variable<I, S>(names: I) -> Option<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    names.into_iter().find_map(|name| {
        let name = name.as_ref();
        let configures = (name.starts_with("STOWAGE_") && name != "STOWAGE_ENV_FILE")
            || matches!(
                name,
                "AWS_PROFILE"
                    | "AWS_ACCESS_KEY_ID"
                    | "AWS_SESSION_TOKEN"
                    | "AWS_ROLE_ARN"
                    | "AWS_WEB_IDENTITY_TOKEN_FILE"
            )
            || name.starts_with("AWS_CONTAINER_CREDENTIALS")
            || name.starts_with("AWS_ENDPOINT_URL");
        configures.then(|| name.to_string())
    })
}

/// Which settings file to read, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvFile {
    /// Named with `--env-file` or `STOWAGE_ENV_FILE`: read.
    Given(PathBuf),
    /// Found by looking upwards from the current directory: read.
    Found(PathBuf),
    /// Found by looking, and not read because `because` (a variable name)
    /// shows that the environment configures a deployment.
    Skipped { file: PathBuf, because: String },
    /// None given and none found.
    None,
}

impl EnvFile {
    /// Decides between the file given, the one found by looking, and none,
    /// by the names of the variables set in the environment.
    pub fn choose<I, S>(given: Option<PathBuf>, found: Option<PathBuf>, set: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        match (given, found) {
            (Some(file), _) => EnvFile::Given(file),
            (None, None) => EnvFile::None,
            (None, Some(file)) => match deployment_variable(set) {
                Some(because) => EnvFile::Skipped { file, because },
                None => EnvFile::Found(file),
            },
        }
    }

    /// The file to read.
    pub fn to_read(&self) -> Option<&Path> {
        match self {
            EnvFile::Given(file) | EnvFile::Found(file) => Some(file),
            EnvFile::Skipped { .. } | EnvFile::None => None,
        }
    }

    /// The line printed on stderr when a file found by looking is read, so
    /// that nobody reaches the local stack without being told.
    pub fn notice(&self) -> Option<String> {
        match self {
            EnvFile::Found(file) => Some(format!(
                "stowctl: local stack settings from {} (--env-file /dev/null to use none)",
                file.display()
            )),
            _ => None,
        }
    }

    /// Explains a missing setting when the file that might have held it was
    /// found and not read; `None` otherwise.
    pub fn explain_missing(&self, missing: &MissingSetting) -> Option<String> {
        let EnvFile::Skipped { file, because } = self else {
            return None;
        };
        Some(format!(
            "{} is not set. {} was found but not read, because {because} is set: the \
             environment configures a deployment, so a local stack's settings are not mixed \
             into it. Export {} for that deployment, or pass --env-file {} to use the local \
             stack's settings",
            missing.name,
            file.display(),
            missing.name,
            file.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deployment_is_configured_by_stowage_settings_aws_profiles_keys_and_endpoints() {
        for name in [
            "STOWAGE_BUCKET",
            "STOWAGE_LOG_FORMAT",
            "AWS_PROFILE",
            "AWS_ACCESS_KEY_ID",
            "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_SQS",
        ] {
            assert_eq!(
                deployment_variable(["HOME", name, "PATH"]).as_deref(),
                Some(name)
            );
        }
        assert_eq!(
            deployment_variable([
                "STOWAGE_ENV_FILE",
                "AWS_REGION",
                "AWS_DEFAULT_REGION",
                "RUST_LOG",
                "HOME",
                "STOWAGE"
            ]),
            None
        );
    }

    #[test]
    fn a_file_found_is_read_only_when_the_environment_configures_no_deployment() {
        let found = || Some(PathBuf::from("/w/.stowage/dev.env"));
        let given = || Some(PathBuf::from("/etc/stowage.env"));

        let chosen = EnvFile::choose(None, found(), ["HOME", "AWS_REGION"]);
        assert_eq!(chosen, EnvFile::Found(found().unwrap()));
        assert_eq!(chosen.to_read(), found().as_deref());
        assert_eq!(
            chosen.notice().as_deref(),
            Some(
                "stowctl: local stack settings from /w/.stowage/dev.env (--env-file /dev/null to use none)"
            )
        );

        let skipped = EnvFile::choose(None, found(), ["HOME", "AWS_PROFILE"]);
        assert_eq!(skipped.to_read(), None);
        assert_eq!(skipped.notice(), None);
        let why = skipped
            .explain_missing(&MissingSetting {
                name: "STOWAGE_BUCKET".into(),
            })
            .expect("an explanation");
        assert!(why.starts_with("STOWAGE_BUCKET is not set."), "{why}");
        assert!(why.contains("/w/.stowage/dev.env was found but not read"));
        assert!(why.contains("because AWS_PROFILE is set"), "{why}");
        assert!(why.contains("--env-file /w/.stowage/dev.env"), "{why}");

        // A file given is read whatever the environment holds, silently.
        let chosen = EnvFile::choose(given(), found(), ["STOWAGE_BUCKET"]);
        assert_eq!(chosen.to_read(), given().as_deref());
        assert_eq!(chosen.notice(), None);
        assert_eq!(
            chosen.explain_missing(&MissingSetting { name: "X".into() }),
            None
        );
        assert_eq!(EnvFile::choose(None, None, ["AWS_PROFILE"]), EnvFile::None);
    }

    #[test]
    fn the_local_file_is_found_in_the_nearest_directory_above() {
        let root = std::env::temp_dir().join(format!(
            "stowctl-find-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        let deep = root.join("a").join("b");
        std::fs::create_dir_all(&deep).unwrap();
        assert_eq!(find_local_file(&deep), None);
        std::fs::create_dir_all(root.join(".stowage")).unwrap();
        std::fs::write(root.join(".stowage/dev.env"), "X=1\n").unwrap();
        assert_eq!(find_local_file(&deep), Some(root.join(".stowage/dev.env")));
        std::fs::create_dir_all(root.join("a/.stowage")).unwrap();
        std::fs::write(root.join("a/.stowage/dev.env"), "X=2\n").unwrap();
        assert_eq!(
            find_local_file(&deep),
            Some(root.join("a/.stowage/dev.env"))
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
