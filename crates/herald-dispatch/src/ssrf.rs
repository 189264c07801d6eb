//! Server-side request forgery guards: webhook destinations must not point Herald at
//! its own machine, its private network or a cloud metadata endpoint.
//!
//! The check runs twice: [`check_destination`] when a webhook is registered (a clear
//! error for the user), and again at send time in the dispatcher's DNS resolver,
//! against the addresses actually connected to, so a hostname that later starts
//! resolving to `127.0.0.1` (DNS rebinding) is still refused.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The config setting that lifts the private-address check, named in every refusal.
pub const ALLOW_SETTING: &str = "webhooks.allow_private_destinations";

/// Why a destination URL is not acceptable. The messages are shown to API users.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SsrfError {
    #[error("`{url}` is not a valid URL: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("URL scheme `{0}` is not allowed; use http or https")]
    Scheme(String),
    #[error("URL has no host")]
    NoHost,
    #[error("URL must not contain a username or password")]
    UserInfo,
    /// An IP address (literal, or one a hostname resolved to) in a forbidden range.
    #[error("destination {ip} is {reason}; set {ALLOW_SETTING} to allow it")]
    ForbiddenAddress { ip: IpAddr, reason: &'static str },
    #[error(
        "destination {host} resolves to {ip}, which is {reason}; set {ALLOW_SETTING} to allow it"
    )]
    ForbiddenHost {
        host: String,
        ip: IpAddr,
        reason: &'static str,
    },
    #[error("could not resolve host {host}: {reason}")]
    Resolve { host: String, reason: String },
    #[error("host {host} resolves to no addresses")]
    NoAddresses { host: String },
}

/// Whether `ip` is one Herald refuses to send to unless private destinations are allowed.
pub fn is_forbidden(ip: IpAddr) -> bool {
    forbidden_reason(ip).is_some()
}

/// Why `ip` is forbidden (`"a loopback address"`, …), or `None` for a public address.
pub fn forbidden_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => v6_reason(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    (u32::from(ip) & mask) == (u32::from(Ipv4Addr::from(net)) & mask)
}

fn v4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    const RANGES: &[([u8; 4], u32, &str)] = &[
        ([0, 0, 0, 0], 8, "an unspecified (0.0.0.0/8) address"),
        ([127, 0, 0, 0], 8, "a loopback address"),
        ([10, 0, 0, 0], 8, "a private address"),
        ([172, 16, 0, 0], 12, "a private address"),
        ([192, 168, 0, 0], 16, "a private address"),
        (
            [169, 254, 169, 254],
            32,
            "the cloud metadata address (link-local)",
        ),
        ([169, 254, 0, 0], 16, "a link-local address"),
        (
            [100, 64, 0, 0],
            10,
            "a carrier-grade NAT (100.64.0.0/10) address",
        ),
        (
            [192, 0, 0, 0],
            24,
            "a reserved (IETF protocol assignments) address",
        ),
        ([192, 0, 2, 0], 24, "a documentation address"),
        ([198, 51, 100, 0], 24, "a documentation address"),
        ([203, 0, 113, 0], 24, "a documentation address"),
        ([198, 18, 0, 0], 15, "a benchmarking address"),
        ([224, 0, 0, 0], 4, "a multicast address"),
        ([255, 255, 255, 255], 32, "the broadcast address"),
        ([240, 0, 0, 0], 4, "a reserved address"),
    ];
    RANGES
        .iter()
        .find(|(net, prefix, _)| in_v4(ip, *net, *prefix))
        .map(|(_, _, reason)| *reason)
}

fn v6_reason(ip: Ipv6Addr) -> Option<&'static str> {
    let seg = ip.segments();
    if ip.is_unspecified() {
        return Some("an unspecified address");
    }
    if ip.is_loopback() {
        return Some("a loopback address");
    }
    // IPv4-mapped (::ffff:a.b.c.d): judged as the IPv4 address it carries.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_reason(v4);
    }
    // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) embed an IPv4 address that may be private.
    if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2..6].iter().all(|s| *s == 0) {
        let v4 = Ipv4Addr::new(
            (seg[6] >> 8) as u8,
            seg[6] as u8,
            (seg[7] >> 8) as u8,
            seg[7] as u8,
        );
        return v4_reason(v4);
    }
    if seg[0] == 0x2002 {
        let v4 = Ipv4Addr::new(
            (seg[1] >> 8) as u8,
            seg[1] as u8,
            (seg[2] >> 8) as u8,
            seg[2] as u8,
        );
        if let Some(reason) = v4_reason(v4) {
            return Some(reason);
        }
    }
    // The deprecated IPv4-compatible block ::/96 (e.g. ::127.0.0.1).
    if seg[..6].iter().all(|s| *s == 0) {
        return Some("a reserved (IPv4-compatible) address");
    }
    if seg[0] & 0xffc0 == 0xfe80 {
        return Some("a link-local address");
    }
    if seg[0] & 0xffc0 == 0xfec0 {
        return Some("a site-local address");
    }
    if seg[0] & 0xfe00 == 0xfc00 {
        return Some("a unique local (private) address");
    }
    if seg[0] & 0xff00 == 0xff00 {
        return Some("a multicast address");
    }
    if seg[0] == 0x2001 && seg[1] == 0x0db8 {
        return Some("a documentation address");
    }
    if seg[0] == 0x0100 && seg[1..4].iter().all(|s| *s == 0) {
        return Some("a reserved (discard-only) address");
    }
    None
}

/// Refuses `ip` unless it is public or `allow_private` is set.
pub(crate) fn check_ip(ip: IpAddr, allow_private: bool) -> Result<(), SsrfError> {
    if allow_private {
        return Ok(());
    }
    match forbidden_reason(ip) {
        Some(reason) => Err(SsrfError::ForbiddenAddress { ip, reason }),
        None => Ok(()),
    }
}

/// Checks the shape of a destination URL (no network): http/https, a host, no userinfo.
pub fn check_url_shape(url: &str) -> Result<url::Url, SsrfError> {
    let parsed = url::Url::parse(url).map_err(|e| SsrfError::InvalidUrl {
        url: url.to_owned(),
        reason: e.to_string(),
    })?;
    match parsed.scheme() {
        "http" | "https" => {}
        other => return Err(SsrfError::Scheme(other.to_owned())),
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(SsrfError::UserInfo);
    }
    match parsed.host() {
        None => return Err(SsrfError::NoHost),
        Some(url::Host::Domain("")) => return Err(SsrfError::NoHost),
        Some(_) => {}
    }
    Ok(parsed)
}

/// Resolves `host` and keeps the addresses Herald may connect to: all of them when
/// `allow_private`, else only public ones (an error naming the first refused address
/// when none is left).
pub(crate) async fn resolve_allowed(
    host: &str,
    port: u16,
    allow_private: bool,
) -> Result<Vec<std::net::SocketAddr>, SsrfError> {
    // `[::1]`-style names never reach here from reqwest, but be lenient.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((bare, port))
        .await
        .map_err(|e| SsrfError::Resolve {
            host: host.to_owned(),
            reason: e.to_string(),
        })?
        .collect();
    if addrs.is_empty() {
        return Err(SsrfError::NoAddresses {
            host: host.to_owned(),
        });
    }
    if allow_private {
        return Ok(addrs);
    }
    let mut first_refused = None;
    let allowed: Vec<_> = addrs
        .into_iter()
        .filter(|a| match forbidden_reason(a.ip()) {
            None => true,
            Some(reason) => {
                first_refused.get_or_insert((a.ip(), reason));
                false
            }
        })
        .collect();
    match (allowed.is_empty(), first_refused) {
        (true, Some((ip, reason))) => Err(SsrfError::ForbiddenHost {
            host: host.to_owned(),
            ip,
            reason,
        }),
        (true, None) => Err(SsrfError::NoAddresses {
            host: host.to_owned(),
        }),
        (false, _) => Ok(allowed),
    }
}

/// Parses and checks a destination URL at registration: http/https only, has a host,
/// no userinfo; an IP-literal host must not be forbidden (unless `allow_private`);
/// a hostname is resolved and every address it resolves to must be allowed.
pub async fn check_destination(url: &str, allow_private: bool) -> Result<url::Url, SsrfError> {
    let parsed = check_url_shape(url)?;
    match parsed.host() {
        Some(url::Host::Ipv4(ip)) => check_ip(IpAddr::V4(ip), allow_private)?,
        Some(url::Host::Ipv6(ip)) => check_ip(IpAddr::V6(ip), allow_private)?,
        Some(url::Host::Domain(host)) => {
            let port = parsed.port_or_known_default().unwrap_or(443);
            // A name that does not resolve now is accepted: DNS may be down or the record not
            // published yet, and every delivery checks the address it actually connects to.
            let addrs = match tokio::net::lookup_host((host, port)).await {
                Ok(addrs) => addrs.collect::<Vec<_>>(),
                Err(e) => {
                    tracing::info!(host, error = %e, "webhook host does not resolve yet; it is checked again at delivery");
                    Vec::new()
                }
            };
            if !allow_private {
                // Every address must be public: a name that resolves to both a public
                // and a private address is refused outright at registration.
                for a in &addrs {
                    if let Some(reason) = forbidden_reason(a.ip()) {
                        return Err(SsrfError::ForbiddenHost {
                            host: host.to_owned(),
                            ip: a.ip(),
                            reason,
                        });
                    }
                }
            }
        }
        None => return Err(SsrfError::NoHost),
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forbidden_ranges() {
        for s in [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "127.255.255.254",
            "10.0.0.1",
            "10.255.255.255",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.0.1",
            "100.64.0.1",
            "100.127.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "198.18.0.1",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fe80::1",
            "febf::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "2002:7f00:1::1",
        ] {
            assert!(is_forbidden(ip(s)), "{s} should be forbidden");
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        for s in [
            "93.184.216.34",
            "8.8.8.8",
            "1.1.1.1",
            "172.15.255.255",
            "172.32.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "169.253.255.255",
            "11.0.0.1",
            "2606:2800:220:1:248:1893:25c8:1946",
            "2001:4860:4860::8888",
            "::ffff:93.184.216.34",
            "64:ff9b::808:808",
        ] {
            assert!(!is_forbidden(ip(s)), "{s} should be allowed");
        }
    }

    #[test]
    fn reasons_are_specific() {
        assert_eq!(
            forbidden_reason(ip("127.0.0.1")),
            Some("a loopback address")
        );
        assert_eq!(forbidden_reason(ip("10.1.1.1")), Some("a private address"));
        assert_eq!(
            forbidden_reason(ip("fe80::1")),
            Some("a link-local address")
        );
        assert_eq!(
            check_ip(ip("127.0.0.1"), false).unwrap_err().to_string(),
            "destination 127.0.0.1 is a loopback address; set webhooks.allow_private_destinations to allow it"
        );
        assert!(check_ip(ip("127.0.0.1"), true).is_ok());
    }

    #[tokio::test]
    async fn check_destination_rules() {
        let ok = check_destination("https://93.184.216.34/hooks", false)
            .await
            .unwrap();
        assert_eq!(ok.path(), "/hooks");
        assert!(
            matches!(check_destination("ftp://93.184.216.34/", false).await, Err(SsrfError::Scheme(s)) if s == "ftp")
        );
        assert!(matches!(
            check_destination("not a url", false).await,
            Err(SsrfError::InvalidUrl { .. })
        ));
        assert_eq!(
            check_destination("https://u:p@93.184.216.34/", false).await,
            Err(SsrfError::UserInfo)
        );
        assert_eq!(
            check_destination("https://user@93.184.216.34/", false).await,
            Err(SsrfError::UserInfo)
        );
        let err = check_destination("http://127.0.0.1:9000/x", false)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("loopback"), "{err}");
        let err = check_destination("http://[::1]:9000/x", false)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("loopback"), "{err}");
        let err = check_destination("http://169.254.169.254/latest/meta-data", false)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("metadata"), "{err}");
        assert!(check_destination("http://127.0.0.1:9000/x", true)
            .await
            .is_ok());
        // `localhost` resolves (from /etc/hosts, no network) to loopback only.
        let err = check_destination("http://localhost:9000/x", false)
            .await
            .unwrap_err();
        assert!(matches!(err, SsrfError::ForbiddenHost { .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with("destination localhost resolves to "),
            "{err}"
        );
        assert!(check_destination("http://localhost:9000/x", true)
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn resolver_filters_forbidden_addresses() {
        let err = resolve_allowed("localhost", 0, false).await.unwrap_err();
        assert!(err.to_string().contains("loopback"), "{err}");
        let addrs = resolve_allowed("localhost", 0, true).await.unwrap();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()));
    }

    #[tokio::test]
    async fn a_host_that_does_not_resolve_yet_is_accepted_at_registration() {
        // `.invalid` never resolves (RFC 2606); the delivery-time resolver still checks it.
        let url = check_destination("https://hooks.example.invalid/x", false)
            .await
            .unwrap();
        assert_eq!(url.host_str(), Some("hooks.example.invalid"));
        assert!(check_destination("http://localhost:9/x", false)
            .await
            .is_err());
    }
}
