// SPDX-License-Identifier: Apache-2.0
//! Deterministic tar archives written by the host (`ferry:step/archive`): for packing many
//! or large files (an image layer, a release bundle) without passing every byte through the
//! step's memory. The host reads only what the step may read and writes only where it may
//! write.

use crate::Error;

pub use crate::bindings::ferry::step::archive::{Content, Entry, Kind, Written};

/// Writes `entries` in order as a tar to `path` (relative to the workspace, or absolute
/// under a granted path), every time set to `mtime`, gzip-compressed when `gzip`; returns
/// the digest and size of the file and the digest of the uncompressed tar.
pub fn write_tar(path: &str, entries: &[Entry], mtime: u64, gzip: bool) -> Result<Written, Error> {
    crate::bindings::ferry::step::archive::write_tar(path, entries, mtime, gzip)
        .map_err(Error::Failed)
}

/// Every entry under the directory `path`, recursively, relative to it, with its kind, in no
/// particular order; symbolic links are reported, not followed. One host call, however many
/// files.
pub fn walk(path: &str) -> Result<Vec<(String, Kind)>, Error> {
    crate::bindings::ferry::step::archive::walk(path).map_err(Error::Failed)
}
