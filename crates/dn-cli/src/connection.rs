//! Resolving where the API is and who we are: flags, then `DN_*` env, then the reference's `DREADNODE_*`
//! env, then a profile in `~/.config/dn/profiles.toml` (or `$DN_CONFIG_DIR/profiles.toml`), then defaults.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::cli::ConnectionArgs;

pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";
pub const DEFAULT_ORGANIZATION: &str = "default";
pub const DEFAULT_WORKSPACE: &str = "default";

#[derive(Debug, Clone, PartialEq)]
pub struct Connection {
    pub server: String,
    pub api_key: Option<String>,
    pub organization: String,
    pub workspace: String,
    pub project: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfilesFile {
    default: Option<String>,
    #[serde(default)]
    profiles: BTreeMap<String, Profile>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Profile {
    server: Option<String>,
    api_key: Option<String>,
    organization: Option<String>,
    workspace: Option<String>,
    project: Option<String>,
}

fn profiles_path() -> PathBuf {
    if let Ok(dir) = std::env::var("DN_CONFIG_DIR") {
        return PathBuf::from(dir).join("profiles.toml");
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| ".".into());
    PathBuf::from(home).join(".config/dn/profiles.toml")
}

fn load_profile(requested: Option<&str>) -> Result<Profile> {
    let path = profiles_path();
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(name) = requested {
                bail!(
                    "profile '{name}' requested but {} does not exist",
                    path.display()
                );
            }
            return Ok(Profile::default());
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let file: ProfilesFile = toml::from_str(&text)
        .with_context(|| format!("invalid profiles file {}", path.display()))?;
    let Some(name) = requested.map(str::to_owned).or(file.default.clone()) else {
        return Ok(Profile::default());
    };
    file.profiles
        .get(&name)
        .cloned()
        .with_context(|| format!("no profile '{name}' in {}", path.display()))
}

fn env(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
}

impl Connection {
    pub fn resolve(args: &ConnectionArgs) -> Result<Connection> {
        let requested = args.profile.clone().or_else(|| env(&["DN_PROFILE"]));
        let profile = load_profile(requested.as_deref())?;
        let pick =
            |flag: &Option<String>, dn: &str, reference: &str, from_profile: &Option<String>| {
                flag.clone()
                    .or_else(|| env(&[dn, reference]))
                    .or_else(|| from_profile.clone())
            };
        Ok(Connection {
            server: pick(
                &args.server,
                "DN_SERVER",
                "DREADNODE_SERVER",
                &profile.server,
            )
            .unwrap_or_else(|| DEFAULT_SERVER.into()),
            api_key: pick(
                &args.api_key,
                "DN_API_KEY",
                "DREADNODE_API_KEY",
                &profile.api_key,
            ),
            organization: pick(
                &args.organization,
                "DN_ORGANIZATION",
                "DREADNODE_ORGANIZATION",
                &profile.organization,
            )
            .unwrap_or_else(|| DEFAULT_ORGANIZATION.into()),
            workspace: pick(
                &args.workspace,
                "DN_WORKSPACE",
                "DREADNODE_WORKSPACE",
                &profile.workspace,
            )
            .unwrap_or_else(|| DEFAULT_WORKSPACE.into()),
            project: pick(
                &args.project,
                "DN_PROJECT",
                "DREADNODE_PROJECT",
                &profile.project,
            ),
        })
    }

    pub fn client(&self) -> Result<dn_client::Client> {
        if self.api_key.is_none() {
            bail!(
                "no API key: pass --api-key, set DN_API_KEY, or add api_key to a profile (dn keys create --org ORG makes one)"
            );
        }
        Ok(dn_client::Client::new(
            &self.server,
            self.api_key.as_deref(),
        )?)
    }
}
