//! A directory of static files, read into memory once at start, for the HTTP server.
//!
//! Serving from memory keeps file-system calls off the per-request path, and it closes the usual escapes by
//! construction: only what the walk found under the root can ever be answered, so no request path (`..`, an
//! encoded `%2e%2e`, a symlink) reaches outside it. The snapshot is bounded in files and bytes; a tree over the
//! bound fails at start with a message saying which bound, rather than being served in part.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bounds on what [`StaticFiles::load`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLimits {
    /// Files kept.
    pub max_files: usize,
    /// Bytes of all files together.
    pub max_total_bytes: u64,
    /// Directory depth below the root.
    pub max_depth: usize,
}

impl Default for FileLimits {
    fn default() -> FileLimits {
        FileLimits { max_files: 10_000, max_total_bytes: 256 << 20, max_depth: 16 }
    }
}

/// One file as served: its body and content type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticFile {
    /// The bytes, shared by every response that sends them (no copy per request).
    pub body: Arc<[u8]>,
    /// The `Content-Type` header value, from the file name's extension.
    pub content_type: &'static str,
}

/// The files of a directory tree by URL path (`/index.html`, `/css/site.css`).
#[derive(Clone, PartialEq, Eq)]
pub struct StaticFiles {
    files: HashMap<String, StaticFile>,
    total_bytes: u64,
}

impl fmt::Debug for StaticFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticFiles").field("files", &self.files.len()).field("total_bytes", &self.total_bytes).finish()
    }
}

impl StaticFiles {
    /// Reads every regular file under `root` (symlinks are not followed; hidden names are skipped) within `limits`.
    pub fn load(root: &Path, limits: FileLimits) -> io::Result<StaticFiles> {
        let meta = std::fs::metadata(root)?;
        if !meta.is_dir() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{} is not a directory", root.display())));
        }
        let mut files = StaticFiles { files: HashMap::new(), total_bytes: 0 };
        let mut stack: Vec<(PathBuf, String, usize)> = vec![(root.to_path_buf(), String::new(), 0)];
        while let Some((dir, url, depth)) = stack.pop() {
            for entry in std::fs::read_dir(&dir)? {
                let entry = entry?;
                let Ok(name) = entry.file_name().into_string() else { continue };
                if name.starts_with('.') {
                    continue;
                }
                let kind = entry.file_type()?;
                let child_url = format!("{url}/{name}");
                if kind.is_dir() {
                    if depth + 1 > limits.max_depth {
                        return Err(over(format!("deeper than {} directories", limits.max_depth)));
                    }
                    stack.push((entry.path(), child_url, depth + 1));
                } else if kind.is_file() {
                    if files.files.len() >= limits.max_files {
                        return Err(over(format!("more than {} files", limits.max_files)));
                    }
                    let size = entry.metadata()?.len();
                    if files.total_bytes + size > limits.max_total_bytes {
                        return Err(over(format!("more than {} bytes", limits.max_total_bytes)));
                    }
                    let body: Arc<[u8]> = std::fs::read(entry.path())?.into();
                    files.total_bytes += body.len() as u64;
                    files.files.insert(child_url, StaticFile { body, content_type: content_type(&name) });
                }
            }
        }
        Ok(files)
    }

    /// The file for a request target: the query is ignored, `%XX` escapes decoded, and a path ending in `/` means
    /// its `index.html`. `None` when nothing under the root has that path.
    pub fn get(&self, target: &str) -> Option<&StaticFile> {
        let path = target.split(['?', '#']).next().unwrap_or("");
        let mut path = percent_decode(path)?;
        if path.ends_with('/') {
            path.push_str("index.html");
        }
        self.files.get(&path)
    }

    /// Files held.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// True when the tree had no files.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Bytes held.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }
}

fn over(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("the directory holds {what} — serve a smaller tree"))
}

/// Decodes `%XX` escapes; `None` for a malformed escape or a result that is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn content_type(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "txt" => "text/plain; charset=utf-8",
        "css" => "text/css",
        "js" => "text/javascript",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "ico" => "image/x-icon",
        "pdf" => "application/pdf",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (PathBuf, StaticFiles) {
        let root =
            std::env::temp_dir().join(format!("xtcp-files-{}-{:?}", std::process::id(), std::thread::current().id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
        std::fs::write(root.join("index.html"), b"<h1>home</h1>").unwrap();
        std::fs::write(root.join("sub/a b.txt"), b"spaced").unwrap();
        std::fs::write(root.join("sub/deeper/x.json"), b"{}").unwrap();
        std::fs::write(root.join(".hidden"), b"secret").unwrap();
        let files = StaticFiles::load(&root, FileLimits::default()).unwrap();
        (root, files)
    }

    #[test]
    fn serves_what_is_under_the_root_and_nothing_else() {
        let (root, files) = tree();
        assert_eq!(files.len(), 3);
        assert_eq!(files.total_bytes(), 13 + 6 + 2);
        assert_eq!(&*files.get("/").unwrap().body, b"<h1>home</h1>");
        assert_eq!(files.get("/index.html?x=1").unwrap().content_type, "text/html; charset=utf-8");
        assert_eq!(&*files.get("/sub/a%20b.txt").unwrap().body, b"spaced");
        assert_eq!(files.get("/sub/deeper/x.json").unwrap().content_type, "application/json");
        for escape in ["/../etc/passwd", "/sub/../index.html", "/%2e%2e/etc/passwd", "/.hidden", "/sub", "/%zz", "x"] {
            assert!(files.get(escape).is_none(), "{escape} was served");
        }
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_tree_over_its_bounds_is_refused_at_start() {
        let (root, _) = tree();
        let small = FileLimits { max_files: 2, ..FileLimits::default() };
        let err = StaticFiles::load(&root, small).unwrap_err().to_string();
        assert!(err.contains("more than 2 files"), "{err}");
        let tiny = FileLimits { max_total_bytes: 10, ..FileLimits::default() };
        assert!(StaticFiles::load(&root, tiny).unwrap_err().to_string().contains("more than 10 bytes"));
        let flat = FileLimits { max_depth: 1, ..FileLimits::default() };
        assert!(StaticFiles::load(&root, flat).unwrap_err().to_string().contains("deeper than 1"));
        assert!(StaticFiles::load(&root.join("index.html"), FileLimits::default()).is_err());
        std::fs::remove_dir_all(root).unwrap();
    }
}
