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
//! Invariant: the node's need is checked against its soft limit after
//! raising it to the hard one, as Go programs do at start; the HTTP server
//! gets what is left.

/// Open files the node keeps for everything but plugins, feeds and HTTP
/// clients: its own (11 to 20 measured: logs, epoll, gRPC's, the HTTP
/// listener) and the metrics proxy's connections to plugins, with room.
pub const NODE_RESERVED: u64 = 64;

/// Open files the node holds per LOOPP (pipes, pidfd, the plugin's
/// connection and broker streams), beyond [`NODE_RESERVED`].
pub const NODE_PER_LOOPP: u64 = 8;

/// Open files the node holds per feed with a LOOPP in it.
pub const NODE_PER_LOOPP_FEED: u64 = 19;

/// Open files the node holds per feed with a median process of its own,
/// beyond [`NODE_PER_LOOPP`] for that process: 22 measured in all.
pub const NODE_PER_PROCESS_FEED: u64 = 14;

/// Open files the node holds per feed with both plugins in-process: its
/// chain file, 1 measured.
pub const NODE_PER_FEED: u64 = 2;

/// Open files a loopp plugin process holds with no feed: 22 to 36 measured.
pub const PLUGIN_BASE: u64 = 40;

/// Open files a plugin of `kind` holds per feed it serves: a median plugin
/// 14 measured, a relayer 5 (its chain file included).
pub fn plugin_per_feed(kind: &str) -> u64 {
    match kind {
        "median" => 15,
        "relayer" => 6,
        _ => 0,
    }
}

/// What a LOOPP of `kind` serving `feeds` feeds needs.
pub fn plugin_need(kind: &str, feeds: usize) -> u64 {
    PLUGIN_BASE + plugin_per_feed(kind) * feeds as u64
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
}

impl NodeLoad {
    /// Open files the node needs for this load, HTTP clients aside.
    pub fn need(&self) -> u64 {
        NODE_RESERVED
            + NODE_PER_LOOPP * self.loopps as u64
            + NODE_PER_LOOPP_FEED * self.loopp_feeds as u64
            + NODE_PER_PROCESS_FEED * self.process_feeds as u64
            + NODE_PER_FEED * self.in_process_feeds as u64
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
            "the job needs about {need} open files in the node ({} feeds with a shared LOOPP at {NODE_PER_LOOPP_FEED}, {} with a median process of their own at {NODE_PER_PROCESS_FEED}, {} in-process at {NODE_PER_FEED}, {} LOOPPs at {NODE_PER_LOOPP}, {NODE_RESERVED} for the rest) and 16 more for HTTP, but its open-file limit is {limit}: raise it (`ulimit -n`, LimitNOFILE= in the unit, --ulimit nofile= for a container) or run fewer feeds in this node",
            load.loopp_feeds, load.process_feeds, load.in_process_feeds, load.loopps
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
        assert_eq!(idle.need(), 64 + 16);
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
        assert_eq!(per_feed.need(), 64 + 808 + 1400);
        assert_eq!(plugin_need("median", 100), 40 + 1500);
        assert_eq!(plugin_need("relayer", 0), 40);
        assert_eq!(plugin_need("example", 1000), 40);
    }

    #[test]
    fn a_load_over_the_limit_names_the_figures_and_what_to_do() {
        let load = NodeLoad {
            loopps: 2,
            loopp_feeds: 100,
            ..NodeLoad::default()
        };
        let e = room_for_http(&load, 1024).unwrap_err();
        assert!(e.contains("about 1980 open files"), "{e}");
        assert!(e.contains("100 feeds with a shared LOOPP"), "{e}");
        assert!(
            e.contains("limit is 1024") && e.contains("LimitNOFILE="),
            "{e}"
        );
        assert_eq!(room_for_http(&load, 4096), Ok(4096 - 1980));
        assert!(room_for_http(&NodeLoad::default(), u64::MAX).is_ok());
    }
}
