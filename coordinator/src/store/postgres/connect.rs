//! How the coordinator connects to PostgreSQL: the store's pool and the
//! relay's `LISTEN` connection both read their settings here, so both
//! speak TLS, or not, alike.
//!
//! TLS follows libpq's `sslmode` words in the URL's query, but only the
//! one that protects anything: `sslmode=verify-full` encrypts and checks
//! that the server's certificate is signed by `sslrootcert` (a PEM file,
//! or `system` for the system's CA certificates, as libpq 16 reads it) and
//! names the host connected to. `require` and `verify-ca` are refused with
//! a line that says to use `verify-full`: both let a machine in the middle
//! that holds any certificate (`require`), or any certificate of that CA
//! (`verify-ca`), read the job secrets' names, tokens' hashes and logs.
//! Without `sslmode`, or with `disable` or `prefer`, the connection is
//! plain TCP, as before (`prefer` never falls back silently to an
//! unchecked certificate here).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::store::{Result, StoreError};

/// How long connecting to the database may take.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The connection settings and the TLS connector for `url`.
pub(crate) fn settings(url: &str) -> Result<(tokio_postgres::Config, MakeRustlsConnect)> {
    // The caller's message names the URL (redacted).
    let bad = StoreError::Config;
    let split = Query::split(url).map_err(bad)?;
    let mut config: tokio_postgres::Config = split
        .rest
        .parse()
        .map_err(|e: tokio_postgres::Error| bad(e.to_string()))?;
    let (mode, root) = (split.sslmode, split.sslrootcert);
    // A database out of reach fails a request (503, retry) in seconds
    // rather than holding it; keepalives find a half-open connection.
    config
        .connect_timeout(CONNECT_TIMEOUT)
        .keepalives_idle(Duration::from_secs(30));
    let roots = match (mode.as_deref(), root) {
        (None | Some("disable" | "prefer"), None) => {
            config.ssl_mode(SslMode::Disable);
            rustls::RootCertStore::empty()
        }
        (Some("verify-full"), Some(root)) => {
            config.ssl_mode(SslMode::Require);
            roots(&root).map_err(bad)?
        }
        (Some("verify-full"), None) => {
            return Err(bad(
                "sslmode=verify-full needs sslrootcert=FILE (the CA certificate that signed \
                 the database's, PEM) or sslrootcert=system"
                    .into(),
            ));
        }
        (Some(m @ ("require" | "verify-ca")), _) => {
            return Err(bad(format!(
                "sslmode={m} does not check that the certificate names the database's host: \
                 use sslmode=verify-full with sslrootcert=FILE"
            )));
        }
        (None | Some("disable" | "prefer"), Some(_)) => {
            return Err(bad(
                "sslrootcert is only read with sslmode=verify-full: add it, or drop sslrootcert"
                    .into(),
            ));
        }
        (Some(m), _) => {
            return Err(bad(format!(
                "sslmode={m} is not known: use verify-full (TLS) or disable"
            )));
        }
    };
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bad(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok((config, MakeRustlsConnect::new(tls)))
}

/// The URL's TLS options taken out, and the URL without them.
struct Query {
    /// The URL as given, less `sslmode` and `sslrootcert`.
    rest: String,
    sslmode: Option<String>,
    sslrootcert: Option<String>,
}

impl Query {
    /// Splits `url` as tokio-postgres reads it: the credentials end at the
    /// first `@`, the options start at the next `?`, pairs are split at `&`
    /// and `=`, keys and values percent-decoded. Every other pair is kept
    /// byte for byte, so tokio-postgres stays the one parser of the rest
    /// (a re-encoding URL library would turn `%20` into `+`, and refuses
    /// URLs it accepts: several `host:port`, an empty host with a socket
    /// path in `host=`). A repeated TLS option is refused: which one wins
    /// would decide whether the connection is encrypted.
    fn split(url: &str) -> std::result::Result<Query, String> {
        let cut = Cut::new(url);
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| "an option of the URL is not UTF-8 once decoded".to_string())
        };
        let (mut kept, mut sslmode, mut sslrootcert) = (Vec::new(), None, None);
        for pair in cut.options() {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let slot = match decode(key)?.as_str() {
                "sslmode" => &mut sslmode,
                "sslrootcert" => &mut sslrootcert,
                _ => {
                    kept.push(pair);
                    continue;
                }
            };
            if slot.replace(decode(value)?).is_some() {
                return Err(format!("{} is given twice: give it once", decode(key)?));
            }
        }
        Ok(Query {
            rest: cut.with_options(cut.creds, &kept),
            sslmode,
            sslrootcert,
        })
    }
}

/// A URL cut where tokio-postgres cuts it: the credentials end at the
/// first `@` after the scheme, the options start at the next `?` and are
/// pairs split at `&`. Reading the TLS options and hiding the password
/// both go through it, so neither can read a URL otherwise than the driver.
struct Cut<'a> {
    /// Up to and with `://`.
    scheme: &'a str,
    /// `USER[:PASSWORD]`, without the `@`.
    creds: Option<&'a str>,
    /// Hosts, ports and database.
    base: &'a str,
    /// What follows the `?`.
    query: Option<&'a str>,
}

impl<'a> Cut<'a> {
    fn new(url: &'a str) -> Cut<'a> {
        let (scheme, rest) = url.split_at(url.find("://").map_or(0, |s| s + 3));
        let (creds, rest) = match rest.split_once('@') {
            Some((creds, rest)) => (Some(creds), rest),
            None => (None, rest),
        };
        let (base, query) = match rest.split_once('?') {
            Some((base, query)) => (base, Some(query)),
            None => (rest, None),
        };
        Cut {
            scheme,
            creds,
            base,
            query,
        }
    }

    /// The option pairs, as written.
    fn options(&self) -> impl Iterator<Item = &'a str> {
        self.query.into_iter().flat_map(|q| q.split('&'))
    }

    /// The URL again, with `creds` and only the option pairs `kept`.
    fn with_options(&self, creds: Option<&str>, kept: &[&str]) -> String {
        let mut url = self.scheme.to_string();
        if let Some(c) = creds {
            url.push_str(c);
            url.push('@');
        }
        url.push_str(self.base);
        if !kept.is_empty() {
            url.push('?');
            url.push_str(&kept.join("&"));
        }
        url
    }
}

/// `url` without its password (in the user part or a `password=` option),
/// for messages.
pub fn redact(url: &str) -> String {
    let cut = Cut::new(url);
    let user = cut.creds.map(|c| c.split(':').next().unwrap_or(""));
    let kept: Vec<&str> = cut
        .options()
        .filter(|p| {
            let key = p.split('=').next().unwrap_or("");
            percent_encoding::percent_decode_str(key).decode_utf8_lossy() != "password"
        })
        .collect();
    cut.with_options(user, &kept)
}

/// The CA certificates `sslrootcert` names: a PEM file, or `system`.
fn roots(root: &str) -> std::result::Result<rustls::RootCertStore, String> {
    let mut store = rustls::RootCertStore::empty();
    let certs = if root == "system" {
        let found = rustls_native_certs::load_native_certs();
        if found.certs.is_empty() {
            return Err(format!(
                "sslrootcert=system: no CA certificates found on this machine ({} errors); \
                 name a PEM file instead",
                found.errors.len()
            ));
        }
        found.certs
    } else {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let path = Path::new(root);
        CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
            .map_err(|e| {
                format!(
                    "sslrootcert {}: {e} (a PEM file of CA certificates is needed)",
                    path.display()
                )
            })?
    };
    let (added, _) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!(
            "sslrootcert {root}: no CA certificate in it could be used"
        ));
    }
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(url: &str) -> String {
        match settings(url) {
            Ok(_) => panic!("{url} was taken"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn only_verify_full_turns_tls_on() {
        let (c, _) = settings("postgres://u:pw@db:5432/ci").unwrap();
        assert_eq!(c.get_ssl_mode(), SslMode::Disable);
        let (c, _) = settings("postgres://u@db/ci?sslmode=prefer").unwrap();
        assert_eq!(c.get_ssl_mode(), SslMode::Disable);
        for mode in ["require", "verify-ca"] {
            let e = refused(&format!(
                "postgres://u:pw@db/ci?sslmode={mode}&sslrootcert=/x"
            ));
            assert!(e.contains("use sslmode=verify-full"), "{e}");
            assert!(!e.contains("pw"), "the password is shown: {e}");
        }
        let e = refused("postgres://u@db/ci?sslmode=verify-full");
        assert!(e.contains("needs sslrootcert"), "{e}");
        let e = refused("postgres://u@db/ci?sslmode=allow");
        assert!(e.contains("not known"), "{e}");
        let e = refused("postgres://u@db/ci?sslrootcert=/x");
        assert!(e.contains("only read with sslmode=verify-full"), "{e}");
    }

    #[test]
    fn a_bad_sslrootcert_is_named_and_never_quoted() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = refused(&format!(
            "postgres://u@db/ci?sslmode=verify-full&sslrootcert={}",
            missing.display()
        ));
        assert!(e.contains(&missing.display().to_string()), "{e}");
        let not_pem = dir.path().join("ca.pem");
        std::fs::write(&not_pem, "password=hunter2\n").unwrap();
        let e = refused(&format!(
            "postgres://u@db/ci?sslmode=verify-full&sslrootcert={}",
            not_pem.display()
        ));
        assert!(e.contains("ca.pem") && !e.contains("hunter2"), "{e}");
    }

    #[test]
    fn the_other_options_reach_the_driver() {
        let (c, _) = settings(
            "postgres://u@db:6543/ci?application_name=pinfold-ci&sslmode=verify-full\
             &sslrootcert=system",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.get_application_name(), Some("pinfold-ci"));
        assert_eq!(c.get_ports(), [6543]);
        assert_eq!(c.get_ssl_mode(), SslMode::Require);
    }

    #[test]
    fn the_rest_of_the_url_reaches_the_driver_as_written() {
        let q = Query::split(
            "postgres://u:p%20w?d@pg1:5432,pg2:5433/ci?options=-c%20statement_timeout%3D5s\
             &sslmode=verify-full&application_name=a+b&ssl%72ootcert=/etc/ca%2B1.pem",
        )
        .unwrap();
        assert_eq!(
            q.rest,
            "postgres://u:p%20w?d@pg1:5432,pg2:5433/ci?options=-c%20statement_timeout%3D5s\
             &application_name=a+b"
        );
        assert_eq!(q.sslmode.as_deref(), Some("verify-full"));
        assert_eq!(q.sslrootcert.as_deref(), Some("/etc/ca+1.pem"));
        let (c, _) = settings("postgres://u@/ci?host=/run/postgresql").unwrap();
        assert_eq!(c.get_dbname(), Some("ci"));
        let (c, _) = settings("postgres://u@pg1:5432,pg2:5433/ci").unwrap();
        assert_eq!(c.get_ports(), [5432, 5433]);
    }

    #[test]
    fn a_repeated_tls_option_is_refused() {
        let e =
            refused("postgres://u@db/ci?sslmode=verify-full&sslrootcert=system&sslmode=disable");
        assert!(e.contains("sslmode is given twice"), "{e}");
    }

    #[test]
    fn messages_show_no_password() {
        let shown = redact("postgres://ci:hunter2@db:5432/ci?password=hunter3&application_name=a");
        assert!(!shown.contains("hunter"), "{shown}");
        assert!(shown.contains("ci@db:5432/ci") && shown.contains("application_name=a"));
    }
}
