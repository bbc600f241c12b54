declare module 'ferry:step/archive@0.1.0' {
  /**
   * Every entry under the directory `path` (which follows the rules of a `file` entry),
   * recursively, as `/`-separated paths relative to it with their kinds, in no particular
   * order. Symbolic links are reported, not followed. One call instead of one per
   * directory entry: listing a large build context is the slow part otherwise.
   */
  export function walk(path: string): Array<[string, Kind]>;
  /**
   * Writes `entries` in the order given as a tar (ustar, with PAX records for long names)
   * to `path`, every modification time set to `mtime` (seconds since 1970), gzip-compressed
   * when `gzip`, replacing what was there. `path` follows the rules of a `file` entry and
   * must be writable by the step. The error says which entry or path failed and why.
   */
  export function writeTar(path: string, entries: Array<Entry>, mtime: bigint, gzip: boolean): Written;
  /**
   * What one entry holds.
   */
  export type Content = ContentFile | ContentBytes | ContentDirectory | ContentSymlink | ContentHardlink;
  /**
   * A file the step can read: a path relative to the workspace root, or an absolute
   * path under a granted `permissions.paths` entry. Its size is taken when it is
   * written; a file that changes size meanwhile fails the call.
   */
  export interface ContentFile {
    tag: 'file',
    val: string,
  }
  /**
   * These bytes.
   */
  export interface ContentBytes {
    tag: 'bytes',
    val: Uint8Array,
  }
  /**
   * A directory.
   */
  export interface ContentDirectory {
    tag: 'directory',
  }
  /**
   * A symbolic link to this target, written as is.
   */
  export interface ContentSymlink {
    tag: 'symlink',
    val: string,
  }
  /**
   * A hard link to an earlier entry of the archive, by its name.
   */
  export interface ContentHardlink {
    tag: 'hardlink',
    val: string,
  }
  /**
   * One entry, written with exactly these fields: nothing comes from the host's owners,
   * times or user names.
   */
  export interface Entry {
    /**
     * The path inside the archive: relative, `/`-separated, no `..`.
     */
    name: string,
    content: Content,
    /**
     * Permission bits, e.g. `0o644`. `none` for a file means `0o755` when its content
     * starts like a program (`#!`, ELF, Mach-O, PE, WebAssembly) and `0o644` otherwise
     * (WASI has no file modes, and this does not depend on the host); for a directory
     * `0o755`, for a link `0o777`.
     */
    mode?: number,
    uid: bigint,
    gid: bigint,
  }
  /**
   * What was written.
   */
  export interface Written {
    /**
     * `sha256:<hex>` of the file's bytes.
     */
    digest: string,
    /**
     * The file's size in bytes.
     */
    size: bigint,
    /**
     * `sha256:<hex>` of the tar before compression (equal to `digest` without `gzip`).
     */
    tarDigest: string,
  }
  /**
   * What a path found by `walk` is.
   * # Variants
   * 
   * ## `"file"`
   * 
   * ## `"directory"`
   * 
   * ## `"symlink"`
   * 
   * ## `"other"`
   * 
   * A device, socket or pipe.
   */
  export type Kind = 'file' | 'directory' | 'symlink' | 'other';
}
