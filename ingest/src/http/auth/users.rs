//! The users file (`users.toml`): built-in users with their role, scope,
//! password hash and API tokens, written by `fleetpulse users add` and
//! `fleetpulse users token`, read by the service at start and on SIGHUP.
//!
//! ```toml
//! [[user]]
//! name = "alice"
//! role = "csm"
//! customers = ["acme"]          # besides those with csm = "alice"
//! segments = ["high-touch"]     # every customer of these segments
//! password_hash = "$argon2id$v=19$m=19456,t=2,p=1$..."
//!
//! [[user.token]]
//! id = "3f9a0c12"
//! label = "grafana"
//! hash = "$argon2id$v=19$..."
//! ```
//!
//! **Why argon2id.** The file holds the only proof of each password; if it
//! leaks, a fast hash (SHA-256) lets an attacker try billions of guesses a
//! second on a GPU. argon2id (the winner of the Password Hashing
//! Competition, OWASP's first choice) makes every guess cost memory
//! (19 MiB) and time, so only strong guesses pay. Tokens are long random
//! strings that no guessing reaches, but they get the same hash so one
//! reader of the file cannot use them either; a verified token is then
//! remembered (under a keyed hash that lives in memory only) so a scraper
//! polling `/metrics` does not pay argon2 on every request.
//!
//! A token reads `fp_<id>_<secret>`: the id finds the entry without trying
//! every hash, the 256-bit secret proves it.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use argon2::password_hash::{PasswordHash, SaltString};
use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use base64::Engine as _;
use fleetpulse_engine::Segment;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::roles::{Principal, Role, Via};
use crate::config::ConfigError;

/// Prefix of every API token.
pub const TOKEN_PREFIX: &str = "fp_";

/// Verified tokens remembered at most (then the memory starts over).
const TOKEN_CACHE: usize = 1024;

/// The file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsersFile {
    /// `[[user]]` entries.
    #[serde(default, rename = "user")]
    pub users: Vec<UserEntry>,
}

/// One user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    /// Login name; for a CSM, the `csm` value of their customers.
    pub name: String,
    /// `admin`, `csm` or `viewer`.
    pub role: Role,
    /// Customers this CSM sees besides those assigned in customers.toml.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub customers: Vec<String>,
    /// Segments whose every customer this CSM sees.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<Segment>,
    /// argon2id hash of the password; no login form without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<Hash>,
    /// API tokens.
    #[serde(default, rename = "token", skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<TokenEntry>,
}

/// One API token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// Public part, unique in the file.
    pub id: String,
    /// What it is for (e.g. `prometheus`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// argon2id hash of the secret part.
    pub hash: Hash,
}

/// A PHC-format hash; never printed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Hash(String);

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<argon2 hash>")
    }
}

/// Errors of the users file and its commands.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    /// Reading or parsing.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Writing.
    #[error("{path}: cannot write: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A command that cannot be done.
    #[error("{path}: {message}")]
    Refused {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

impl UsersFile {
    /// Reads and checks `path`; a missing file is an empty one only when
    /// `missing_ok` (the CLI creating it).
    pub fn load(path: &Path, missing_ok: bool) -> Result<Self, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if missing_ok && e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let file: Self = crate::config::parse_toml(path, &text)?;
        file.check(path)?;
        Ok(file)
    }

    fn check(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |field: String, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            field,
            message,
        };
        let mut names = HashMap::new();
        let mut tokens = HashMap::new();
        for (i, user) in self.users.iter().enumerate() {
            check_name(&user.name).map_err(|m| invalid(format!("user[{i}].name"), m))?;
            if let Some(first) = names.insert(user.name.as_str(), i) {
                return Err(invalid(
                    format!("user[{i}].name"),
                    format!("`{}` is also user[{first}]", user.name),
                ));
            }
            if let Some(hash) = &user.password_hash {
                PasswordHash::new(&hash.0).map_err(|e| {
                    invalid(
                        format!("user[{i}].password_hash"),
                        format!("not a PHC hash: {e}"),
                    )
                })?;
            }
            for (j, token) in user.tokens.iter().enumerate() {
                if let Some(first) = tokens.insert(token.id.as_str(), (i, j)) {
                    return Err(invalid(
                        format!("user[{i}].token[{j}].id"),
                        format!(
                            "`{}` is also user[{}].token[{}]",
                            token.id, first.0, first.1
                        ),
                    ));
                }
                PasswordHash::new(&token.hash.0).map_err(|e| {
                    invalid(
                        format!("user[{i}].token[{j}].hash"),
                        format!("not a PHC hash: {e}"),
                    )
                })?;
            }
        }
        Ok(())
    }

    /// Writes the file: a new file beside it, then renamed over it, owner
    /// read/write only.
    pub fn save(&self, path: &Path) -> Result<(), UsersError> {
        let write = |source| UsersError::Write {
            path: path.to_owned(),
            source,
        };
        let text = format!(
            "# fleetpulse users: written by `fleetpulse users`; hashes are argon2id.\n{}",
            toml::to_string_pretty(self).expect("users serialise")
        );
        let tmp = path.with_extension("toml.tmp");
        {
            use std::io::Write;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(&tmp).map_err(write)?;
            file.write_all(text.as_bytes()).map_err(write)?;
            file.sync_all().map_err(write)?;
        }
        std::fs::rename(&tmp, path).map_err(write)
    }

    /// Adds (or, with `replace`, replaces) user `name`. With a password, its
    /// hash is stored.
    pub fn add(&mut self, path: &Path, user: UserEntry, replace: bool) -> Result<(), UsersError> {
        check_name(&user.name).map_err(|message| UsersError::Refused {
            path: path.to_owned(),
            message,
        })?;
        // `Admin` beside `admin` reads as the same person in the audit log
        // and the csm assignments.
        let alike = (self.users.iter())
            .find(|u| u.name != user.name && u.name.to_lowercase() == user.name.to_lowercase());
        if let Some(alike) = alike {
            return Err(UsersError::Refused {
                path: path.to_owned(),
                message: format!(
                    "user `{}` exists: a name differing from one only in case is refused",
                    alike.name
                ),
            });
        }
        match self.users.iter_mut().find(|u| u.name == user.name) {
            Some(existing) if replace => {
                let tokens = std::mem::take(&mut existing.tokens);
                *existing = UserEntry { tokens, ..user };
            }
            Some(_) => {
                return Err(UsersError::Refused {
                    path: path.to_owned(),
                    message: format!("user `{}` exists (use --replace to change it)", user.name),
                });
            }
            None => self.users.push(user),
        }
        Ok(())
    }

    /// Creates a token for user `name`; returns the token, shown once.
    pub fn new_token(
        &mut self,
        path: &Path,
        name: &str,
        label: Option<String>,
    ) -> Result<String, UsersError> {
        let taken: Vec<String> = self
            .users
            .iter()
            .flat_map(|u| u.tokens.iter().map(|t| t.id.clone()))
            .collect();
        let Some(user) = self.users.iter_mut().find(|u| u.name == name) else {
            return Err(UsersError::Refused {
                path: path.to_owned(),
                message: format!("no user `{name}` (add it with `fleetpulse users add`)"),
            });
        };
        let id = loop {
            let id = hex(&random_bytes::<4>());
            if !taken.contains(&id) {
                break id;
            }
        };
        let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>());
        user.tokens.push(TokenEntry {
            id: id.clone(),
            label,
            hash: hash_secret(&secret),
        });
        Ok(format!("{TOKEN_PREFIX}{id}_{secret}"))
    }

    /// Removes user `name`.
    pub fn remove(&mut self, path: &Path, name: &str) -> Result<(), UsersError> {
        let before = self.users.len();
        self.users.retain(|u| u.name != name);
        if self.users.len() == before {
            return Err(UsersError::Refused {
                path: path.to_owned(),
                message: format!("no user `{name}`"),
            });
        }
        Ok(())
    }
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._@-".contains(c))
    {
        return Err(format!(
            "`{name}`: a user name is 1 to 64 letters, digits, `.`, `_`, `@` or `-`"
        ));
    }
    Ok(())
}

/// The argon2id hash (PHC string) of `secret`, with a fresh salt.
pub fn hash_secret(secret: &str) -> Hash {
    let salt = SaltString::encode_b64(&random_bytes::<16>()).expect("16 bytes make a salt");
    let hash = Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .expect("argon2 with default parameters hashes");
    Hash(hash.to_string())
}

fn verify(secret: &str, hash: &Hash) -> bool {
    PasswordHash::new(&hash.0).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(secret.as_bytes(), &parsed)
            .is_ok()
    })
}

/// `N` bytes from the thread's CSPRNG (seeded from the OS).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A random password for `fleetpulse users add` without `--password-stdin`.
pub fn generate_password() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<18>())
}

/// The users the service checks credentials against.
#[derive(Debug)]
pub struct Users {
    file: UsersFile,
    /// Keyed hash of a verified token -> (user, token id).
    verified: Mutex<HashMap<[u8; 32], (String, String)>>,
    cache_key: [u8; 32],
    /// Verified against when the user does not exist, so a wrong name costs
    /// as long as a wrong password.
    decoy: Hash,
}

impl Users {
    /// Checks credentials against `file`.
    pub fn new(file: UsersFile) -> Self {
        Self {
            file,
            verified: Mutex::new(HashMap::new()),
            cache_key: random_bytes(),
            decoy: hash_secret(&generate_password()),
        }
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.file.users.len()
    }

    /// True when there are no users.
    pub fn is_empty(&self) -> bool {
        self.file.users.is_empty()
    }

    /// The principal of user `name`, authenticated `via`.
    pub fn principal(&self, name: &str, via: Via) -> Option<Principal> {
        let user = self.file.users.iter().find(|u| u.name == name)?;
        Some(Principal {
            name: user.name.clone(),
            role: user.role,
            via,
            customers: user.customers.clone(),
            segments: user.segments.clone(),
        })
    }

    /// A fingerprint of user `name`'s password as the file holds it (salted,
    /// so a password set again differs): a session opened under one lasts
    /// only while it stays, so a changed password, or the user removed and
    /// added again, ends the sessions opened before.
    pub fn password_stamp(&self, name: &str) -> Option<[u8; 32]> {
        use blake2::Digest;
        let user = self.file.users.iter().find(|u| u.name == name)?;
        let hash = user.password_hash.as_ref()?;
        Some(blake2::Blake2s256::digest(hash.0.as_bytes()).into())
    }

    /// True when user `name` is in the file.
    pub fn has(&self, name: &str) -> bool {
        self.file.users.iter().any(|u| u.name == name)
    }

    /// The user whose password this is; `None` for a wrong name or password
    /// (alike, in time too).
    pub fn check_password(&self, name: &str, password: &str) -> Option<Principal> {
        let user = self.file.users.iter().find(|u| u.name == name);
        let hash = user
            .and_then(|u| u.password_hash.as_ref())
            .unwrap_or(&self.decoy);
        let ok = verify(password, hash);
        match user {
            Some(u) if ok && u.password_hash.is_some() => self.principal(&u.name, Via::Session),
            _ => None,
        }
    }

    /// The user a bearer token belongs to, and the token's id.
    /// An argon2 check unless the token was checked before
    /// ([`Users::cached_token`]): run it off the async threads.
    pub fn check_token(&self, token: &str) -> Option<(Principal, String)> {
        if let Some(found) = self.cached_token(token) {
            return found;
        }
        let (id, secret) = token.strip_prefix(TOKEN_PREFIX)?.split_once('_')?;
        let found = (self.file.users.iter())
            .find_map(|u| u.tokens.iter().find(|t| t.id == id).map(|t| (u, &t.hash)));
        // An unknown id costs the same check as a wrong secret: the time
        // taken does not tell which token ids exist.
        let hash = found.map_or(&self.decoy, |(_, hash)| hash);
        let user = match (verify(secret, hash), found) {
            (true, Some((user, _))) => user,
            _ => return None,
        };
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if verified.len() >= TOKEN_CACHE {
            verified.clear();
        }
        verified.insert(
            self.cache_key_of(token),
            (user.name.clone(), id.to_string()),
        );
        drop(verified);
        self.principal(&user.name, Via::Token)
            .map(|p| (p, id.to_string()))
    }

    /// The user of a token checked before, at once: `Some(None)` for one
    /// whose user is gone; `None` when it was not checked (or failed).
    pub fn cached_token(&self, token: &str) -> Option<Option<(Principal, String)>> {
        let key = self.cache_key_of(token);
        let cached = (self.verified.lock().unwrap_or_else(|e| e.into_inner()))
            .get(&key)
            .cloned();
        cached.map(|(name, id)| self.principal(&name, Via::Token).map(|p| (p, id)))
    }

    fn cache_key_of(&self, token: &str) -> [u8; 32] {
        use blake2::digest::Mac;
        let mut mac =
            blake2::Blake2bMac::<blake2::digest::consts::U32>::new_from_slice(&self.cache_key)
                .expect("a 32-byte key fits");
        mac.update(token.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, role: Role) -> UserEntry {
        UserEntry {
            name: name.into(),
            role,
            customers: Vec::new(),
            segments: Vec::new(),
            password_hash: None,
            tokens: Vec::new(),
        }
    }

    #[test]
    fn passwords_and_tokens_are_stored_hashed_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        let mut file = UsersFile::load(&path, true).unwrap();
        let password = "correct horse battery staple";
        file.add(
            &path,
            UserEntry {
                password_hash: Some(hash_secret(password)),
                customers: vec!["acme".into()],
                ..entry("alice", Role::Csm)
            },
            false,
        )
        .unwrap();
        let token = file.new_token(&path, "alice", Some("ci".into())).unwrap();
        file.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains(password) && !text.contains(&token[12..]),
            "{text}"
        );
        assert!(text.contains("$argon2id$"), "{text}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(
            !format!("{file:?}").contains("argon2id"),
            "Debug hides hashes"
        );

        let users = Users::new(UsersFile::load(&path, false).unwrap());
        let alice = users.check_password("alice", password).unwrap();
        assert_eq!(
            (alice.role, alice.customers.as_slice()),
            (Role::Csm, &["acme".to_string()][..])
        );
        assert!(users.check_password("alice", "wrong").is_none());
        assert!(users.check_password("mallory", password).is_none());
        let (by_token, _) = users.check_token(&token).unwrap();
        assert_eq!(by_token.name, "alice");
        // The second time from the cache.
        assert!(users.check_token(&token).is_some());
        assert!(users.check_token(&format!("{token}x")).is_none());
        assert!(users.check_token("fp_nope_nope").is_none());
        assert!(users.check_token("Bearer").is_none());

        let err = file
            .add(&path, entry("alice", Role::Admin), false)
            .unwrap_err();
        assert!(err.to_string().contains("--replace"), "{err}");
        for replace in [false, true] {
            let err = (file.add(&path, entry("Alice", Role::Admin), replace)).unwrap_err();
            assert!(err.to_string().contains("only in case"), "{err}");
        }
        file.add(&path, entry("alice", Role::Admin), true).unwrap();
        assert_eq!(
            file.users[0].tokens.len(),
            1,
            "a replaced user keeps its tokens"
        );
        let err = file.new_token(&path, "bob", None).unwrap_err();
        assert!(err.to_string().contains("no user `bob`"), "{err}");
    }

    #[test]
    fn a_damaged_file_names_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        std::fs::write(
            &path,
            "[[user]]\nname = \"a\"\nrole = \"admin\"\npassword_hash = \"plain\"\n",
        )
        .unwrap();
        let err = UsersFile::load(&path, false).unwrap_err().to_string();
        assert!(err.contains("user[0].password_hash"), "{err}");
        std::fs::write(&path, "[[user]]\nname = \"a\"\nrole = \"root\"\n").unwrap();
        let err = UsersFile::load(&path, false).unwrap_err().to_string();
        assert!(err.contains("users.toml:3:"), "{err}");
        std::fs::write(&path, "[[user]]\nname = \"a b\"\nrole = \"admin\"\n").unwrap();
        let err = UsersFile::load(&path, false).unwrap_err().to_string();
        assert!(err.contains("user[0].name"), "{err}");
        assert!(UsersFile::load(&dir.path().join("none.toml"), false).is_err());
    }
}
