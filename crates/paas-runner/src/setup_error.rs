//! [`SetupError`], shared by `setup` and `credentials` (which `setup` runs).

/// A configuration that can never work, found once the catalogue is known
/// or the credentials were checked. The binary exits with status 2 on it.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct SetupError {
    pub path: String,
    pub message: String,
}
