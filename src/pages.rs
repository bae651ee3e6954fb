//! Gives back the code pages that only start-up used.
//!
//! Starting touches code from all over the binary (gRPC's C core sets itself
//! up, arguments are parsed, the handshake runs), and the kernel maps a file
//! page into a process 64 KiB at a time (fault-around). So an idle loopp
//! process would keep most of its 7 MB binary mapped, and RSS counts those
//! pages in every process that runs the binary: a node with two LOOPPs would
//! show three times the code it uses.
//!
//! [`release_code`] unmaps the binary's read-only, never-written pages from
//! this process once start-up is over (`madvise(MADV_DONTNEED)`). They stay in
//! the page cache, and whatever the process runs next maps again, on its
//! first touch, the pages it needs: what remains mapped is the code the
//! process really uses. The kernel does the same to clean text under memory
//! pressure, so nothing new can go wrong: a page read back comes from the
//! same file. Only segments without write permission are released; the
//! RELRO segment (written by relocation at start, then made read-only) and
//! data keep their pages.
//!
//! What maps again depends on where that code lies. The link puts the
//! functions an idle node, devchain and median run first in `.text`, in
//! the order `scripts/symbol-order.sh` records (`contrib/symbol-order.txt`,
//! read by build.rs), so they share a few hundred KB of pages: an idle
//! process keeps about 1 MB of code mapped instead of 4.

use std::ffi::{c_int, c_void};
use std::time::Duration;

/// How long a process waits, once ready, before it gives back its start-up
/// code: a plugin after its handshake (its host sets up what it uses
/// meanwhile), the node after every plugin is ready. Code released too
/// early only faults back in.
pub const SETTLE: Duration = Duration::from_secs(5);

/// The node gives back its start-up code after this, ready or not.
pub const SETTLE_BOUND: Duration = Duration::from_secs(30);

/// Unmaps the binary's read-only segments (code, read-only data) from this
/// process; the pages still in use fault back in from the page cache.
/// Returns the bytes given back (0 where the segments cannot be found).
pub fn release_code() -> usize {
    let mut released = 0usize;
    // SAFETY: dl_iterate_phdr calls `segments` with a valid `dl_phdr_info`
    // for each loaded object; `released` outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(segments), (&mut released as *mut usize).cast()) };
    released
}

/// The callback of `dl_iterate_phdr`: the first object is the executable;
/// release its loadable segments that are not writable, and stop.
unsafe extern "C" fn segments(
    info: *mut libc::dl_phdr_info,
    _size: usize,
    data: *mut c_void,
) -> c_int {
    // SAFETY: see release_code: both pointers are valid for this call.
    let (info, released) = unsafe { (&*info, &mut *data.cast::<usize>()) };
    let page = page_size();
    for i in 0..info.dlpi_phnum as usize {
        // SAFETY: dlpi_phdr points to dlpi_phnum program headers.
        let ph = unsafe { &*info.dlpi_phdr.add(i) };
        if ph.p_type != libc::PT_LOAD || ph.p_flags & libc::PF_W != 0 {
            continue;
        }
        let start = (info.dlpi_addr as usize + ph.p_vaddr as usize) & !(page - 1);
        let end =
            (info.dlpi_addr as usize + (ph.p_vaddr + ph.p_memsz) as usize).next_multiple_of(page);
        // SAFETY: the range is a read-only, private file mapping of our own
        // binary: dropping its pages only makes the next access read them
        // again from the file.
        if unsafe { libc::madvise(start as *mut c_void, end - start, libc::MADV_DONTNEED) } == 0 {
            *released += end - start;
        }
    }
    1
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as usize,
        _ => 4096,
    }
}

#[cfg(test)]
mod tests {
    /// The executable's code mapping, from /proc/self/maps: (start, end).
    fn code_mapping() -> (usize, usize) {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        maps.lines()
            .filter(|l| l.ends_with(exe.to_str().unwrap()))
            .find(|l| l.split_whitespace().nth(1) == Some("r-xp"))
            .and_then(|l| l.split_whitespace().next()?.split_once('-'))
            .map(|(a, b)| {
                let hex = |s| usize::from_str_radix(s, 16).unwrap();
                (hex(a), hex(b))
            })
            .expect("the executable's code mapping")
    }

    #[test]
    fn release_code_gives_back_the_code_segment_and_code_runs_on() {
        let (start, end) = code_mapping();
        let released = super::release_code();
        assert!(
            released >= end - start,
            "released {released} bytes, less than the {} bytes of code",
            end - start
        );
        // The code runs on: it faults back in from the page cache.
        assert_eq!(code_mapping(), (start, end));
        assert_eq!(format!("{:?}", vec![1, 2]), "[1, 2]");
    }
}
