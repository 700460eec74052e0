//! Registry credentials.

use oci_client::secrets::RegistryAuth;

/// The credentials a pull or push presents to a registry. A registry that answers with a
/// bearer challenge gets them exchanged for a token at its token service; one that asks for
/// basic auth gets them directly.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Auth {
    /// No credentials (a token service may still hand out an anonymous token).
    #[default]
    Anonymous,
    /// A user name and password (or an access token as the password).
    Basic {
        /// The user name.
        username: String,
        /// The password or token.
        password: String,
    },
    /// A registry token used as is (Docker's `registrytoken`).
    Bearer(String),
}

impl Auth {
    pub(crate) fn to_registry_auth(&self) -> RegistryAuth {
        match self {
            Auth::Anonymous => RegistryAuth::Anonymous,
            Auth::Basic { username, password } => {
                RegistryAuth::Basic(username.clone(), password.clone())
            }
            Auth::Bearer(token) => RegistryAuth::Bearer(token.clone()),
        }
    }
}

impl std::fmt::Debug for Auth {
    /// Never prints a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Anonymous => f.write_str("Anonymous"),
            Auth::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Auth::Bearer(_) => f.write_str("Bearer(***)"),
        }
    }
}
