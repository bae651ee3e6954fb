//! The C allocator's one setting loopp changes: how many arenas it keeps.
//!
//! glibc's malloc gives a thread that allocates while every arena is taken
//! an arena of its own, up to eight per CPU. A loopp process starts twenty
//! or more threads (gRPC's pollers, executors and timers, the accept,
//! signal and stdio threads, a node's round workers), and each new arena
//! costs system calls under the process's memory-map lock (a 128 MiB
//! reservation trimmed to 64, then a first chunk made writable) and pages
//! of its own that stay resident. A plugin's start pays for them on its
//! critical path: at [`one_arena`], a start to ready is about 0.2 ms shorter
//! (`loopp probe`, 150 starts each, interleaved, twice), the node at 1,000
//! feeds holds 34 instead of 43-46 MB, and CPU per round is the same within
//! the noise at 300 and 1,000 feeds (docs/SCALE.md). Most small blocks come
//! from each thread's cache (tcache) without taking an arena's lock.
//!
//! An operator's own setting wins: `MALLOC_ARENA_MAX`, or
//! `glibc.malloc.arena_max` in `GLIBC_TUNABLES`, leaves glibc's choice
//! alone, e.g. for a node on many cores whose threads allocate at once.

/// Makes every thread allocate from the main arena, unless the environment
/// sets the arena count. Call it first in `main`, before any thread starts
/// (an arena made before stays): `loopp`'s `main` does; another binary
/// built on this crate (a plugin of its own) calls it itself. Returns
/// whether it changed the setting.
pub fn one_arena() -> bool {
    one_arena_unless(|name| std::env::var_os(name))
}

fn one_arena_unless(env: impl Fn(&str) -> Option<std::ffi::OsString>) -> bool {
    let operator_set = env("MALLOC_ARENA_MAX").is_some_and(|v| !v.is_empty())
        || env("GLIBC_TUNABLES")
            .is_some_and(|v| v.to_string_lossy().contains("glibc.malloc.arena_max"));
    if operator_set {
        return false;
    }
    set_arena_max(1)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_arena_max(n: libc::c_int) -> bool {
    // SAFETY: mallopt only changes a malloc parameter; M_ARENA_MAX is
    // read when a thread next needs an arena.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, n) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_arena_max(_n: libc::c_int) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::one_arena_unless;
    use std::ffi::OsString;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<OsString> {
        move |name| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn an_operators_arena_setting_is_left_alone() {
        assert!(!one_arena_unless(env(&[("MALLOC_ARENA_MAX", "4")])));
        assert!(!one_arena_unless(env(&[(
            "GLIBC_TUNABLES",
            "glibc.malloc.tcache_count=0:glibc.malloc.arena_max=8"
        )])));
    }

    #[test]
    fn other_tunables_and_empty_values_do_not_count_as_a_setting() {
        // mallopt in a test process: the setting only bounds arenas made
        // from here on, which no test relies on.
        assert!(one_arena_unless(env(&[(
            "GLIBC_TUNABLES",
            "glibc.malloc.tcache_count=0"
        )])));
        assert!(one_arena_unless(env(&[("MALLOC_ARENA_MAX", "")])));
        assert!(one_arena_unless(env(&[])));
    }
}
