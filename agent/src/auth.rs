//! Bearer-token authentication.
//!
//! The admin token comes from the config (`auth.token` or `auth.token_file`). When neither is
//! set, the first start generates 32 random bytes, writes them hex-encoded to
//! `<state_dir>/admin.token` with mode 0600, and later starts read the same file. Tokens are
//! compared in constant time.

use crate::config::Config;
use rand::RngCore;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use subtle::ConstantTimeEq;

/// Errors loading or creating the admin token.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The token file could not be read or written.
    #[error("Cannot access token file {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The token file holds no usable token.
    #[error(
        "Token file {0} is empty or shorter than required (16 characters; 32 for the peer token)"
    )]
    Empty(PathBuf),
    /// A secret file others can read or write.
    #[error("Token file {path} has mode {mode:o}; make it readable by its owner only (chmod 600)")]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

/// Where the admin token came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `auth.token` in the config.
    Config,
    /// An existing file.
    File(PathBuf),
    /// Generated now into this file.
    Generated(PathBuf),
}

/// The admin bearer token.
#[derive(Clone)]
pub struct AdminToken(String);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(…)")
    }
}

impl AdminToken {
    /// Whether `presented` is this token (constant time).
    pub fn matches(&self, presented: &str) -> bool {
        self.matches_bytes(presented.as_bytes())
    }

    /// Whether `presented` is exactly this token's bytes (constant time).
    pub fn matches_bytes(&self, presented: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(presented).into()
    }

    /// The token text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Loads the admin token as the config says, generating it on first start.
///
/// # Errors
/// [`AuthError`] when a token file cannot be read or written, or is empty.
pub fn load_or_create(config: &Config) -> Result<(AdminToken, TokenSource), AuthError> {
    if let Some(token) = &config.auth.token {
        return Ok((AdminToken(token.clone()), TokenSource::Config));
    }
    if let Some(path) = &config.auth.token_file {
        return Ok((read_token(path)?, TokenSource::File(path.clone())));
    }
    let path = config.admin_token_path();
    if path.exists() {
        return Ok((read_token(&path)?, TokenSource::File(path)));
    }
    let token = generate_token();
    write_private(&path, &token)?;
    Ok((AdminToken(token), TokenSource::Generated(path)))
}

/// Reads the first line of a token file.
///
/// # Errors
/// [`AuthError`] when the file cannot be read or holds no token.
pub fn read_token(path: &Path) -> Result<AdminToken, AuthError> {
    let text = std::fs::read_to_string(path).map_err(|source| AuthError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.len() < 16 {
        return Err(AuthError::Empty(path.to_path_buf()));
    }
    Ok(AdminToken(token))
}

/// Reads a shared secret token (the fleet's peer token): the first line, at least `min_len`
/// characters, from a file no one but its owner can read or write.
///
/// # Errors
/// [`AuthError::Io`] when the file cannot be read, [`AuthError::Empty`] when the token is
/// too short, [`AuthError::Exposed`] when group or others have access to the file.
pub fn read_secret_token(path: &Path, min_len: usize) -> Result<AdminToken, AuthError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(|source| AuthError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if meta.mode() & 0o077 != 0 {
        return Err(AuthError::Exposed {
            path: path.to_path_buf(),
            mode: meta.mode() & 0o777,
        });
    }
    let token = read_token(path)?;
    if token.0.len() < min_len {
        return Err(AuthError::Empty(path.to_path_buf()));
    }
    Ok(token)
}

fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Writes `token` to `path` with mode 0600, atomically (temp file + rename).
fn write_private(path: &Path, token: &str) -> Result<(), AuthError> {
    let io = |source| AuthError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("token.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    writeln!(file, "{token}").map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn first_start_generates_a_private_token_and_later_starts_reuse_it() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            state_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        let (token, source) = load_or_create(&config).unwrap();
        assert!(matches!(source, TokenSource::Generated(_)));
        let mode = std::fs::metadata(config.admin_token_path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (again, source) = load_or_create(&config).unwrap();
        assert!(matches!(source, TokenSource::File(_)));
        assert!(again.matches(token.as_str()));
        assert!(!again.matches("wrong"));
    }
}
