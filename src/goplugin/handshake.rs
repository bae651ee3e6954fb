//! The go-plugin handshake: the magic cookie, app-version negotiation and the one
//! line a plugin prints on stdout to say where it listens.
//!
//! Both sides use this module: the plugin formats the line, the host parses it.
//! The grammar (`docs/PROTOCOL.md` has the prose):
//!
//! ```text
//! CORE|APP|NETWORK|ADDRESS|PROTOCOL[|SERVER_CERT[|MULTIPLEX]]\n
//! ```
//!
//! Invariant: [`Handshake::parse`] accepts only what loopp can connect to: core
//! version 1, protocol `grpc`, network `unix` (absolute path) or `tcp` (a loopback
//! address). Anything else is a [`HandshakeError`] that names the offending field.

use std::fmt;
use std::net::SocketAddr;

/// The go-plugin core protocol version; the only one that exists.
pub const CORE_PROTOCOL_VERSION: u32 = 1;

/// What a go-plugin plugin prints on stderr when its magic cookie is missing or
/// wrong, word for word, so operators recognise it.
pub const NOT_A_PLUGIN_MESSAGE: &str =
    "This binary is a plugin. These are not meant to be executed directly.\n\
Please execute the program that consumes these plugins, which will\n\
load any plugins automatically\n";

/// A magic cookie: an environment variable the host sets so the plugin knows it
/// was launched by a host of the right kind. It is a UX check, not security.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cookie {
    /// Environment variable name.
    pub key: String,
    /// Expected value.
    pub value: String,
}

impl Cookie {
    /// A cookie from a key and value.
    pub fn new(key: &str, value: &str) -> Cookie {
        Cookie {
            key: key.to_string(),
            value: value.to_string(),
        }
    }

    /// The cookie of the Go LOOP relayer plugins (app version 0).
    pub fn relayer() -> Cookie {
        Cookie::new(
            "CL_PLUGIN_RELAYER_MAGIC_COOKIE",
            "dae753d4542311b33cf041b930db0150647e806175c2818a0c88a9ab745e45aa",
        )
    }

    /// The cookie of the Go LOOP median plugins (app version 0).
    pub fn median() -> Cookie {
        Cookie::new(
            "CL_PLUGIN_MEDIAN_MAGIC_COOKIE",
            "b12a697e19748cd695dd1690c09745ee7cc03717179958e8eadd5a7ca4646728",
        )
    }

    /// The cookie of the SDK example plugin (`loopp-example`) and the Go
    /// interop test programs.
    pub fn example() -> Cookie {
        Cookie::new("LOOPP_EXAMPLE_PLUGIN", "8d5c2b0f4f7a4e6f9a3b1c0d2e4f6a8b")
    }

    /// Looks a cookie up by plugin kind: `relayer`, `median` or `example`.
    pub fn by_kind(kind: &str) -> Option<Cookie> {
        match kind {
            "relayer" => Some(Cookie::relayer()),
            "median" => Some(Cookie::median()),
            "example" => Some(Cookie::example()),
            _ => None,
        }
    }

    /// Whether the environment carries this cookie.
    pub fn is_present_in_env(&self) -> bool {
        std::env::var_os(&self.key).is_some_and(|v| v == self.value.as_str())
    }
}

/// How the plugin is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Network {
    /// A unix domain socket (the default on Unix, as in go-plugin).
    Unix,
    /// TCP on a loopback address.
    Tcp,
}

impl Network {
    /// The handshake spelling: `unix` or `tcp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Network::Unix => "unix",
            Network::Tcp => "tcp",
        }
    }

    /// Parses the handshake spelling.
    pub fn parse(s: &str) -> Option<Network> {
        match s {
            "unix" => Some(Network::Unix),
            "tcp" => Some(Network::Tcp),
            _ => None,
        }
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed handshake line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handshake {
    /// Negotiated application protocol version.
    pub app_version: u32,
    /// Transport.
    pub network: Network,
    /// Socket path (unix) or `IP:PORT` (tcp).
    pub address: String,
    /// The plugin's TLS certificate (AutoMTLS), base64 DER, if any.
    pub server_cert: Option<String>,
    /// Whether the plugin agreed to gRPC multiplexing (7th field).
    pub multiplex: bool,
    /// Whether the plugin, a loopp plugin offered it, routes its brokered
    /// objects (8th field: [`crate::goplugin::route::HANDSHAKE_FIELD`]).
    pub routed: bool,
    /// Whether the plugin, routing and offered it, frames routed objects'
    /// unary calls (9th field: [`crate::goplugin::framed::HANDSHAKE_FIELD`]).
    pub framed: bool,
    /// Whether the plugin, framing, also takes framed connections on its
    /// own socket, where its host calls every service of its own (10th
    /// field: [`crate::goplugin::framed::SELF_FIELD`]).
    pub framed_self: bool,
}

/// Why a handshake line was refused. Each names the field and what was expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandshakeError {
    /// Fewer than five `|`-separated fields: usually text printed on stdout
    /// before the handshake.
    NotAHandshake,
    /// CORE is not `1`.
    CoreVersion(String),
    /// APP is not a number.
    AppVersion(String),
    /// NETWORK is neither `unix` nor `tcp`.
    Network(String),
    /// ADDRESS does not fit NETWORK (relative path, not `IP:PORT`, not loopback).
    Address(String),
    /// PROTOCOL is not `grpc` (go-plugin's `netrpc` is not spoken by loopp).
    Protocol(String),
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::NotAHandshake => write!(
                f,
                "expected CORE|APP|NETWORK|ADDRESS|PROTOCOL; a plugin must print nothing on stdout before its handshake line"
            ),
            HandshakeError::CoreVersion(v) => write!(
                f,
                "core protocol version {v:?} is not supported; loopp speaks go-plugin core version {CORE_PROTOCOL_VERSION}"
            ),
            HandshakeError::AppVersion(v) => write!(f, "app protocol version {v:?} is not a number"),
            HandshakeError::Network(n) => {
                write!(f, "network {n:?} is not supported; expected \"unix\" or \"tcp\"")
            }
            HandshakeError::Address(a) => write!(
                f,
                "address {a:?} is not usable; expected an absolute socket path (unix) or a loopback IP:PORT (tcp)"
            ),
            HandshakeError::Protocol(p) if p == "netrpc" => write!(
                f,
                "protocol \"netrpc\" is not supported; loopp speaks only \"grpc\" (build the plugin with GRPCServer)"
            ),
            HandshakeError::Protocol(p) => {
                write!(f, "protocol {p:?} is not supported; loopp speaks only \"grpc\"")
            }
        }
    }
}

impl std::error::Error for HandshakeError {}

/// The longest handshake line a host reads; a longer first line is not a handshake.
pub const MAX_LINE: usize = 8 * 1024;

impl Handshake {
    /// Parses one handshake line (with or without its trailing newline).
    pub fn parse(line: &str) -> Result<Handshake, HandshakeError> {
        let line = line.trim_end_matches(['\n', '\r']);
        let fields: Vec<&str> = line.split('|').collect();
        if fields.len() < 5 {
            return Err(HandshakeError::NotAHandshake);
        }
        if fields[0] != CORE_PROTOCOL_VERSION.to_string() {
            return Err(HandshakeError::CoreVersion(fields[0].to_string()));
        }
        let app_version = fields[1]
            .parse::<u32>()
            .map_err(|_| HandshakeError::AppVersion(fields[1].to_string()))?;
        let network = Network::parse(fields[2])
            .ok_or_else(|| HandshakeError::Network(fields[2].to_string()))?;
        let address = fields[3].to_string();
        let address_ok = match network {
            Network::Unix => address.starts_with('/') && !address.contains('\0'),
            Network::Tcp => address
                .parse::<SocketAddr>()
                .is_ok_and(|a| a.ip().is_loopback() && a.port() != 0),
        };
        if !address_ok {
            return Err(HandshakeError::Address(address));
        }
        if fields[4] != "grpc" {
            return Err(HandshakeError::Protocol(fields[4].to_string()));
        }
        // Base64 has no blanks: a field of only whitespace (a trailing
        // space, a stray `\r`) is no certificate, as for go-plugin, which
        // trims the line.
        let server_cert = fields
            .get(5)
            .map(|c| c.trim())
            .filter(|c| !c.is_empty())
            .map(|c| c.to_string());
        let multiplex = fields.get(6).is_some_and(|m| *m == "true");
        let routed = fields
            .get(7)
            .is_some_and(|r| r.trim() == crate::goplugin::route::HANDSHAKE_FIELD);
        let framed = routed
            && fields
                .get(8)
                .is_some_and(|r| r.trim() == crate::goplugin::framed::HANDSHAKE_FIELD);
        let framed_self = framed
            && fields
                .get(9)
                .is_some_and(|r| r.trim() == crate::goplugin::framed::SELF_FIELD);
        Ok(Handshake {
            app_version,
            network,
            address,
            server_cert,
            multiplex,
            routed,
            framed,
            framed_self,
        })
    }
}

impl fmt::Display for Handshake {
    /// The line as the plugin prints it, without the newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{CORE_PROTOCOL_VERSION}|{}|{}|{}|grpc|{}",
            self.app_version,
            self.network,
            self.address,
            self.server_cert.as_deref().unwrap_or("")
        )?;
        if self.multiplex || self.routed {
            write!(f, "|{}", self.multiplex)?;
        }
        if self.routed {
            write!(f, "|{}", crate::goplugin::route::HANDSHAKE_FIELD)?;
            if self.framed {
                write!(f, "|{}", crate::goplugin::framed::HANDSHAKE_FIELD)?;
                if self.framed_self {
                    write!(f, "|{}", crate::goplugin::framed::SELF_FIELD)?;
                }
            }
        }
        Ok(())
    }
}

/// Picks the app protocol version, plugin side, as go-plugin does: the highest
/// version the plugin speaks that the host listed in `PLUGIN_PROTOCOL_VERSIONS`;
/// if the host listed none of them (or no list), the plugin's lowest, which the
/// host will then refuse with a clear message.
///
/// `host_list` is the raw variable; a malformed entry is an error naming it.
pub fn negotiate_version(own: &[u32], host_list: Option<&str>) -> Result<u32, String> {
    let lowest = *own
        .iter()
        .min()
        .ok_or("the plugin declares no app versions")?;
    let Some(list) = host_list.filter(|l| !l.trim().is_empty()) else {
        return Ok(lowest);
    };
    let mut best = None;
    for item in list.split(',') {
        let v: u32 = item.trim().parse().map_err(|_| {
            format!("PLUGIN_PROTOCOL_VERSIONS={list:?}: {item:?} is not a version number")
        })?;
        if own.contains(&v) && best.is_none_or(|b| v > b) {
            best = Some(v);
        }
    }
    Ok(best.unwrap_or(lowest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_routed_field_is_the_eighth_and_only_a_loopp_plugin_prints_it() {
        let go = Handshake::parse("1|1|unix|/tmp/p|grpc||true\n").unwrap();
        assert!(go.multiplex && !go.routed);
        let loopp = Handshake::parse("1|1|unix|/tmp/p|grpc||false|loopp-routed\n").unwrap();
        assert!(!loopp.multiplex && loopp.routed);
        assert_eq!(
            loopp.to_string(),
            "1|1|unix|/tmp/p|grpc||false|loopp-routed"
        );
        assert!(
            !Handshake::parse("1|1|unix|/tmp/p|grpc||false|other")
                .unwrap()
                .routed
        );
        // Not offered: go-plugin's six fields, as before.
        let plain = Handshake {
            routed: false,
            ..loopp.clone()
        };
        assert_eq!(plain.to_string(), "1|1|unix|/tmp/p|grpc|");

        // Framing, the 9th field, only after routing.
        let framed =
            Handshake::parse("1|1|unix|/tmp/p|grpc||false|loopp-routed|loopp-framed\n").unwrap();
        assert!(framed.routed && framed.framed && !framed.framed_self);
        assert_eq!(
            framed.to_string(),
            "1|1|unix|/tmp/p|grpc||false|loopp-routed|loopp-framed"
        );
        // Its own socket framed too, the 10th field, only after framing.
        let own = Handshake::parse(
            "1|1|unix|/tmp/p|grpc||false|loopp-routed|loopp-framed|loopp-framed-own\n",
        )
        .unwrap();
        assert!(own.framed && own.framed_self);
        assert_eq!(
            own.to_string(),
            "1|1|unix|/tmp/p|grpc||false|loopp-routed|loopp-framed|loopp-framed-own"
        );
        assert!(
            !Handshake::parse("1|1|unix|/tmp/p|grpc||false|loopp-routed|other|loopp-framed-own")
                .unwrap()
                .framed_self,
            "its own socket framed without framing"
        );
        assert!(
            !Handshake::parse("1|1|unix|/tmp/p|grpc||false|other|loopp-framed")
                .unwrap()
                .framed,
            "framing without routing"
        );
        assert_eq!(
            Handshake {
                framed: true,
                ..plain
            }
            .to_string(),
            "1|1|unix|/tmp/p|grpc|"
        );
    }

    #[test]
    fn parses_go_plugin_lines() {
        let h = Handshake::parse("1|0|unix|/tmp/plugin123|grpc|\n").unwrap();
        assert_eq!(h.app_version, 0);
        assert_eq!(h.network, Network::Unix);
        assert_eq!(h.address, "/tmp/plugin123");
        assert_eq!(h.server_cert, None);
        assert!(!h.multiplex);
        let h = Handshake::parse("1|3|tcp|127.0.0.1:10001|grpc|Q0VSVA|true").unwrap();
        assert_eq!(h.network, Network::Tcp);
        assert_eq!(h.server_cert.as_deref(), Some("Q0VSVA"));
        assert!(h.multiplex);
        // Blanks are no certificate (found by tests/it/hostile: such a
        // line did not print back as itself, and the host refused it as TLS).
        let h = Handshake::parse("1|0|unix|/a|grpc| \r\r|true").unwrap();
        assert_eq!(h.server_cert, None);
        assert_eq!(Handshake::parse(&h.to_string()), Ok(h));
        // The 6th field is optional (old plugins print five).
        assert!(Handshake::parse("1|0|unix|/a|grpc").is_ok());
    }

    #[test]
    fn refuses_with_the_field_named() {
        use HandshakeError::*;
        let cases = [
            ("hello world", NotAHandshake),
            ("", NotAHandshake),
            ("1|0|unix|/a", NotAHandshake),
            ("2|0|unix|/a|grpc|", CoreVersion("2".into())),
            ("1|x|unix|/a|grpc|", AppVersion("x".into())),
            ("1|0|udp|/a|grpc|", Network("udp".into())),
            ("1|0|unix|rel/path|grpc|", Address("rel/path".into())),
            ("1|0|tcp|10.0.0.1:80|grpc|", Address("10.0.0.1:80".into())),
            ("1|0|tcp|localhost|grpc|", Address("localhost".into())),
            ("1|0|unix|/a|netrpc|", Protocol("netrpc".into())),
        ];
        for (line, want) in cases {
            assert_eq!(Handshake::parse(line), Err(want), "line {line:?}");
        }
        let msg = Handshake::parse("1|0|unix|/a|netrpc|")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("netrpc") && msg.contains("grpc"), "{msg}");
    }

    #[test]
    fn format_round_trips() {
        let h = Handshake {
            app_version: 7,
            network: Network::Tcp,
            address: "[::1]:12345".into(),
            server_cert: None,
            multiplex: false,
            routed: false,
            framed: false,
            framed_self: false,
        };
        let line = h.to_string();
        assert_eq!(line, "1|7|tcp|[::1]:12345|grpc|");
        assert_eq!(Handshake::parse(&line).unwrap(), h);
    }

    #[test]
    fn negotiates_like_go_plugin() {
        assert_eq!(negotiate_version(&[0], Some("0")), Ok(0));
        assert_eq!(negotiate_version(&[1, 2, 3], Some("2,3,4")), Ok(3));
        assert_eq!(negotiate_version(&[1, 2], Some("5")), Ok(1));
        assert_eq!(negotiate_version(&[4, 2], None), Ok(2));
        assert_eq!(negotiate_version(&[0], Some("")), Ok(0));
        assert!(negotiate_version(&[0], Some("0,x"))
            .unwrap_err()
            .contains("\"x\""));
    }

    /// Property: parse never panics, and whatever it accepts formats back to a
    /// line that parses to the same value.
    #[test]
    fn fuzz_parse_never_panics_and_round_trips() {
        let mut rng = crate::testutil::Rng::new(0x5eed);
        let atoms = [
            "1",
            "0",
            "2",
            "|",
            "unix",
            "tcp",
            "grpc",
            "netrpc",
            "/tmp/s",
            "127.0.0.1:1",
            "[::1]:9",
            "",
            "true",
            "\n",
            "é",
            "\0",
            "99999999999",
            "-1",
        ];
        for _ in 0..20_000 {
            let mut line = String::new();
            for _ in 0..rng.below(14) {
                if rng.below(4) == 0 {
                    line.push(char::from_u32(rng.below(0x2ff) as u32).unwrap_or('?'));
                } else {
                    line.push_str(atoms[rng.below(atoms.len())]);
                }
            }
            if let Ok(h) = Handshake::parse(&line) {
                assert_eq!(
                    Handshake::parse(&h.to_string()).as_ref(),
                    Ok(&h),
                    "{line:?}"
                );
            }
        }
    }
}
