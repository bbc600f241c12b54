//! The cache restores by reflink where the file system can: on btrfs (made on a loop device,
//! as root, with `mkfs.btrfs` from `cargo xtask setup`), a restored file shares the stored
//! blob's blocks, so restoring writes no data, and a job writing to it leaves the blob whole.
#![cfg(target_os = "linux")]

use ferry_engine::files::Blobs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

const MIB: u64 = 1 << 20;

/// A btrfs file system mounted on a temporary folder, unmounted when dropped.
struct Btrfs {
    dir: tempfile::TempDir,
}

impl Btrfs {
    fn new() -> Btrfs {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("fs.img");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(320 * MIB)
            .unwrap();
        let made = Command::new("mkfs.btrfs")
            .arg("-q")
            .arg(&image)
            .output()
            .expect("mkfs.btrfs (btrfs-progs) is installed by `cargo xtask setup`");
        assert!(made.status.success(), "{made:?}");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let mounted = Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&mnt)
            .output()
            .unwrap();
        assert!(
            mounted.status.success(),
            "mounting a loop device needs root, as `cargo xtask test` runs in CI: {mounted:?}"
        );
        Btrfs { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    /// Bytes in use, after everything written reached the disk.
    fn used(&self) -> u64 {
        // SAFETY: sync takes no arguments and cannot fail.
        unsafe { libc::sync() };
        let path = std::ffi::CString::new(self.path().as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: statvfs fills the struct it is given; `path` is a valid C string.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::statvfs(path.as_ptr(), &mut st) }, 0);
        (st.f_blocks - st.f_bfree) * st.f_frsize
    }
}

impl Drop for Btrfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.path()).status();
    }
}

/// `len` bytes no file system can compress or deduplicate.
fn noise(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn mtime(path: &Path) -> SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

#[test]
fn a_restore_on_btrfs_shares_the_blob_s_blocks_and_copies_on_write() {
    let fs = Btrfs::new();
    let root = fs.path();
    let content = noise(32 * MIB as usize);
    let src = root.join("target.rlib");
    std::fs::write(&src, &content).unwrap();
    let blobs = Blobs::new(root.join("blobs"));

    let before = fs.used();
    let (sha256, size) = blobs.put(&src).unwrap();
    assert_eq!(size, 32 * MIB);
    let then = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    for i in 0..4 {
        blobs
            .get(
                &sha256,
                &root.join(format!("restored-{i}")),
                0o644,
                Some(then),
            )
            .unwrap();
    }
    let grew = fs.used() - before;
    // Copies would take 5 × 32 MiB; clones take metadata only.
    assert!(
        grew < 8 * MIB,
        "storing and restoring 4 times took {} MiB: the data was copied, not reflinked",
        grew / MIB
    );
    for i in 0..4 {
        let restored = root.join(format!("restored-{i}"));
        assert!(std::fs::read(&restored).unwrap() == content);
        assert_eq!(
            mtime(&restored),
            then,
            "cargo's fingerprints need the mtime back"
        );
    }

    // A job writing into what was restored changes its own file only.
    std::fs::write(root.join("restored-0"), b"rebuilt").unwrap();
    blobs
        .get(&sha256, &root.join("again"), 0o644, None)
        .expect("the blob is unchanged and still verifies");
    assert!(std::fs::read(root.join("again")).unwrap() == content);

    // A blob that rotted is refused as with a copy, reflink or not.
    let stored = blobs.path(&sha256).unwrap();
    let mut bad = content.clone();
    bad[12345] ^= 1;
    std::fs::write(&stored, &bad).unwrap();
    let refused = blobs
        .get(&sha256, &root.join("rotten"), 0o644, None)
        .unwrap_err();
    assert!(refused.to_string().contains("is corrupt"), "{refused}");
    assert!(!root.join("rotten").exists());
}
