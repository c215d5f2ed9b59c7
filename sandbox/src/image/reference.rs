//! Image references, named the way skopeo and podman name them:
//! `docker://HOST/REPO@sha256:D` (the `docker://` may be left out),
//! `oci:DIR[:TAG|@sha256:D]`, `oci-archive:FILE[:TAG]`, `docker-archive:FILE`.

use std::fmt;
use std::path::PathBuf;

use super::digest::Digest;

/// Errors from parsing a reference.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)]
pub enum ReferenceError {
    /// A transport pinfold does not know or does not support.
    #[error(
        "unknown transport {transport:?} in {reference:?}: use docker://, oci:, oci-archive: or docker-archive:"
    )]
    UnknownTransport {
        transport: String,
        reference: String,
    },
    /// A reference that does not parse.
    #[error("bad image reference {reference:?}: {why}")]
    Bad { reference: String, why: String },
    /// A registry reference without a digest, and tags were not allowed.
    #[error(
        "{0} names no digest: write REPO@sha256:DIGEST, or pass --allow-tag to resolve the tag once and pin it"
    )]
    MissingDigest(String),
}

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    /// A registry (OCI distribution API).
    Docker {
        /// `host[:port]`, e.g. `127.0.0.1:5000` or `docker.io`.
        host: String,
        /// Repository path, e.g. `library/busybox`.
        repo: String,
        /// A tag, when given.
        tag: Option<String>,
        /// A digest, when given (wins over the tag).
        digest: Option<Digest>,
    },
    /// An OCI image layout directory.
    OciDir {
        /// The directory.
        path: PathBuf,
        /// Tag (`org.opencontainers.image.ref.name`) or digest, if any.
        select: Option<Select>,
    },
    /// A tar of an OCI image layout.
    OciArchive {
        /// The archive.
        path: PathBuf,
        /// Tag, if any.
        select: Option<Select>,
    },
    /// A `docker save` archive.
    DockerArchive {
        /// The archive.
        path: PathBuf,
    },
}

/// Which image of an OCI layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Select {
    /// By `org.opencontainers.image.ref.name`.
    Tag(String),
    /// By manifest digest.
    Digest(Digest),
}

const UNSUPPORTED: &[&str] = &[
    "dir",
    "docker-daemon",
    "containers-storage",
    "ostree",
    "sif",
    "tarball",
];

impl ImageRef {
    /// Parses a reference.
    pub fn parse(s: &str) -> Result<ImageRef, ReferenceError> {
        let bad = |why: &str| ReferenceError::Bad {
            reference: s.to_owned(),
            why: why.to_owned(),
        };
        if let Some((scheme, rest)) = s.split_once("://") {
            if scheme != "docker" {
                return Err(ReferenceError::UnknownTransport {
                    transport: scheme.to_owned(),
                    reference: s.to_owned(),
                });
            }
            return parse_docker(s, rest);
        }
        if let Some((transport, rest)) = s.split_once(':') {
            match transport {
                "oci" | "oci-archive" => {
                    let (path, select) = split_select(rest);
                    if path.is_empty() {
                        return Err(bad("the path is empty"));
                    }
                    let select = select.map_err(|e| bad(&e.to_string()))?;
                    let path = PathBuf::from(path);
                    return Ok(if transport == "oci" {
                        ImageRef::OciDir { path, select }
                    } else {
                        ImageRef::OciArchive { path, select }
                    });
                }
                "docker-archive" => {
                    if rest.is_empty() {
                        return Err(bad("the path is empty"));
                    }
                    return Ok(ImageRef::DockerArchive {
                        path: PathBuf::from(rest),
                    });
                }
                t if UNSUPPORTED.contains(&t) => {
                    return Err(ReferenceError::UnknownTransport {
                        transport: t.to_owned(),
                        reference: s.to_owned(),
                    });
                }
                _ => {}
            }
        }
        parse_docker(s, s)
    }

    /// Like [`ImageRef::parse`], but a registry reference must carry a
    /// digest unless `allow_tag`.
    pub fn parse_pinned(s: &str, allow_tag: bool) -> Result<ImageRef, ReferenceError> {
        let r = ImageRef::parse(s)?;
        if let ImageRef::Docker { digest: None, .. } = &r {
            if !allow_tag {
                return Err(ReferenceError::MissingDigest(r.to_string()));
            }
        }
        Ok(r)
    }

    /// Whether this names a registry.
    pub fn is_registry(&self) -> bool {
        matches!(self, ImageRef::Docker { .. })
    }

    /// The registry's `host[:port]`, for a registry image.
    pub fn registry_host(&self) -> Option<&str> {
        match self {
            ImageRef::Docker { host, .. } => Some(host),
            _ => None,
        }
    }
}

/// `PATH[:TAG|@sha256:D]`: a tag is what follows the last `:` after the last `/`.
fn split_select(rest: &str) -> (&str, Result<Option<Select>, super::digest::DigestError>) {
    if let Some(i) = rest.find("@sha256:") {
        return (
            &rest[..i],
            rest[i + 1..].parse().map(|d| Some(Select::Digest(d))),
        );
    }
    let after_slash = rest.rfind('/').map_or(0, |i| i + 1);
    match rest[after_slash..].rfind(':') {
        Some(j) => {
            let i = after_slash + j;
            (&rest[..i], Ok(Some(Select::Tag(rest[i + 1..].to_owned()))))
        }
        None => (rest, Ok(None)),
    }
}

fn parse_docker(whole: &str, s: &str) -> Result<ImageRef, ReferenceError> {
    let bad = |why: &str| ReferenceError::Bad {
        reference: whole.to_owned(),
        why: why.to_owned(),
    };
    let (name, digest) = match s.split_once('@') {
        Some((n, d)) => (
            n,
            Some(d.parse::<Digest>().map_err(|e| bad(&e.to_string()))?),
        ),
        None => (s, None),
    };
    let after_slash = name.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name[after_slash..].rfind(':') {
        Some(j) => (
            &name[..after_slash + j],
            Some(name[after_slash + j + 1..].to_owned()),
        ),
        None => (name, None),
    };
    if let Some(t) = &tag {
        let ok = !t.is_empty()
            && t.len() <= 128
            && !t.starts_with(['.', '-'])
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !ok {
            return Err(bad("bad tag"));
        }
    }
    let (host, repo) = match name.split_once('/') {
        Some((h, r)) if h.contains(['.', ':']) || h == "localhost" => (h.to_owned(), r.to_owned()),
        _ if name.contains('/') => ("docker.io".to_owned(), name.to_owned()),
        _ => ("docker.io".to_owned(), format!("library/{name}")),
    };
    let repo_ok = !repo.is_empty()
        && repo.split('/').all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        });
    if !repo_ok || host.is_empty() || host.contains(['/', '@']) {
        return Err(bad(
            "expected [docker://]HOST/REPO@sha256:DIGEST (repository names are lower case)",
        ));
    }
    Ok(ImageRef::Docker {
        host,
        repo,
        tag,
        digest,
    })
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sel = |f: &mut fmt::Formatter<'_>, s: &Option<Select>| match s {
            Some(Select::Tag(t)) => write!(f, ":{t}"),
            Some(Select::Digest(d)) => write!(f, "@{d}"),
            None => Ok(()),
        };
        match self {
            ImageRef::Docker {
                host,
                repo,
                tag,
                digest,
            } => {
                write!(f, "docker://{host}/{repo}")?;
                match (digest, tag) {
                    (Some(d), _) => write!(f, "@{d}"),
                    (None, Some(t)) => write!(f, ":{t}"),
                    (None, None) => Ok(()),
                }
            }
            ImageRef::OciDir { path, select } => {
                write!(f, "oci:{}", path.display())?;
                sel(f, select)
            }
            ImageRef::OciArchive { path, select } => {
                write!(f, "oci-archive:{}", path.display())?;
                sel(f, select)
            }
            ImageRef::DockerArchive { path } => write!(f, "docker-archive:{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn parses_the_transports() {
        let r = ImageRef::parse(&format!("docker://127.0.0.1:5000/a/b@{D}")).unwrap();
        assert_eq!(r.to_string(), format!("docker://127.0.0.1:5000/a/b@{D}"));
        let r = ImageRef::parse(&format!("localhost:5000/b:1.0@{D}")).unwrap();
        assert_eq!(r.to_string(), format!("docker://localhost:5000/b@{D}"));
        let r = ImageRef::parse("busybox").unwrap();
        assert_eq!(r.to_string(), "docker://docker.io/library/busybox");
        assert!(ImageRef::parse_pinned("busybox:1", false).is_err());
        assert!(ImageRef::parse_pinned("busybox:1", true).is_ok());
        assert_eq!(
            ImageRef::parse("oci:/a:b/c:tag").unwrap(),
            ImageRef::OciDir {
                path: "/a:b/c".into(),
                select: Some(Select::Tag("tag".into()))
            }
        );
        assert!(matches!(
            ImageRef::parse(&format!("oci:/x@{D}")).unwrap(),
            ImageRef::OciDir {
                select: Some(Select::Digest(_)),
                ..
            }
        ));
        assert!(matches!(
            ImageRef::parse("ftp://x/y"),
            Err(ReferenceError::UnknownTransport { .. })
        ));
        assert!(matches!(
            ImageRef::parse("dir:/x"),
            Err(ReferenceError::UnknownTransport { .. })
        ));
        assert!(ImageRef::parse("docker://Host/UPPER").is_err());
    }
}
