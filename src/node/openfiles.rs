//! Open files: what a job needs in the node and in each LOOPP, so that a job
//! too big for the open-file limits is refused before anything starts,
//! instead of failing feeds one by one with EMFILE in the middle of a run.
//!
//! A LOOPP feed holds sockets of its own in every process it touches: each
//! object the broker serves for it is a listener and a connection, as in
//! go-plugin. The figures below are the scale benchmark's counts (1, 10,
//! 100, 300 and 1,000 feeds: the growth is exactly linear). The node's
//! per-feed figures are the measured ones, as a host with a hard limit of
//! 20,000 carries 1,000 feeds (19,020 open); [`NODE_RESERVED`] is the
//! margin. A plugin's figures are rounded up: its limit is the job's.
//!
//! Between loopp processes brokering is routed (see
//! [`crate::goplugin::route`]): every object rides one shared server and
//! connection per side, so a feed costs the transport no fds. Which LOOPPs
//! will route is known before they start for one kind only: this very
//! executable (the multi-call binary's links), offered routing
//! ([`will_route`]). Any other plugin (a Go one) is counted as go-plugin's.
//!
//! Invariant: the node's need is checked against its soft limit after
//! raising it to the hard one, as Go programs do at start; the HTTP server
//! gets what is left.

/// Open files the node keeps for everything but plugins, feeds and HTTP
/// clients: its own (11 to 20 measured: logs, epoll, gRPC's, the HTTP
/// listener) and the metrics proxy's connections to plugins, with room.
pub const NODE_RESERVED: u64 = 64;

/// Open files the node holds per LOOPP (pipes, pidfd, the plugin's
/// connection and broker streams; between loopp processes, the framed
/// connections both ways, 2 + 3, and the one its health checks take to
/// the plugin's own socket, 2: `goplugin::framed`), beyond
/// [`NODE_RESERVED`].
pub const NODE_PER_LOOPP: u64 = 15;

/// Open files the node holds per feed with a LOOPP in it.
pub const NODE_PER_LOOPP_FEED: u64 = 19;

/// Open files the node holds per feed with a median process of its own,
/// beyond [`NODE_PER_LOOPP`] for that process: 22 measured in all.
pub const NODE_PER_PROCESS_FEED: u64 = 14;

/// Open files the node holds per feed with both plugins in-process: its
/// chain file while a transmission writes it (at most one round a feed is
/// in progress; none between appends, so about 0 measured).
pub const NODE_PER_FEED: u64 = 2;

/// Open files the node holds per feed whose LOOPPs all route: none for
/// the transport (25 in all at 100, 300 and 1,000 feeds, measured), and
/// the chain file while it is written when the relayer runs in the node.
/// A routed median process of the feed's own costs only
/// [`NODE_PER_LOOPP`] (619 measured for 100 such feeds and their 101
/// processes).
pub const NODE_PER_ROUTED_FEED: u64 = 2;

/// Open files a loopp plugin process holds with no feed: 22 to 36
/// measured, and 3 more for its host's framed connection to its own
/// socket (the default job: 37 and 38 with one feed).
pub const PLUGIN_BASE: u64 = 44;

/// Open files a plugin of `kind` holds per feed it serves: with go-plugin's
/// brokering a median plugin 14 measured, a relayer 5 (its chain file,
/// open only while a transmission writes it, included); routed, a median
/// none (25 in all at 100 to 1,000 feeds), a relayer that chain file and,
/// when the feed has a median process of its own, that process's
/// connections, gRPC and framed (the node forwards the relayer's provider
/// to it: `goplugin::route`).
pub fn plugin_per_feed(kind: &str, routed: bool) -> u64 {
    match (kind, routed) {
        ("median", false) => 15,
        ("relayer", false) => 6,
        ("relayer", true) => 6,
        _ => 0,
    }
}

/// What a LOOPP of `kind` serving `feeds` feeds needs.
pub fn plugin_need(kind: &str, feeds: usize, routed: bool) -> u64 {
    PLUGIN_BASE + plugin_per_feed(kind, routed) * feeds as u64
}

/// Whether a LOOPP started as `command` with `env` (beyond what the node
/// sets) will route its brokered objects: it is this very executable, so
/// it accepts the offer, and it is offered
/// ([`crate::goplugin::route::offered_with`]).
pub fn will_route(
    command: &std::path::Path,
    env: &[(std::ffi::OsString, std::ffi::OsString)],
) -> bool {
    use std::os::unix::fs::MetadataExt;
    let id = |p: &std::path::Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    crate::goplugin::route::offered_with(env)
        && id(command).is_some_and(|c| Some(c) == id(std::path::Path::new("/proc/self/exe")))
}

/// The node's feeds, by how they run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NodeLoad {
    /// LOOPP processes the node supervises.
    pub loopps: usize,
    /// Feeds with a shared LOOPP in them (and no process of their own).
    pub loopp_feeds: usize,
    /// Feeds with a median process of their own.
    pub process_feeds: usize,
    /// Feeds with both plugins in-process.
    pub in_process_feeds: usize,
    /// Feeds with LOOPPs (shared, or a median process of their own), every
    /// one of which routes.
    pub routed_feeds: usize,
}

impl NodeLoad {
    /// Open files the node needs for this load, HTTP clients aside.
    pub fn need(&self) -> u64 {
        NODE_RESERVED
            + NODE_PER_LOOPP * self.loopps as u64
            + NODE_PER_LOOPP_FEED * self.loopp_feeds as u64
            + NODE_PER_PROCESS_FEED * self.process_feeds as u64
            + NODE_PER_FEED * self.in_process_feeds as u64
            + NODE_PER_ROUTED_FEED * self.routed_feeds as u64
    }
}

/// Raises the soft open-file limit to the hard one and returns it
/// (`u64::MAX` when unlimited or unknown).
pub fn raise_soft_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return u64::MAX;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    if lim.rlim_cur == libc::RLIM_INFINITY {
        u64::MAX
    } else {
        lim.rlim_cur
    }
}

/// Open files left for HTTP clients under `limit` once `load` has its
/// need, or what is wrong and what to do.
pub fn room_for_http(load: &NodeLoad, limit: u64) -> Result<u64, String> {
    let need = load.need();
    // HTTP needs at least a few clients (a scrape, a health check).
    if need + 16 > limit {
        return Err(format!(
            "the job needs about {need} open files in the node ({} feeds with a shared LOOPP at {NODE_PER_LOOPP_FEED}, {} with a median process of their own at {NODE_PER_PROCESS_FEED}, {} with routed LOOPPs at {NODE_PER_ROUTED_FEED}, {} in-process at {NODE_PER_FEED}, {} LOOPPs at {NODE_PER_LOOPP}, {NODE_RESERVED} for the rest) and 16 more for HTTP, but its open-file limit is {limit}: raise it (`ulimit -n`, LimitNOFILE= in the unit, --ulimit nofile= for a container) or run fewer feeds in this node",
            load.loopp_feeds,
            load.process_feeds,
            load.routed_feeds,
            load.in_process_feeds,
            load.loopps
        ));
    }
    Ok(limit - need)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_need_grows_with_feeds_as_measured() {
        let idle = NodeLoad {
            loopps: 2,
            ..NodeLoad::default()
        };
        assert_eq!(idle.need(), 64 + 30);
        let thousand = NodeLoad {
            loopps: 2,
            loopp_feeds: 1000,
            ..NodeLoad::default()
        };
        // The scale benchmark counted 19,020 in the node at 1,000 feeds,
        // under a hard limit of 20,000.
        assert!(thousand.need() > 19_020 && thousand.need() + 16 <= 20_000);
        // 100 feeds with a median process each (and one devchain): 2,217
        // counted by the scale benchmark.
        let per_feed = NodeLoad {
            loopps: 101,
            process_feeds: 100,
            ..NodeLoad::default()
        };
        assert_eq!(per_feed.need(), 64 + 101 * 15 + 1400);
        assert_eq!(plugin_need("median", 100, false), 44 + 1500);
        assert_eq!(plugin_need("relayer", 0, false), 44);
        assert_eq!(plugin_need("example", 1000, false), 44);
        // Routed: the scale benchmark counted 25 in the node and the median
        // at 1,000 feeds, and the relayer 24 plus its chain files.
        let routed = NodeLoad {
            loopps: 2,
            routed_feeds: 1000,
            ..NodeLoad::default()
        };
        assert_eq!(routed.need(), 64 + 30 + 2000);
        assert_eq!(plugin_need("median", 1000, true), 44);
        assert_eq!(plugin_need("relayer", 1000, true), 44 + 6000);
    }

    #[test]
    fn only_this_executable_offered_routing_is_counted_as_routing() {
        let me = std::fs::read_link("/proc/self/exe").unwrap();
        let off = [(
            crate::goplugin::route::OFFER_VAR.into(),
            std::ffi::OsString::from("0"),
        )];
        // This process's environment does not turn the offer off.
        assert!(crate::goplugin::route::host_offers());
        assert!(will_route(&me, &[]));
        assert!(!will_route(&me, &off), "turned off in the plugin's env");
        assert!(
            !will_route(std::path::Path::new("/bin/sh"), &[]),
            "another program"
        );
        assert!(!will_route(std::path::Path::new("/nonexistent/loopp"), &[]));
    }

    #[test]
    fn a_load_over_the_limit_names_the_figures_and_what_to_do() {
        let load = NodeLoad {
            loopps: 2,
            loopp_feeds: 100,
            ..NodeLoad::default()
        };
        let e = room_for_http(&load, 1024).unwrap_err();
        assert!(e.contains("about 1994 open files"), "{e}");
        assert!(e.contains("100 feeds with a shared LOOPP"), "{e}");
        assert!(
            e.contains("limit is 1024") && e.contains("LimitNOFILE="),
            "{e}"
        );
        assert_eq!(room_for_http(&load, 4096), Ok(4096 - 1994));
        assert!(room_for_http(&NodeLoad::default(), u64::MAX).is_ok());
    }
}
