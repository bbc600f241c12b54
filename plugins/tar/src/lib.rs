//! Deterministic tar, shared by the host and the steps: the writer sets every field from the entry alone (no host owners,
//! times or user names), so the same files always give the same bytes; the reader takes
//! what image layers and archives contain (ustar, PAX and GNU long names).

use std::io::{self, Read, Write};

/// What a tar entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink(String),
    Hardlink(String),
}

/// The metadata of one entry; the content of a file follows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Relative, `/`-separated, no trailing slash.
    pub path: String,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub mtime: u64,
}

const BLOCK: usize = 512;

/// Writes entries in the order given; callers sort them.
pub struct Writer<W: Write> {
    out: W,
}

impl<W: Write> Writer<W> {
    pub fn new(out: W) -> Self {
        Writer { out }
    }

    /// Writes a header and then exactly `header.size` bytes from `content`.
    pub fn append(&mut self, header: &Header, content: &mut dyn Read) -> io::Result<()> {
        let mut name = header.path.clone();
        if header.kind == Kind::Dir {
            name.push('/');
        }
        let link = match &header.kind {
            Kind::Symlink(t) | Kind::Hardlink(t) => t.as_str(),
            _ => "",
        };
        let (prefix, short) = split_ustar(&name);
        let mut pax = Vec::new();
        if short.is_none() {
            pax_record(&mut pax, "path", &name);
        }
        if link.len() > 100 {
            pax_record(&mut pax, "linkpath", link);
        }
        if header.size > 0o77777777777 {
            pax_record(&mut pax, "size", &header.size.to_string());
        }
        if !pax.is_empty() {
            let pax_header = Header {
                path: "././@PaxHeader".into(),
                kind: Kind::File,
                mode: 0o644,
                uid: 0,
                gid: 0,
                size: pax.len() as u64,
                mtime: header.mtime,
            };
            self.out
                .write_all(&raw_header(&pax_header, "", "././@PaxHeader", "", b'x'))?;
            self.out.write_all(&pax)?;
            self.pad(pax.len() as u64)?;
        }
        let type_flag = match header.kind {
            Kind::File => b'0',
            Kind::Dir => b'5',
            Kind::Symlink(_) => b'2',
            Kind::Hardlink(_) => b'1',
        };
        let short_name = short.unwrap_or_else(|| truncate(&name, 100));
        self.out.write_all(&raw_header(
            header,
            if short.is_some() { prefix } else { "" },
            short_name,
            truncate(link, 100),
            type_flag,
        ))?;
        if header.kind == Kind::File {
            let copied = io::copy(&mut content.take(header.size), &mut self.out)?;
            if copied != header.size {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "`{}` changed while it was read: {copied} of {} bytes",
                        header.path, header.size
                    ),
                ));
            }
            self.pad(header.size)?;
        }
        Ok(())
    }

    /// Ends the archive (two zero blocks) and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0; BLOCK * 2])?;
        Ok(self.out)
    }

    fn pad(&mut self, size: u64) -> io::Result<()> {
        let rest = (BLOCK - (size as usize % BLOCK)) % BLOCK;
        self.out.write_all(&[0; BLOCK][..rest])
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Splits a name into the ustar prefix (≤155) and name (≤100) fields, if it fits.
fn split_ustar(name: &str) -> (&str, Option<&str>) {
    if name.len() <= 100 {
        return ("", Some(name));
    }
    // The split must be at a `/` whose right side fits in 100 bytes.
    let bytes = name.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'/' && i <= 155 && name.len() - i - 1 <= 100 && i > 0 {
            return (&name[..i], Some(&name[i + 1..]));
        }
    }
    ("", None)
}

fn pax_record(out: &mut Vec<u8>, key: &str, value: &str) {
    // The length counts itself, so find the fixed point.
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while len.to_string().len() + body.len() != len {
        len = len.to_string().len() + body.len();
    }
    out.extend_from_slice(format!("{len}{body}").as_bytes());
}

fn raw_header(h: &Header, prefix: &str, name: &str, link: &str, type_flag: u8) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    put(&mut b[0..100], name.as_bytes());
    octal(&mut b[100..108], u64::from(h.mode & 0o7777));
    octal(&mut b[108..116], h.uid);
    octal(&mut b[116..124], h.gid);
    let size = if h.kind == Kind::File { h.size } else { 0 };
    octal(&mut b[124..136], size.min(0o77777777777));
    octal(&mut b[136..148], h.mtime.min(0o77777777777));
    b[148..156].fill(b' ');
    b[156] = type_flag;
    put(&mut b[157..257], link.as_bytes());
    put(&mut b[257..263], b"ustar\0");
    put(&mut b[263..265], b"00");
    put(&mut b[345..500], prefix.as_bytes());
    let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
    octal(&mut b[148..155], u64::from(sum));
    b
}

fn put(field: &mut [u8], value: &[u8]) {
    field[..value.len()].copy_from_slice(value);
}

/// Zero-padded octal with a terminating NUL, as ustar wants.
fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    put(field, &text.as_bytes()[text.len() - digits..]);
}

/// Reads entries one at a time: [`Reader::entry`] gives a header, then [`Reader::content`]
/// reads its bytes (skipped if not read).
pub struct Reader<R: Read> {
    input: R,
    /// Bytes of the current entry's content (and padding) not read yet.
    remaining: u64,
    padding: u64,
}

impl<R: Read> Reader<R> {
    pub fn new(input: R) -> Self {
        Reader {
            input,
            remaining: 0,
            padding: 0,
        }
    }

    /// The next entry, or `None` at the end of the archive.
    pub fn entry(&mut self) -> io::Result<Option<Header>> {
        self.skip_rest()?;
        let mut long_name = None;
        let mut long_link = None;
        let mut pax_size = None;
        loop {
            let mut block = [0u8; BLOCK];
            if !read_full(&mut self.input, &mut block)? || block.iter().all(|&b| b == 0) {
                return Ok(None);
            }
            let stored: u64 = parse_octal(&block[148..156]);
            let mut sum: u64 = block.iter().map(|&x| u64::from(x)).sum();
            sum = sum - block[148..156].iter().map(|&x| u64::from(x)).sum::<u64>() + 8 * 32;
            if stored != sum {
                return Err(invalid(
                    "tar header checksum mismatch: not a tar file, or a corrupt one",
                ));
            }
            let size = pax_size
                .take()
                .unwrap_or_else(|| parse_octal(&block[124..136]));
            let type_flag = block[156];
            match type_flag {
                b'x' | b'L' | b'K' => {
                    let mut data = vec![0; size as usize];
                    self.input.read_exact(&mut data)?;
                    self.skip(padding(size))?;
                    if type_flag == b'L' {
                        long_name = Some(c_string(&data));
                    } else if type_flag == b'K' {
                        long_link = Some(c_string(&data));
                    } else {
                        for (key, value) in pax_records(&data) {
                            match key.as_str() {
                                "path" => long_name = Some(value),
                                "linkpath" => long_link = Some(value),
                                "size" => pax_size = value.parse().ok(),
                                _ => {}
                            }
                        }
                    }
                    continue;
                }
                b'g' => {
                    self.skip(size + padding(size))?;
                    continue;
                }
                _ => {}
            }
            let mut path = long_name.take().unwrap_or_else(|| {
                let name = c_string(&block[0..100]);
                let prefix = c_string(&block[345..500]);
                if prefix.is_empty() || &block[257..262] != b"ustar" {
                    name
                } else {
                    format!("{prefix}/{name}")
                }
            });
            let link = long_link
                .take()
                .unwrap_or_else(|| c_string(&block[157..257]));
            let kind = match type_flag {
                b'0' | 0 | b'7' => Kind::File,
                b'5' => Kind::Dir,
                b'2' => Kind::Symlink(link),
                b'1' => Kind::Hardlink(clean(&link)),
                other => {
                    // Devices and FIFOs have no place in an image built here; skip them.
                    self.skip(size + padding(size))?;
                    let _ = other;
                    continue;
                }
            };
            path = clean(&path);
            let data_size = if kind == Kind::File { size } else { 0 };
            self.remaining = data_size;
            self.padding = padding(data_size);
            // Directories and links carry no data even if a size is set.
            if kind != Kind::File && size > 0 {
                self.skip(size + padding(size))?;
            }
            return Ok(Some(Header {
                path,
                kind,
                mode: parse_octal(&block[100..108]) as u32,
                uid: parse_octal(&block[108..116]),
                gid: parse_octal(&block[116..124]),
                size: data_size,
                mtime: parse_octal(&block[136..148]),
            }));
        }
    }

    /// A reader of the current entry's content.
    pub fn content(&mut self) -> impl Read + '_ {
        ContentReader { tar: self }
    }

    fn skip_rest(&mut self) -> io::Result<()> {
        let n = self.remaining + self.padding;
        self.remaining = 0;
        self.padding = 0;
        self.skip(n)
    }

    fn skip(&mut self, n: u64) -> io::Result<()> {
        let copied = io::copy(&mut (&mut self.input).take(n), &mut io::sink())?;
        if copied != n {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the tar archive ends in the middle of an entry",
            ));
        }
        Ok(())
    }
}

struct ContentReader<'a, R: Read> {
    tar: &'a mut Reader<R>,
}

impl<R: Read> Read for ContentReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.tar.remaining == 0 {
            return Ok(0);
        }
        let max = buf.len().min(self.tar.remaining as usize);
        let n = self.tar.input.read(&mut buf[..max])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the tar archive ends in the middle of a file",
            ));
        }
        self.tar.remaining -= n as u64;
        Ok(n)
    }
}

fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = input.read(&mut buf[filled..])?;
        if n == 0 {
            return if filled == 0 {
                Ok(false)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the tar archive ends in the middle of a header",
                ))
            };
        }
        filled += n;
    }
    Ok(true)
}

fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

fn parse_octal(field: &[u8]) -> u64 {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        // GNU base-256 for values that do not fit in octal.
        return field[1..]
            .iter()
            .fold(u64::from(field[0] & 0x7f), |acc, &b| {
                (acc << 8) | u64::from(b)
            });
    }
    let text: String = field
        .iter()
        .take_while(|&&b| b != 0)
        .map(|&b| b as char)
        .collect();
    u64::from_str_radix(text.trim(), 8).unwrap_or(0)
}

fn c_string(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

fn pax_records(data: &[u8]) -> Vec<(String, String)> {
    let mut records = Vec::new();
    let mut rest = data;
    while let Some(space) = rest.iter().position(|&b| b == b' ') {
        let Some(len) = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|l| l.parse::<usize>().ok())
        else {
            break;
        };
        if len > rest.len() || len <= space + 1 {
            break;
        }
        let record = &rest[space + 1..len - 1];
        if let Some(eq) = record.iter().position(|&b| b == b'=') {
            records.push((
                String::from_utf8_lossy(&record[..eq]).into_owned(),
                String::from_utf8_lossy(&record[eq + 1..]).into_owned(),
            ));
        }
        rest = &rest[len..];
    }
    records
}

/// The mode of a file whose mode nobody gave: `0755` when it starts like a program (ELF,
/// Mach-O, PE, `#!`, WebAssembly), else `0644`. WASI does not expose host file modes, and
/// deciding from the content makes an archive the same whichever OS wrote it.
pub fn default_mode(head: &[u8]) -> u32 {
    let program = head.starts_with(b"\x7fELF")
        || head.starts_with(b"#!")
        || head.starts_with(b"MZ")
        || head.starts_with(&[0xcf, 0xfa, 0xed, 0xfe])
        || head.starts_with(&[0xfe, 0xed, 0xfa, 0xcf])
        || head.starts_with(b"\0asm");
    if program { 0o755 } else { 0o644 }
}

/// `./a//b/` → `a/b`.
pub fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: Kind, data: &[u8]) -> (Header, Vec<u8>) {
        (
            Header {
                path: path.into(),
                kind,
                mode: 0o755,
                uid: 1000,
                gid: 1000,
                size: data.len() as u64,
                mtime: 1_700_000_000,
            },
            data.to_vec(),
        )
    }

    #[test]
    fn round_trips_long_names_links_and_contents() {
        let long = format!("{}/file.txt", "d".repeat(200));
        let entries = vec![
            entry("app", Kind::Dir, b""),
            entry("app/bin", Kind::File, b"\x7fELF binary"),
            entry(&long, Kind::File, &[7; 1000]),
            entry("app/link", Kind::Symlink("../etc/x".repeat(20)), b""),
            entry("app/hard", Kind::Hardlink("app/bin".into()), b""),
        ];
        let mut writer = Writer::new(Vec::new());
        for (h, data) in &entries {
            writer.append(h, &mut data.as_slice()).unwrap();
        }
        let bytes = writer.finish().unwrap();
        assert_eq!(bytes.len() % BLOCK, 0);
        let mut reader = Reader::new(bytes.as_slice());
        for (h, data) in &entries {
            let got = reader.entry().unwrap().unwrap();
            assert_eq!(&got, h);
            let mut content = Vec::new();
            reader.content().read_to_end(&mut content).unwrap();
            assert_eq!(&content, data);
        }
        assert!(reader.entry().unwrap().is_none());
    }

    #[test]
    fn a_truncated_archive_is_an_error_not_an_empty_one() {
        let mut writer = Writer::new(Vec::new());
        let (h, data) = entry("a", Kind::File, &[1; 2000]);
        writer.append(&h, &mut data.as_slice()).unwrap();
        let bytes = writer.finish().unwrap();
        let mut reader = Reader::new(&bytes[..1024]);
        reader.entry().unwrap().unwrap();
        let mut sink = Vec::new();
        assert!(reader.content().read_to_end(&mut sink).is_err());
    }
}
