//! The chain file: an append-only log of JSON lines, one record each, written
//! with `write` + `fsync` before a write is acknowledged. A process killed at
//! any moment leaves at most one torn record at the end; opening the file
//! drops it (and truncates it away), so no acknowledged record is ever lost
//! and the file always reads back valid. Damage anywhere else is an error
//! naming the line.
//!
//! A write that fails (a full disk, the file size limit, an I/O error,
//! a failed fsync) is not acknowledged and changes nothing: whatever part of
//! the record reached the file is cut off again before the error is
//! returned (or, if even that fails, before the next append), so the file
//! and the state never diverge and the next start reads a clean file.
//!
//! The chain's state is a fold over the records: the contract config (the
//! latest `Config`), the transmissions, and the block height (one block per
//! record).
//!
//! The file is open only while it is read or written: a relayer holds a
//! chain per feed, and its open files stay bounded by the calls in
//! progress, not by the feeds (an open and a close per append cost
//! microseconds next to its fsync).

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The contract's configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractConfig {
    /// Config digest (hex).
    pub digest: String,
    /// How many configs were set so far (this one included).
    pub count: u64,
    /// Oracle signing keys (hex).
    pub signers: Vec<String>,
    /// Oracle transmitter accounts.
    pub transmitters: Vec<String>,
    /// Faulty oracles tolerated.
    pub f: u8,
    /// Smallest valid median.
    pub min_answer: i128,
    /// Largest valid median.
    pub max_answer: i128,
}

/// One transmitted report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transmission {
    /// Config digest the report was made under (hex).
    pub digest: String,
    /// OCR epoch.
    pub epoch: u32,
    /// OCR round.
    pub round: u8,
    /// The median.
    pub median: i128,
    /// When the observations were made (seconds since the epoch).
    pub observations_timestamp: u64,
    /// The juels-per-fee-coin median.
    pub juels_per_fee_coin: i128,
}

/// A record in the chain file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Record {
    /// A new contract config.
    Config(ContractConfig),
    /// A transmission.
    Transmission(Transmission),
}

/// The chain: its file and its state.
pub struct Chain {
    path: PathBuf,
    /// How an append opens the file ([`open_to_append`]; a test opens it
    /// read-only to make writes fail).
    open: fn(&Path) -> io::Result<File>,
    /// The file's (device, inode) when the chain was read: an append to
    /// another file at the same path (one put there meanwhile, or changed
    /// by something else: see [`Chain::check`]) is refused.
    id: (u64, u64),
    config: Option<ContractConfig>,
    /// The newest transmission and how many there are: the chain's state.
    /// Older ones stay on file only, so memory does not grow with the chain.
    latest: Option<Transmission>,
    transmitted: u64,
    height: u64,
    config_block: u64,
    head_hash: [u8; 32],
    /// Bytes of a torn last record dropped when the file was opened.
    pub dropped_tail: u64,
    /// Length of the file's acknowledged records.
    len: u64,
    /// A failed append may have left bytes past `len` that could not be
    /// cut off yet.
    dirty: bool,
}

/// A file's (device, inode).
fn file_id(m: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino())
}

/// Opens an existing chain file to append to it.
fn open_to_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().append(true).open(path)
}

fn corrupt(path: &Path, line: usize, why: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "{}:{line}: damaged chain record ({why}); only the last record can be torn by a crash, so this file was changed by something else",
            path.display()
        ),
    )
}

impl Chain {
    /// Opens (or creates) the chain file, dropping a torn last record.
    pub fn open(path: &Path) -> io::Result<Chain> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        let mut chain = Chain {
            path: path.to_path_buf(),
            open: open_to_append,
            id: file_id(&file.metadata()?),
            config: None,
            latest: None,
            transmitted: 0,
            height: 0,
            config_block: 0,
            head_hash: [0; 32],
            dropped_tail: 0,
            len: 0,
            dirty: false,
        };
        file.seek(SeekFrom::Start(0))?;
        let mut reader = BufReader::new(&mut file);
        let mut good_len = 0u64;
        let mut line_no = 0usize;
        let mut buf = Vec::new();
        let mut pending_error = None;
        loop {
            buf.clear();
            let n = reader.read_until(b'\n', &mut buf)?;
            if n == 0 {
                break;
            }
            line_no += 1;
            if let Some(e) = pending_error.take() {
                // A bad record followed by more records is damage, not a tear.
                return Err(e);
            }
            let complete = buf.last() == Some(&b'\n');
            let record = buf.strip_suffix(b"\n").unwrap_or(&buf);
            match serde_json::from_slice::<Record>(record) {
                Ok(rec) if complete => {
                    chain.apply(rec, record);
                    good_len += n as u64;
                }
                Ok(_) | Err(_) => {
                    pending_error = Some(corrupt(path, line_no, "not a complete record"))
                }
            }
        }
        let total = file.seek(SeekFrom::End(0))?;
        if total > good_len {
            // The torn tail of a write the process did not live to finish.
            chain.dropped_tail = total - good_len;
            file.set_len(good_len)?;
            file.sync_all()?;
        }
        chain.len = good_len;
        Ok(chain)
    }

    /// Folds record `rec`, whose bytes in the file are `bytes`, into the
    /// state: one block each, hashed onto the previous block's hash.
    fn apply(&mut self, rec: Record, bytes: &[u8]) {
        use sha2::Digest;
        self.height += 1;
        let mut h = sha2::Sha256::new();
        h.update(self.head_hash);
        h.update(bytes);
        self.head_hash = h.finalize().into();
        match rec {
            Record::Config(c) => {
                self.config = Some(c);
                self.config_block = self.height;
            }
            Record::Transmission(t) => {
                self.latest = Some(t);
                self.transmitted += 1;
            }
        }
    }

    /// Appends a record durably (written and fsynced) before returning. On
    /// an error nothing changed: the state is as before and the file holds
    /// the same records (see the module docs); the error names the file.
    pub fn append(&mut self, rec: Record) -> io::Result<()> {
        let mut line = serde_json::to_vec(&rec).map_err(io::Error::other)?;
        line.push(b'\n');
        let mut file = (self.open)(&self.path).map_err(|e| self.failed("opening it", e))?;
        self.check(&file)?;
        if self.dirty {
            self.cut_back(&file)
                .map_err(|e| self.failed("cutting off a failed write", e))?;
        }
        if let Err(e) = file.write_all(&line).and_then(|()| file.sync_data()) {
            // Not acknowledged: take back whatever part of it was written
            // (after a failed fsync, even all of it may be there).
            if self.cut_back(&file).is_err() {
                self.dirty = true;
            }
            return Err(self.failed("appending a record", e));
        }
        self.len += line.len() as u64;
        self.apply(rec, &line[..line.len() - 1]);
        Ok(())
    }

    /// Whether `file` is still this chain's: the same file, as long as
    /// its acknowledged records (longer only after a write that could not
    /// be cut off yet). Else an error naming it and what to do.
    fn check(&self, file: &File) -> io::Result<()> {
        let m = file.metadata()?;
        let same_file = file_id(&m) == self.id;
        let same_len = m.len() == self.len || (self.dirty && m.len() > self.len);
        if same_file && same_len {
            return Ok(());
        }
        Err(io::Error::other(format!(
            "{}: the file is not the chain this relayer read ({} bytes, {} acknowledged): another file was put in its place or something else wrote to it; the record was not written: put the chain's file back, or restart the relayer to read the file as it is",
            self.path.display(),
            m.len(),
            self.len
        )))
    }

    /// Truncates the file (open as `file`) to its acknowledged records.
    fn cut_back(&mut self, file: &File) -> io::Result<()> {
        file.set_len(self.len)?;
        file.sync_data()?;
        self.dirty = false;
        Ok(())
    }

    /// `e`, naming the file and what to do.
    fn failed(&self, what: &str, e: io::Error) -> io::Error {
        let hint = match e.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => "free space on its disk",
            Some(libc::EFBIG) => "raise the file size limit (RLIMIT_FSIZE) or free space",
            Some(libc::ENOENT) => "put the file back where it was (it was moved or removed)",
            Some(libc::EMFILE) | Some(libc::ENFILE) => {
                "raise the open file limit (RLIMIT_NOFILE) or run fewer calls at once"
            }
            _ => "check its disk",
        };
        io::Error::new(
            e.kind(),
            format!(
                "{}: {what}: {e}; the record was not written (nothing acknowledged is lost); {hint} and writes resume",
                self.path.display()
            ),
        )
    }

    /// The current contract config.
    pub fn config(&self) -> Option<&ContractConfig> {
        self.config.as_ref()
    }

    /// Every transmission acknowledged so far, oldest first, read back from
    /// the file (the chain keeps only the newest in memory).
    pub fn transmissions(&self) -> io::Result<Vec<Transmission>> {
        let file = File::open(&self.path)?;
        let mut out = Vec::new();
        let mut at = 0u64;
        for (i, line) in BufReader::new(file).split(b'\n').enumerate() {
            let line = line?;
            at += line.len() as u64 + 1;
            if at > self.len {
                break;
            }
            match serde_json::from_slice::<Record>(&line) {
                Ok(Record::Transmission(t)) => out.push(t),
                Ok(Record::Config(_)) => {}
                Err(e) => return Err(corrupt(&self.path, i + 1, e)),
            }
        }
        Ok(out)
    }

    /// How many transmissions the chain holds.
    pub fn transmitted(&self) -> u64 {
        self.transmitted
    }

    /// The latest transmission.
    pub fn latest(&self) -> Option<&Transmission> {
        self.latest.as_ref()
    }

    /// The block in which the current config was set (0: none).
    pub fn config_block(&self) -> u64 {
        self.config_block
    }

    /// Blocks so far (one per record).
    pub fn height(&self) -> u64 {
        self.height
    }

    /// The newest block's hash: SHA-256 of the previous block's hash and
    /// the block's record as written (all zeros before the first block).
    pub fn head_hash(&self) -> [u8; 32] {
        self.head_hash
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tx(round: u8, median: i128) -> Record {
        Record::Transmission(Transmission {
            digest: "00".into(),
            epoch: 1,
            round,
            median,
            observations_timestamp: 1000 + u64::from(round),
            juels_per_fee_coin: 1,
        })
    }

    /// The chain file in a directory removed when the guard drops.
    fn temp(name: &str) -> (crate::testutil::TempDir, PathBuf) {
        let dir = crate::testutil::TempDir::new(&format!("chain-{name}"));
        let path = dir.0.join("chain.jsonl");
        (dir, path)
    }

    /// Each block's hash chains the previous one; a reopened chain has the
    /// same head.
    #[test]
    fn the_head_hash_chains_blocks_and_survives_reopen() {
        let (_dir, path) = temp("head");
        let mut c = Chain::open(&path).unwrap();
        assert_eq!(c.head_hash(), [0; 32]);
        c.append(tx(1, 10)).unwrap();
        let first = c.head_hash();
        c.append(tx(2, 20)).unwrap();
        let second = c.head_hash();
        assert_ne!(first, [0; 32]);
        assert_ne!(first, second);
        drop(c);
        let c = Chain::open(&path).unwrap();
        assert_eq!((c.height(), c.head_hash()), (2, second));
    }

    #[test]
    fn appends_survive_reopen() {
        let (_dir, path) = temp("reopen");
        let mut c = Chain::open(&path).unwrap();
        c.append(Record::Config(ContractConfig {
            digest: "0001ab".into(),
            count: 1,
            signers: vec!["s0".into()],
            transmitters: vec!["t0".into()],
            f: 1,
            min_answer: -5,
            max_answer: i128::MAX,
        }))
        .unwrap();
        c.append(tx(1, 42)).unwrap();
        c.append(tx(2, i128::MIN)).unwrap();
        drop(c);
        let c = Chain::open(&path).unwrap();
        assert_eq!(c.height(), 3);
        assert_eq!(c.config().unwrap().max_answer, i128::MAX);
        assert_eq!(c.transmissions().unwrap().len(), 2);
        assert_eq!(c.latest().unwrap().median, i128::MIN);
        assert_eq!(c.dropped_tail, 0);
    }

    /// Every possible tear of the last record: the file reopens valid with
    /// all earlier records, and the next append lands cleanly.
    #[test]
    fn a_torn_last_record_at_any_byte_is_dropped() {
        let (_dir, path) = temp("torn");
        let mut c = Chain::open(&path).unwrap();
        c.append(tx(1, 1)).unwrap();
        c.append(tx(2, 2)).unwrap();
        drop(c);
        let good = std::fs::read(&path).unwrap();
        let mut last = serde_json::to_vec(&tx(3, 3)).unwrap();
        last.push(b'\n');
        for cut in 0..last.len() {
            let mut bytes = good.clone();
            bytes.extend_from_slice(&last[..cut]);
            std::fs::write(&path, &bytes).unwrap();
            let mut c = Chain::open(&path).unwrap();
            assert_eq!(c.transmissions().unwrap().len(), 2, "cut at {cut}");
            assert_eq!(c.dropped_tail, cut as u64);
            c.append(tx(4, 4)).unwrap();
            drop(c);
            let c = Chain::open(&path).unwrap();
            assert_eq!(
                c.transmissions()
                    .unwrap()
                    .iter()
                    .map(|t| t.round)
                    .collect::<Vec<_>>(),
                [1, 2, 4]
            );
        }
    }

    /// A failed append changes nothing: the state stays, the error names
    /// the file, and bytes it could not cut off at once (here: a read-only
    /// handle, which can neither write nor truncate) are cut off before
    /// the next append, so the file reopens with exactly the acknowledged
    /// records.
    #[test]
    fn a_failed_append_is_taken_back_and_acknowledges_nothing() {
        let (_dir, path) = temp("failed");
        let mut c = Chain::open(&path).unwrap();
        c.append(tx(1, 1)).unwrap();
        let (height, head) = (c.height(), c.head_hash());
        c.open = |path| File::open(path);
        let err = c.append(tx(2, 2)).unwrap_err().to_string();
        // What a partial write of it could have left behind (the handle
        // could write nothing; a disk error midway would).
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"transmission\":{\"dig")
            .unwrap();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("the record was not written"), "{err}");
        assert_eq!((c.height(), c.head_hash()), (height, head));
        assert_eq!(c.transmissions().unwrap().len(), 1);
        c.open = open_to_append;
        c.append(tx(3, 3)).unwrap();
        drop(c);
        let c = Chain::open(&path).unwrap();
        assert_eq!(c.dropped_tail, 0, "nothing torn was left");
        let rounds: Vec<u8> = c.transmissions().unwrap().iter().map(|t| t.round).collect();
        assert_eq!(rounds, [1, 3]);
    }

    /// The chain holds its file open only while it reads or writes it:
    /// a relayer's open files do not grow with its chains (feeds). A file
    /// removed, or another one put in its place, is an error and nothing
    /// is written.
    #[test]
    fn a_chain_keeps_no_file_open_between_appends() {
        let (_dir, path) = temp("closed");
        let open_here = || {
            std::fs::read_dir("/proc/self/fd")
                .unwrap()
                .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
                .filter(|target| target == &path)
                .count()
        };
        let mut c = Chain::open(&path).unwrap();
        assert_eq!(open_here(), 0, "after opening");
        let held = File::open(&path).unwrap();
        assert_eq!(open_here(), 1, "the check sees a file open");
        drop(held);
        c.append(tx(1, 1)).unwrap();
        c.append(tx(2, 2)).unwrap();
        assert_eq!(open_here(), 0, "after appending");
        assert_eq!(c.transmissions().unwrap().len(), 2);
        let kept = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let err = c.append(tx(3, 3)).unwrap_err().to_string();
        assert!(err.contains("put the file back"), "{err}");
        // Another file in its place is not appended to.
        std::fs::write(&path, &kept[..kept.len() / 2]).unwrap();
        let err = c.append(tx(3, 3)).unwrap_err().to_string();
        assert!(err.contains("another file was put in its place"), "{err}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            &kept[..kept.len() / 2],
            "the other file is untouched"
        );
        assert_eq!(c.height(), 2, "nothing acknowledged");
    }

    #[test]
    fn damage_before_the_end_is_an_error_naming_the_line() {
        let (_dir, path) = temp("damage");
        let mut c = Chain::open(&path).unwrap();
        c.append(tx(1, 1)).unwrap();
        c.append(tx(2, 2)).unwrap();
        drop(c);
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replacen("\"round\":1", "\"round\":", 1);
        std::fs::write(&path, text).unwrap();
        let err = Chain::open(&path).err().unwrap().to_string();
        assert!(err.contains("chain.jsonl:1: damaged chain record"), "{err}");
    }
}
