//! Checks of values the binary uses after loading, with errors located in
//! the file like the others: `listen_address`'s form, and a key the service
//! could not use at start (an address already in use).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

use toml_edit::ImDocument;

use crate::reader::{Source, TableReader};
use crate::ConfigError;

/// An error about the global `key` of the configuration file at `path`,
/// found after loading: the file is read again to name the key's line (no
/// line if it cannot be read any more).
pub fn key_error(path: &Path, key: &str, message: impl Into<String>) -> ConfigError {
    let line = std::fs::read_to_string(path).ok().and_then(|text| {
        let document = ImDocument::parse(text.as_str()).ok()?;
        let source = Source::new(path, &text);
        TableReader::root(&source, document.as_table()).line_of(key)
    });
    ConfigError::new(path, message).at_line(line).for_key(key)
}

/// What to write instead of a wrong `listen_address`.
pub const LISTEN_ADDRESS_HINT: &str =
    "write \"host:port\", such as \"127.0.0.1:9252\" (this machine only, recommended) \
     or the address of a private interface; the port defaults to 9252";

/// Whether `address` is a `listen_address` gitlab-runner would accept:
/// `host:port`, `host`, `:port`, `[ipv6]:port`, `[ipv6]` or a bare IPv6
/// address, where host is an IPv4 address or a DNS name and port a number
/// up to 65535. The error says what is wrong.
pub fn check_listen_address(address: &str) -> Result<(), String> {
    let address = address.trim();
    if address.is_empty() {
        return Err("empty address".to_owned());
    }
    if address.parse::<Ipv6Addr>().is_ok() {
        return Ok(());
    }
    let port = if let Some(rest) = address.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err(format!("{address:?} has no closing `]`"));
        };
        if host.parse::<Ipv6Addr>().is_err() {
            return Err(format!("{host:?} is not an IPv6 address"));
        }
        match after {
            "" => return Ok(()),
            after => match after.strip_prefix(':') {
                Some(port) => port,
                None => return Err(format!("{address:?}: expected `:port` after `]`")),
            },
        }
    } else {
        let (host, port) = address.rsplit_once(':').unwrap_or((address, ""));
        if !host.is_empty() && host.parse::<Ipv4Addr>().is_err() && !is_dns_name(host) {
            return Err(format!("{host:?} is neither an IP address nor a host name"));
        }
        port
    };
    if !port.is_empty() && port.parse::<u16>().is_err() {
        return Err(format!("port {port:?} is not a number from 0 to 65535"));
    }
    Ok(())
}

fn is_dns_name(host: &str) -> bool {
    host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_of_gitlab_runner_are_accepted() {
        for address in [
            "127.0.0.1:9252",
            "127.0.0.1",
            ":9252",
            "0.0.0.0:",
            "localhost:8080",
            "metrics.internal",
            "[::1]:9252",
            "[::]",
            "::1",
            "127.0.0.1:0",
        ] {
            assert_eq!(check_listen_address(address), Ok(()), "{address}");
        }
    }

    #[test]
    fn malformed_listen_addresses_say_what_is_wrong() {
        for (address, expected) in [
            ("127.0.0.1:99999", "port \"99999\""),
            ("127.0.0.1:http", "port \"http\""),
            (
                "http://127.0.0.1:9252",
                "neither an IP address nor a host name",
            ),
            ("bad host:1", "neither an IP address nor a host name"),
            ("[::1:9252", "no closing"),
            ("[nope]:1", "not an IPv6 address"),
            ("[::1]9252", "expected `:port`"),
            ("host\n:1", "neither"),
        ] {
            let error = check_listen_address(address).expect_err(address);
            assert!(error.contains(expected), "{address}: {error}");
        }
    }

    #[test]
    fn key_errors_name_the_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            "concurrent = 2\n\nlisten_address = \"127.0.0.1:1\"\n",
        )
        .expect("write");
        let error = key_error(&path, "listen_address", "address in use");
        assert_eq!(error.line(), Some(3));
        assert_eq!(
            error.to_string(),
            format!("{}:3: key `listen_address`: address in use", path.display())
        );
        let error = key_error(&dir.path().join("gone.toml"), "listen_address", "x");
        assert_eq!(error.line(), None);
    }
}
